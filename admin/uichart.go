package admin

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// chartSeries is one line of a chart: its name, its CSS class (which gives its colour) and its
// values, oldest first, evenly spaced.
type chartSeries struct {
	label, class string
	values       []float64
}

// The charts' drawing area, in SVG user units. The page stretches it to the width of its place
// at a fixed height; the lines keep their width (non-scaling-stroke).
const (
	chartWidth  = 300
	chartHeight = 60
)

// chartView is a drawn chart and the value of its top line, for the caption.
type chartView struct {
	SVG   template.HTML
	Scale string
}

// chart draws series as an inline SVG line chart from zero to a round maximum, titled for screen
// readers with the title, the latest values and the highest. It is plain SVG with presentation
// attributes and classes: no script, no inline style.
func chart(title, unit string, series []chartSeries) chartView {
	top := 0.0
	for _, s := range series {
		for _, v := range s.values {
			top = math.Max(top, v)
		}
	}
	scale := niceCeil(top)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" preserveAspectRatio="none" role="img" focusable="false">`, chartWidth, chartHeight)
	b.WriteString("<title>")
	b.WriteString(template.HTMLEscapeString(title))
	for _, s := range series {
		if n := len(s.values); n > 0 {
			fmt.Fprintf(&b, "; %s now %s%s", template.HTMLEscapeString(s.label), num(s.values[n-1]), template.HTMLEscapeString(unit))
		}
	}
	fmt.Fprintf(&b, "; highest %s%s</title>", num(top), template.HTMLEscapeString(unit))
	fmt.Fprintf(&b, `<line class="grid" x1="0" y1="1" x2="%d" y2="1" vector-effect="non-scaling-stroke"/>`, chartWidth)
	fmt.Fprintf(&b, `<line class="grid" x1="0" y1="%d" x2="%d" y2="%d" vector-effect="non-scaling-stroke"/>`, chartHeight/2, chartWidth, chartHeight/2)
	fmt.Fprintf(&b, `<line class="axis" x1="0" y1="%d" x2="%d" y2="%d" vector-effect="non-scaling-stroke"/>`, chartHeight-1, chartWidth, chartHeight-1)
	for _, s := range series {
		n := len(s.values)
		if n == 0 {
			continue
		}
		fmt.Fprintf(&b, `<polyline class="line %s" fill="none" vector-effect="non-scaling-stroke" points="`, template.HTMLEscapeString(s.class))
		for i, v := range s.values {
			x := 0.0
			if n > 1 {
				x = float64(i) * chartWidth / float64(n-1)
			}
			y := float64(chartHeight-1) - v/scale*float64(chartHeight-2)
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatFloat(x, 'f', 1, 64))
			b.WriteByte(',')
			b.WriteString(strconv.FormatFloat(y, 'f', 1, 64))
		}
		b.WriteString(`"/>`)
	}
	b.WriteString("</svg>")
	return chartView{SVG: template.HTML(b.String()), Scale: num(scale) + unit}
}

// niceCeil is the smallest of 1, 2, 2.5, 5 times a power of ten that is at least v (1 for 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// num shows a chart value with up to three significant digits.
func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	case v >= 10:
		return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
