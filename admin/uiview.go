package admin

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"html/template"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/telemetry"
)

// The status page's charts cover telemetry.TrafficSpan in chartPoints runs of chartStep; its
// figures are those of the last run.
const (
	chartStep   = 5 * time.Second
	chartPoints = int(telemetry.TrafficSpan / chartStep)
	// activityShown is how many activity records the page lists.
	activityShown = 50
)

// statusView is everything the page shows to one principal: what its role lets it read, and
// never a secret.
type statusView struct {
	Assets    string
	Refresh   int // milliseconds between two looks of the page's script
	Principal authn.Principal
	Now       time.Time
	Version   string
	Started   time.Time

	CanServices, CanActivity, CanPrincipals bool

	Services     []serviceView
	Replicas     replicaCount
	Principals   []PrincipalInfo
	Roles        []roleView
	Activity     []authn.Activity
	ActivityErr  bool
	Certificates []Certificate
	Shared       *SharedState
}

// replicaCount counts replicas by state, across services.
type replicaCount struct {
	Total, Healthy, Unhealthy, Ejected, Unchecked int
}

type serviceView struct {
	Name, Auth, Protocol string
	Checked              bool // active health checks are on
	Deployments          []deploymentView
	Available, Total     int // replicas taking requests, and all of them
	Inflight             int
	Keys                 []keyView
	Traffic              trafficView
}

type deploymentView struct {
	Name     string
	Weight   int
	Share    float64 // percent of the weighted traffic
	Queued   int
	Replicas []replicaView
}

type replicaView struct {
	URL, State string
	Inflight   int
}

type keyView struct {
	Slot      string
	ID        string
	CreatedAt time.Time
	LastUsed  *time.Time
}

// trafficView is a service's last five minutes: the figures of the last chartStep, and charts.
type trafficView struct {
	Known                        bool // traffic is recorded
	Rate, ClientRate, ServerRate float64
	P50, P99                     time.Duration
	Requests5m, Server5m         int
	TokensKnown                  bool  // a language-model service with calls: Tokens is shown
	Tokens                       int64 // input and output tokens in the last minute
	RateChart, LatencyChart      chartView
	ErrorChart                   chartView
}

type roleView struct {
	Name        string
	Permissions string
	Builtin     bool
}

// statusView gathers what p may see, as of now.
func (s *Server) statusView(ctx context.Context, p authn.Principal, now time.Time) statusView {
	cfg := s.cfg.Load()
	v := statusView{
		Assets: uiAssetVersion, Refresh: int(uiRefresh / time.Millisecond),
		Principal: p, Now: now, Version: s.status.Version, Started: s.status.Started,
		CanServices:   p.Can(authn.ServicesRead),
		CanActivity:   p.Can(authn.ActivityRead),
		CanPrincipals: p.Can(authn.PrincipalsManage),
	}
	if s.status.SharedState != nil {
		st := s.status.SharedState()
		v.Shared = &st
	}
	if v.CanServices {
		for _, svc := range cfg.Services {
			sv := s.serviceView(svc, now)
			v.Services = append(v.Services, sv)
			for _, d := range sv.Deployments {
				for _, r := range d.Replicas {
					v.Replicas.Total++
					switch r.State {
					case "healthy":
						v.Replicas.Healthy++
					case "unhealthy":
						v.Replicas.Unhealthy++
					case "ejected":
						v.Replicas.Ejected++
					default:
						v.Replicas.Unchecked++
					}
				}
			}
		}
		if s.status.Certificates != nil {
			v.Certificates = s.status.Certificates()
			slices.SortFunc(v.Certificates, func(a, b Certificate) int { return a.NotAfter.Compare(b.NotAfter) })
		}
	}
	if v.CanPrincipals {
		for _, pr := range s.principals.List() {
			v.Principals = append(v.Principals, PrincipalInfo{Name: pr.Name, Role: pr.Role, CreatedAt: pr.CreatedAt})
		}
		slices.SortFunc(v.Principals, func(a, b PrincipalInfo) int { return strings.Compare(a.Name, b.Name) })
		v.Roles = rolesOf(cfg)
	}
	if v.CanActivity {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		recs, err := s.activity.List(actx, activityShown)
		cancel()
		if err != nil {
			s.log.Warn("reading the activity log for the status page", "err", err)
			v.ActivityErr = true
		}
		v.Activity = recs
	}
	return v
}

func (s *Server) serviceView(svc config.Service, now time.Time) serviceView {
	sv := serviceView{Name: svc.Name, Auth: svc.Auth, Protocol: cmp.Or(svc.Protocol, "http"), Checked: svc.HealthCheck.Path != ""}
	var infos []UpstreamInfo
	if s.upstreams != nil {
		infos = s.upstreams(svc.Name)
	}
	total := 0
	for _, d := range svc.DeploymentList() {
		total += max(d.Weight, 0)
	}
	for _, d := range svc.DeploymentList() {
		dv := deploymentView{Name: d.Name, Weight: d.Weight}
		if total > 0 {
			dv.Share = 100 * float64(max(d.Weight, 0)) / float64(total)
		}
		for _, u := range d.Upstreams {
			rv := replicaView{URL: u, State: "unknown"}
			for _, in := range infos {
				if in.Deployment == d.Name && in.URL == u {
					rv.State, rv.Inflight, dv.Queued = in.Health, in.Inflight, in.Queued
					break
				}
			}
			if rv.State == "healthy" && !sv.Checked {
				rv.State = "unchecked" // never probed: healthy only as far as the gateway can tell
			}
			sv.Total++
			if rv.State == "healthy" || rv.State == "unchecked" {
				sv.Available++
			}
			sv.Inflight += rv.Inflight
			dv.Replicas = append(dv.Replicas, rv)
		}
		sv.Deployments = append(sv.Deployments, dv)
	}
	if svc.Auth == config.AuthKey && s.keys != nil {
		keys := s.keys.Keys(svc.Name)
		for _, slot := range []string{authn.SlotPrimary, authn.SlotSecondary} {
			kv := keyView{Slot: slot}
			if m, ok := keys[slot]; ok {
				kv.ID, kv.CreatedAt, kv.LastUsed = m.ID, m.CreatedAt, m.LastUsedAt
			}
			sv.Keys = append(sv.Keys, kv)
		}
	}
	if s.status.Traffic != nil {
		sv.Traffic = trafficOf(svc.Name, s.status.Traffic(svc.Name, now, chartStep, chartPoints))
		if s.status.Tokens != nil {
			sv.Traffic.Tokens, sv.Traffic.TokensKnown = s.status.Tokens(svc.Name, now)
		}
	}
	return sv
}

// trafficOf turns the points of a service's last five minutes into figures and charts.
func trafficOf(name string, pts []telemetry.TrafficPoint) trafficView {
	tv := trafficView{Known: true}
	if len(pts) == 0 {
		return tv
	}
	step := chartStep.Seconds()
	rate := make([]float64, len(pts))
	p50 := make([]float64, len(pts))
	p99 := make([]float64, len(pts))
	client := make([]float64, len(pts))
	server := make([]float64, len(pts))
	for i, p := range pts {
		rate[i] = float64(p.Requests) / step
		p50[i] = float64(p.P50) / float64(time.Millisecond)
		p99[i] = float64(p.P99) / float64(time.Millisecond)
		client[i] = float64(p.ClientErrors) / step
		server[i] = float64(p.ServerErrors) / step
		tv.Requests5m += p.Requests
		tv.Server5m += p.ServerErrors
	}
	last := pts[len(pts)-1]
	tv.Rate, tv.ClientRate, tv.ServerRate = rate[len(pts)-1], client[len(pts)-1], server[len(pts)-1]
	tv.P50, tv.P99 = last.P50, last.P99
	tv.RateChart = chart(name+": requests per second over the last 5 minutes", "/s",
		[]chartSeries{{"requests", "rate", rate}})
	tv.LatencyChart = chart(name+": p50 and p99 latency over the last 5 minutes", " ms",
		[]chartSeries{{"p50", "p50", p50}, {"p99", "p99", p99}})
	tv.ErrorChart = chart(name+": 4xx and 5xx answers per second over the last 5 minutes", "/s",
		[]chartSeries{{"4xx", "c4xx", client}, {"5xx", "c5xx", server}})
	return tv
}

// rolesOf lists the built-in roles, then the custom ones, with their permissions.
func rolesOf(cfg *config.Config) []roleView {
	var out []roleView
	for _, name := range []string{"owner", "contributor", "reader"} {
		perms := config.BuiltinRoles[name]
		out = append(out, roleView{Name: name, Permissions: strings.Join(perms, ", "), Builtin: true})
	}
	for _, r := range cfg.Roles {
		out = append(out, roleView{Name: r.Name, Permissions: strings.Join(r.Permissions, ", ")})
	}
	// Any other built-in role (none today) goes last, in name order.
	for _, name := range slices.Sorted(maps.Keys(config.BuiltinRoles)) {
		if !slices.ContainsFunc(out, func(r roleView) bool { return r.Name == name }) {
			out = append(out, roleView{Name: name, Permissions: strings.Join(config.BuiltinRoles[name], ", "), Builtin: true})
		}
	}
	return out
}

// pageView is the whole page: the view and its blocks, rendered.
type pageView struct {
	statusView
	Blocks []pageBlock
}

// pageBlock is a part of the page that the script replaces on its own when it changes.
type pageBlock struct {
	ID      string
	Section string // the section it belongs to: "overview", "services" or "" (a section itself)
	HTML    template.HTML
}

// renderBlocks renders the page's blocks in order: the overview, one per service, then the
// principals, the activity log and the certificates where the principal may read them.
func (s *Server) renderBlocks(v statusView) ([]pageBlock, error) {
	var out []pageBlock
	add := func(id, section, tmpl string, data any) error {
		var buf bytes.Buffer
		if err := uiTemplates.ExecuteTemplate(&buf, tmpl, data); err != nil {
			return fmt.Errorf("block %s: %w", id, err)
		}
		out = append(out, pageBlock{ID: id, Section: section, HTML: template.HTML(buf.String())})
		return nil
	}
	if err := add("overview", "overview", "overview", v); err != nil {
		return nil, err
	}
	if v.CanServices {
		for _, sv := range v.Services {
			if err := add("svc-"+sv.Name, "services", "service", serviceBlock{serviceView: sv, Now: v.Now}); err != nil {
				return nil, err
			}
		}
		if len(v.Certificates) > 0 {
			if err := add("certificates", "", "certificates", v); err != nil {
				return nil, err
			}
		}
	}
	if v.CanPrincipals {
		if err := add("principals", "", "principals", v); err != nil {
			return nil, err
		}
	}
	if v.CanActivity {
		if err := add("activity", "", "activity", v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// serviceBlock is a service with the time the page is made at, for the keys' ages.
type serviceBlock struct {
	serviceView
	Now time.Time
}

// uiFuncs format values for the page.
var uiFuncs = template.FuncMap{
	"when":    when,
	"at":      at,
	"span":    span,
	"dur":     dur,
	"latency": latency,
	"rate":    rate,
	"pct":     func(f float64) string { return fmt.Sprintf("%.0f%%", f) },
	"days": func(now, t time.Time) int {
		return int(t.Sub(now).Hours() / 24)
	},
	"blocks": func(bs []pageBlock, section string) []pageBlock {
		var out []pageBlock
		for _, b := range bs {
			if b.Section == section {
				out = append(out, b)
			}
		}
		return out
	},
	"resultClass": func(result string) string {
		switch result {
		case authn.ResultSuccess:
			return "healthy"
		case authn.ResultUnknown:
			return "ejected"
		}
		return "unhealthy"
	},
	"stateGlyph": func(state string) string {
		switch state {
		case "healthy":
			return "●"
		case "unhealthy":
			return "✕"
		case "ejected":
			return "◐"
		}
		return "○"
	},
}

// when shows a moment in UTC and how long before now it was; the page's script shows it in the
// viewer's time zone instead.
func when(now, t time.Time) template.HTML {
	return template.HTML(`<time datetime="` + htmlTime(t) + `" data-when>` + t.UTC().Format("2006-01-02 15:04:05 UTC") +
		` <span class="dim">(` + ago(now.Sub(t)) + `)</span></time>`)
}

// at shows a moment in UTC; the page's script shows it in the viewer's time zone instead.
func at(t time.Time) template.HTML {
	return template.HTML(`<time datetime="` + htmlTime(t) + `" data-when="plain">` +
		t.UTC().Format("2006-01-02 15:04:05 UTC") + `</time>`)
}

// htmlTime is t as an HTML global date and time (UTC, to the millisecond).
func htmlTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// dur shows a short duration: "850 ms", "2.1 s", "3 min".
func dur(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return span(d)
}

// ago says how long ago d was, roughly: "12 s ago", "5 min ago", "3 h ago", "2 d ago".
func ago(d time.Duration) string {
	if d < 0 {
		return "in " + span(-d)
	}
	if d < time.Second {
		return "just now"
	}
	return span(d) + " ago"
}

// span says a duration roughly, in its largest unit or two.
func span(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 48*time.Hour:
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%d h", h)
		}
		return fmt.Sprintf("%d h %d min", h, m)
	}
	return fmt.Sprintf("%d d", int(d/(24*time.Hour)))
}

// latency shows a request duration, "–" when there was none.
func latency(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// rate shows a rate per second.
func rate(f float64) string {
	switch {
	case f == 0:
		return "0"
	case f < 10:
		return fmt.Sprintf("%.1f", f)
	}
	return fmt.Sprintf("%.0f", f)
}
