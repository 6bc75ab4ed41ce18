package main

import (
	"fmt"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotFile is a PNG the report links to.
type plotFile struct {
	name  string // file name inside the results folder
	title string
}

// plot draws the PNGs: throughput per peer and latency percentiles per peer for each profile,
// and the gateway's cost and memory against each sweep axis.
func (r *results) plot(dir string) ([]plotFile, error) {
	var out []plotFile
	save := func(p *plot.Plot, name, title string, w, h vg.Length) error {
		if err := p.Save(w, h, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("plotting %s: %w", name, err)
		}
		out = append(out, plotFile{name: name, title: title})
		return nil
	}
	for _, prof := range r.Settings.Profiles {
		if p := r.throughputPlot(prof); p != nil {
			if err := save(p, "throughput-"+prof+".png", "Closed-loop throughput, "+prof+" profile", 8*vg.Inch, 5*vg.Inch); err != nil {
				return out, err
			}
		}
		for _, share := range r.Settings.OpenShares {
			p, err := r.latencyPlot(prof, share)
			if err != nil {
				return out, err
			}
			if p == nil {
				continue
			}
			name := fmt.Sprintf("latency-%s-%g.png", prof, 100*share)
			if err := saveWithSideLegend(p, 11*vg.Inch, 6*vg.Inch, filepath.Join(dir, name)); err != nil {
				return out, fmt.Errorf("plotting %s: %w", name, err)
			}
			out = append(out, plotFile{name: name, title: fmt.Sprintf("Latency percentiles per peer, %s profile, open loop at %g%%", prof, 100*share)})
		}
	}
	for _, s := range r.Sweeps {
		for _, kind := range []string{"cpu", "memory"} {
			p, err := sweepPlot(s, kind)
			if err != nil {
				return out, err
			}
			if p == nil {
				continue
			}
			name := fmt.Sprintf("%s-%s.png", s.Axis, kind)
			if err := save(p, name, fmt.Sprintf("Gateway %s against %s", map[string]string{"cpu": "CPU per request", "memory": "memory"}[kind], s.Title), 7*vg.Inch, 4.5*vg.Inch); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// throughputPlot is a horizontal bar per peer: median closed-loop requests per second.
func (r *results) throughputPlot(prof string) *plot.Plot {
	rows := r.rowsOf(prof, modeClosed, 0)
	var vals plotter.Values
	var names []string
	for i := len(rows) - 1; i >= 0; i-- { // first peer on top
		if rows[i].Summary.RPS.N == 0 {
			continue
		}
		vals = append(vals, rows[i].Summary.RPS.Median)
		names = append(names, rows[i].Peer)
	}
	if len(vals) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = "Closed-loop throughput, " + prof + " profile (median of the rounds)"
	p.X.Label.Text = "requests/s"
	bars, err := plotter.NewBarChart(vals, vg.Points(14))
	if err != nil {
		return nil
	}
	bars.Horizontal = true
	bars.Color = plotutil.Color(0)
	p.Add(bars)
	p.NominalY(names...)
	return p
}

// latencyPlot draws, per peer, its median p50, p90, p99 and p99.9 on a logarithmic scale.
func (r *results) latencyPlot(prof string, share float64) (*plot.Plot, error) {
	rows := r.rowsOf(prof, modeOpen, share)
	if len(rows) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency, %s profile, open loop at %s r/s", prof, num(float64(rows[0].Rate)))
	p.Y.Label.Text = "ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var args []any
	for _, rw := range rows {
		s := rw.Summary
		if s.P50ms.N == 0 || s.P50ms.Median <= 0 {
			continue
		}
		xys := plotter.XYs{{X: 0, Y: s.P50ms.Median}, {X: 1, Y: s.P90ms.Median}, {X: 2, Y: s.P99ms.Median}, {X: 3, Y: s.P999ms.Median}}
		args = append(args, rw.Peer, xys)
	}
	if len(args) == 0 {
		return nil, nil
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	p.NominalX("p50", "p90", "p99", "p99.9")
	return p, nil
}

// saveWithSideLegend writes p as a PNG with its legend in a strip to the right of the plot, where
// a dozen entries hide no line.
func saveWithSideLegend(p *plot.Plot, w, h vg.Length, path string) error {
	legend := p.Legend
	p.Legend = plot.NewLegend() // nothing inside the plot area
	img := vgimg.New(w, h)
	dc := draw.New(img)
	strip := w / 4
	p.Draw(draw.Crop(dc, 0, -strip, 0, 0))
	legend.Top, legend.Left = true, true
	legend.Draw(draw.Crop(dc, w-strip+vg.Points(8), 0, 0, -vg.Points(24)))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// rangeXYs are points with their min–max over the rounds as error bars.
type rangeXYs struct {
	plotter.XYs
	plotter.YErrors
}

// sweepPlot draws the gateway's CPU per request (median, min–max) or its memory (idle and peak
// RSS) against a sweep's axis, on a logarithmic axis.
func sweepPlot(s *sweepResult, kind string) (*plot.Plot, error) {
	steps := measuredSteps(s)
	if len(steps) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.X.Label.Text = s.Unit + " (log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true // the costs rise to the right, if anywhere
	if kind == "cpu" {
		p.Title.Text = "Gateway CPU per request against " + s.Title
		p.Y.Label.Text = "µs per request"
		var d rangeXYs
		for _, st := range steps {
			c := st.Summary.ProxyCPUus
			d.XYs = append(d.XYs, plotter.XY{X: float64(st.Value), Y: c.Median})
			d.YErrors = append(d.YErrors, struct{ Low, High float64 }{c.Median - c.Min, c.Max - c.Median})
		}
		if err := plotutil.AddLinePoints(p, "median", d.XYs); err != nil {
			return nil, err
		}
		bars, err := plotter.NewYErrorBars(d)
		if err != nil {
			return nil, err
		}
		p.Add(bars)
		p.Y.Min = 0
		return p, nil
	}
	p.Title.Text = "Gateway memory against " + s.Title
	p.Y.Label.Text = "MB resident"
	var started, idle, peak plotter.XYs
	for _, st := range steps {
		started = append(started, plotter.XY{X: float64(st.Value), Y: float64(st.RSSStartKB) / 1024})
		idle = append(idle, plotter.XY{X: float64(st.Value), Y: float64(st.RSSIdleKB) / 1024})
		peak = append(peak, plotter.XY{X: float64(st.Value), Y: float64(st.RSSPeakKB) / 1024})
	}
	if err := plotutil.AddLinePoints(p, "RSS started", started, "RSS idle", idle, "RSS peak", peak); err != nil {
		return nil, err
	}
	p.Y.Min = 0
	return p, nil
}
