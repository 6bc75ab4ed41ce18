package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
	"github.com/scoregate/scoregate/telemetry"
)

// uiEnv is an admin listener with the status page, over a real embedded store.
type uiEnv struct {
	s          *Server
	hs         *httptest.Server
	keys       *authn.Keyring
	principals *authn.Principals
	activity   *authn.ActivityLog
}

func newUIEnv(t *testing.T, tls bool, change ...func(*config.Config, *Deps)) *uiEnv {
	t.Helper()
	cfg := &config.Config{
		AdminAuthFailureLimit: config.AuthFailureLimit{Failures: 3, Window: time.Minute},
		Roles: []config.Role{
			{Name: "auditor", Permissions: []string{config.PermActivityRead}},
			{Name: "watcher", Permissions: []string{config.PermServicesRead}},
		},
		Services: []config.Service{
			{Name: "iris", Auth: config.AuthKey, Upstreams: []string{"http://127.0.0.1:5001"}},
			{Name: "fraud", Auth: config.AuthToken, Deployments: []config.Deployment{
				{Name: "blue", Weight: 90, Upstreams: []string{"http://127.0.0.1:5002"}},
				{Name: "green", Weight: 10, Upstreams: []string{"http://127.0.0.1:5003"}},
			}},
		},
	}
	cfg.ApplyDefaults()
	d := Deps{AuthFailures: ratelimit.NewLocalFailures(),
		Status: Status{Version: "v9.9.9-test", Started: time.Now().Add(-90 * time.Minute)}}
	for _, c := range change {
		c(cfg, &d)
	}
	keys, principals, activity, tokens := newAuthn(t, cfg)
	d.Keys, d.Principals, d.Tokens, d.Activity = keys, principals, tokens, activity
	s := New(cfg, d)
	var hs *httptest.Server
	if tls {
		hs = httptest.NewTLSServer(s.Handler())
	} else {
		hs = httptest.NewServer(s.Handler())
	}
	t.Cleanup(hs.Close)
	return &uiEnv{s: s, hs: hs, keys: keys, principals: principals, activity: activity}
}

// browser is a client that keeps cookies and does not follow redirects, as a page's user would
// see them one by one.
func (e *uiEnv) browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := *e.hs.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

type uiAnswer struct {
	status int
	header http.Header
	body   string
}

func (e *uiEnv) get(t *testing.T, c *http.Client, path string) uiAnswer {
	t.Helper()
	resp, err := c.Get(e.hs.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return uiAnswer{resp.StatusCode, resp.Header, string(b)}
}

func (e *uiEnv) post(t *testing.T, c *http.Client, path string, form url.Values) uiAnswer {
	t.Helper()
	resp, err := c.PostForm(e.hs.URL+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return uiAnswer{resp.StatusCode, resp.Header, string(b)}
}

func (e *uiEnv) login(t *testing.T, c *http.Client, key string) uiAnswer {
	t.Helper()
	return e.post(t, c, "/ui/login", url.Values{"key": {key}})
}

func TestStatusPageSignInAndOut(t *testing.T) {
	e := newUIEnv(t, false)
	readerKey := e.create(t, "rita", "reader")
	c := e.browser(t)

	if a := e.get(t, c, "/ui"); a.status != http.StatusMovedPermanently || a.header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %d %s", a.status, a.header.Get("Location"))
	}
	if a := e.get(t, c, "/ui/"); a.status != http.StatusSeeOther || a.header.Get("Location") != "/ui/login" {
		t.Fatalf("the page without a session: %d to %q, want 303 to the login form", a.status, a.header.Get("Location"))
	}
	form := e.get(t, c, "/ui/login")
	if form.status != 200 || !strings.Contains(form.body, `name="key" type="password"`) ||
		form.header.Get("Content-Security-Policy") != uiCSP || strings.Contains(form.body, "<script>") {
		t.Fatalf("the login form: %d %q\n%s", form.status, form.header.Get("Content-Security-Policy"), form.body)
	}

	wrong := e.login(t, c, "sgp_wrong-key-0123456789abcdefghijklmnop")
	if wrong.status != http.StatusSeeOther || wrong.header.Get("Location") != "/ui/login?error=invalid" || wrong.header.Get("Set-Cookie") != "" {
		t.Fatalf("a wrong key: %d to %q, cookie %q", wrong.status, wrong.header.Get("Location"), wrong.header.Get("Set-Cookie"))
	}
	if a := e.get(t, c, "/ui/login?error=invalid"); !strings.Contains(a.body, `role="alert"`) || !strings.Contains(a.body, "not valid") {
		t.Errorf("the form after a wrong key says no error:\n%s", a.body)
	}
	recs, _ := e.activity.List(context.Background(), 1)
	if len(recs) != 1 || recs[0].Operation != OpUILogin || recs[0].Initiator != "127.0.0.1" || recs[0].Result != authn.ResultDenied {
		t.Errorf("the wrong key's activity record: %+v", recs)
	}
	if a := e.login(t, c, ""); a.header.Get("Location") != "/ui/login?error=empty" {
		t.Errorf("no key: to %q", a.header.Get("Location"))
	}

	good := e.login(t, c, readerKey)
	if good.status != http.StatusSeeOther || good.header.Get("Location") != "/ui/" {
		t.Fatalf("the reader's key: %d to %q", good.status, good.header.Get("Location"))
	}
	cookie := good.header.Get("Set-Cookie")
	for _, want := range []string{"scoregate_ui=", "Path=/ui/", "Max-Age=28800", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("the session cookie %q lacks %s", cookie, want)
		}
	}
	if strings.Contains(cookie, "Secure") {
		t.Errorf("the session cookie is Secure over plain HTTP: %q", cookie)
	}
	page := e.get(t, c, "/ui/")
	if page.status != 200 || !strings.Contains(page.body, `id="svc-iris"`) || !strings.Contains(page.body, `id="svc-fraud"`) ||
		!strings.Contains(page.body, "v9.9.9-test") || !strings.Contains(page.body, "1 h 30 min") {
		t.Fatalf("the page: %d\n%s", page.status, page.body)
	}
	// Times are HTML dates (UTC, to the millisecond) for the script to show in local time.
	if times := regexp.MustCompile(`<time datetime="([^"]*)"`).FindAllStringSubmatch(page.body, -1); len(times) == 0 {
		t.Error("the page has no time")
	} else {
		for _, m := range times {
			if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(m[1]) {
				t.Errorf("a time's datetime is %q", m[1])
			}
		}
	}
	if a := e.get(t, c, "/ui/login"); a.status != http.StatusSeeOther || a.header.Get("Location") != "/ui/" {
		t.Errorf("the login form with a session: %d to %q", a.status, a.header.Get("Location"))
	}
	live := e.get(t, c, "/ui/live")
	var la liveAnswer
	if live.status != 200 || json.Unmarshal([]byte(live.body), &la) != nil || len(la.Blocks) != 4 || la.Blocks[1].ID != "svc-iris" {
		t.Fatalf("the live blocks: %d %s", live.status, live.body)
	}

	if a := e.post(t, c, "/ui/logout", nil); a.status != http.StatusSeeOther || !strings.Contains(a.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("signing out: %d %q", a.status, a.header.Get("Set-Cookie"))
	}
	// The session is over on the server, also for a copy of the cookie kept elsewhere.
	stolen := e.browser(t)
	u, _ := url.Parse(e.hs.URL + "/ui/")
	stolen.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: strings.TrimPrefix(strings.Split(cookie, ";")[0], "scoregate_ui=")}})
	if a := e.get(t, stolen, "/ui/live"); a.status != http.StatusUnauthorized {
		t.Errorf("the session's cookie after signing out: %d", a.status)
	}
	recs, _ = e.activity.List(context.Background(), 2)
	if len(recs) != 2 || recs[0].Operation != OpUILogout || recs[1].Operation != OpUILogin || recs[1].Initiator != "rita" || recs[1].Result != authn.ResultSuccess {
		t.Errorf("the activity of signing in and out: %+v", recs)
	}
}

func (e *uiEnv) create(t *testing.T, name, role string) string {
	t.Helper()
	_, key, err := e.principals.Create(context.Background(), name, role)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// A form of another site posting a key is refused before the key is looked at.
func TestStatusPageRefusesCrossSiteForms(t *testing.T) {
	e := newUIEnv(t, false)
	for _, h := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}} {
		req, _ := http.NewRequest("POST", e.hs.URL+"/ui/login", strings.NewReader(url.Values{"key": {ownerKey}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := e.browser(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("a cross-site sign-in with %v: %d, cookie %q", h, resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
	}
}

// The session cookie is Secure when the browser reached the page over TLS: the listener's own,
// or a trusted proxy's that says so.
func TestStatusPageCookieIsSecureUnderTLS(t *testing.T) {
	e := newUIEnv(t, true)
	a := e.login(t, e.browser(t), ownerKey)
	if a.status != http.StatusSeeOther || !strings.Contains(a.header.Get("Set-Cookie"), "; Secure") {
		t.Fatalf("signing in over TLS: %d, cookie %q", a.status, a.header.Get("Set-Cookie"))
	}
	for _, tc := range []struct {
		name    string
		trusted []string
		secure  bool
	}{
		{"a trusted proxy says https", []string{"127.0.0.1/32"}, true},
		{"an untrusted peer says https", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newUIEnv(t, false, func(c *config.Config, _ *Deps) { c.Server.TrustedProxies = tc.trusted })
			req, _ := http.NewRequest("POST", e.hs.URL+"/ui/login", strings.NewReader(url.Values{"key": {ownerKey}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Forwarded-Proto", "https")
			resp, err := e.browser(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			cookie := resp.Header.Get("Set-Cookie")
			if cookie == "" || strings.Contains(cookie, "; Secure") != tc.secure {
				t.Errorf("cookie %q, want Secure: %v", cookie, tc.secure)
			}
		})
	}
}

// Wrong keys on the form count with those sent to the admin API, per client address: past
// admin_auth_failure_limit no key is checked, a good one included, until the window ends.
func TestStatusPageWrongKeysCountTowardsTheLimit(t *testing.T) {
	e := newUIEnv(t, false)
	c := e.browser(t)
	if status, _ := callJSON(t, e.hs, "GET", "/v1/services", "sgp_wrong-key-by-the-api-0123456789abcdefgh", ""); status != 401 {
		t.Fatalf("a wrong key on the API: %d", status)
	}
	for i := range 2 {
		if a := e.login(t, c, "sgp_wrong-key-0123456789abcdefghijklmnop"); a.header.Get("Location") != "/ui/login?error=invalid" {
			t.Fatalf("wrong key %d: to %q", i+2, a.header.Get("Location"))
		}
	}
	a := e.login(t, c, "sgp_wrong-key-0123456789abcdefghijklmnop") // the 4th: past the limit of 3
	if a.header.Get("Location") != "/ui/login" {
		t.Fatalf("the wrong key past the limit: to %q", a.header.Get("Location"))
	}
	form := e.get(t, c, "/ui/login")
	if !strings.Contains(form.body, "Too many wrong keys") || form.header.Get("Retry-After") == "" {
		t.Errorf("the form while blocked: %q\n%s", form.header.Get("Retry-After"), form.body)
	}
	if a := e.login(t, c, ownerKey); a.header.Get("Location") != "/ui/login" || a.header.Get("Set-Cookie") != "" {
		t.Errorf("the Owner key while blocked: to %q, cookie %q", a.header.Get("Location"), a.header.Get("Set-Cookie"))
	}
	if status, _ := callJSON(t, e.hs, "GET", "/v1/services", ownerKey, ""); status != http.StatusTooManyRequests {
		t.Errorf("the admin API after the form's wrong keys: %d, want 429", status)
	}
}

// What the page shows follows the role: services with services:read, the activity log with
// activity:read, principals with principals:manage; and a session ends with its principal.
func TestStatusPageFollowsTheRole(t *testing.T) {
	e := newUIEnv(t, false)
	primary, _ := e.keys.Regenerate(context.Background(), "iris", authn.SlotPrimary)
	cases := []struct {
		role                                  string
		key                                   string
		services, activity, principals, roles bool
	}{
		{"owner", ownerKey, true, true, true, true},
		{"reader", e.create(t, "rita", "reader"), true, true, false, false},
		{"auditor", e.create(t, "audrey", "auditor"), false, true, false, false},
		{"watcher", e.create(t, "walt", "watcher"), true, false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.role, func(t *testing.T) {
			c := e.browser(t)
			if a := e.login(t, c, tc.key); a.header.Get("Location") != "/ui/" {
				t.Fatalf("signing in: to %q", a.header.Get("Location"))
			}
			page := e.get(t, c, "/ui/")
			for _, part := range []struct {
				what, marker string
				want         bool
			}{
				{"services", `id="svc-iris"`, tc.services},
				{"the keys' metadata", "<th scope=\"col\">Last used</th>", tc.services},
				{"deployments and weights", "weight 90 (90%)", tc.services},
				{"the activity log", `id="activity"`, tc.activity},
				{"principals", `id="principals"`, tc.principals},
				{"roles", "principals:manage", tc.roles},
			} {
				if got := strings.Contains(page.body, part.marker); got != part.want {
					t.Errorf("%s shown: %v, want %v", part.what, got, part.want)
				}
			}
			for name, secret := range map[string]string{"the Owner key": ownerKey, "a principal's key": tc.key, "a service key": primary} {
				if strings.Contains(page.body, secret) {
					t.Errorf("the page shows %s", name)
				}
			}
			if !tc.services && !strings.Contains(page.body, "does not allow reading services") {
				t.Error("the page does not say why the services are missing")
			}
		})
	}

	// Deleting the principal ends its session at once; one made again under its name does not
	// inherit it.
	c := e.browser(t)
	e.login(t, c, cases[1].key)
	if a := e.get(t, c, "/ui/live"); a.status != 200 {
		t.Fatalf("before the deletion: %d", a.status)
	}
	if err := e.principals.Delete(context.Background(), "rita"); err != nil {
		t.Fatal(err)
	}
	e.create(t, "rita", "reader")
	if a := e.get(t, c, "/ui/live"); a.status != http.StatusUnauthorized {
		t.Errorf("the live figures after the principal was deleted: %d, want 401", a.status)
	}
	if a := e.get(t, c, "/ui/"); a.status != http.StatusSeeOther || a.header.Get("Location") != "/ui/login" {
		t.Errorf("the page after the principal was deleted: %d to %q", a.status, a.header.Get("Location"))
	}
}

func TestStatusPageAssets(t *testing.T) {
	e := newUIEnv(t, false)
	c := e.browser(t)
	for name, ctype := range map[string]string{"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"} {
		a := e.get(t, c, "/ui/assets/"+name+"?v="+uiAssetVersion)
		if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), ctype) ||
			a.header.Get("Content-Security-Policy") != uiCSP || !strings.Contains(a.header.Get("Cache-Control"), "immutable") {
			t.Errorf("%s: %d %q %q", name, a.status, a.header.Get("Content-Type"), a.header.Get("Cache-Control"))
		}
	}
	if a := e.get(t, c, "/ui/assets/nothing.js"); a.status != 404 {
		t.Errorf("an unknown asset: %d", a.status)
	}
	// Everything the page loads is small.
	total := 0
	for _, a := range uiAssets {
		total += len(a.body)
	}
	if total > 40<<10 {
		t.Errorf("the assets weigh %d bytes", total)
	}
}

func TestUISessionsExpireAndAreBounded(t *testing.T) {
	s := newUISessions()
	now := time.Now()
	id := s.open(authn.Principal{Name: "rita"}, now)
	if _, ok := s.get(id, now.Add(sessionLifetime-time.Second)); !ok {
		t.Fatal("a session before its end is not open")
	}
	if _, ok := s.get(id, now.Add(sessionLifetime)); ok {
		t.Fatal("a session is open at its end")
	}
	if _, ok := s.get(id, now); ok {
		t.Fatal("an expired session came back")
	}
	first := s.open(authn.Principal{Name: "first"}, now)
	for i := range maxSessions {
		s.open(authn.Principal{Name: "p"}, now.Add(time.Duration(i+1)*time.Millisecond))
	}
	if _, ok := s.get(first, now); ok {
		t.Error("the oldest session survived past maxSessions")
	}
	if len(s.m) != maxSessions {
		t.Errorf("%d sessions kept, want %d", len(s.m), maxSessions)
	}
}

func TestChart(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{{0, 1}, {0.3, 0.5}, {1, 1}, {1.2, 2}, {2.2, 2.5}, {190, 200}, {201, 250}, {700, 1000}} {
		if got := niceCeil(c.in); got != c.want {
			t.Errorf("niceCeil(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	for in, want := range map[float64]string{0: "0", 0.25: "0.25", 2.5: "2.5", 20: "20", 12.54: "12.5", 250: "250", 1234.6: "1235"} {
		if got := num(in); got != want {
			t.Errorf("num(%v) = %q, want %q", in, got, want)
		}
	}
	ch := chart(`iris <&> requests`, "/s", []chartSeries{{"requests", "rate", []float64{0, 100, 200}}})
	svg := string(ch.SVG)
	for _, want := range []string{`<title>iris &lt;&amp;&gt; requests; requests now 200/s; highest 200/s</title>`,
		`points="0.0,59.0 150.0,30.0 300.0,1.0"`, `role="img"`} {
		if !strings.Contains(svg, want) {
			t.Errorf("the chart lacks %s:\n%s", want, svg)
		}
	}
	if ch.Scale != "200/s" || strings.Contains(svg, "style=") || strings.Contains(svg, "<script") {
		t.Errorf("scale %q, or a style or script in the chart:\n%s", ch.Scale, svg)
	}
}

// The overview and the certificates, from what the rest of the gateway reports: replica states,
// the shared state, the certificates' expiry.
func TestStatusPageShowsStatesAndCertificates(t *testing.T) {
	now := time.Now()
	e := newUIEnv(t, false, func(c *config.Config, d *Deps) {
		c.Services[0].HealthCheck.Path = "/health"
		d.Upstreams = func(service string) []UpstreamInfo {
			switch service {
			case "iris":
				return []UpstreamInfo{{URL: "http://127.0.0.1:5001", Deployment: "default", Health: "unhealthy", Inflight: 3, Queued: 7}}
			}
			return []UpstreamInfo{
				{URL: "http://127.0.0.1:5002", Deployment: "blue", Health: "healthy", Inflight: 1},
				{URL: "http://127.0.0.1:5003", Deployment: "green", Health: "ejected"},
			}
		}
		d.Status.Certificates = func() []Certificate {
			return []Certificate{
				{Name: "scoring.example.com", Source: "acme", NotAfter: now.Add(60 * 24 * time.Hour)},
				{Name: "old.example.com", Source: "file", NotAfter: now.Add(-time.Hour)},
				{Name: "soon.example.com", Source: "file", NotAfter: now.Add(5*24*time.Hour + time.Hour)},
			}
		}
		d.Status.SharedState = func() SharedState {
			return SharedState{Reachable: false, Fresh: true, Age: 1500 * time.Millisecond, Bound: 5 * time.Second,
				Problem: "checking the shared state: dial tcp 127.0.0.1:6379: connect: connection refused", RateLimitDegraded: true}
		}
	})
	c := e.browser(t)
	e.login(t, c, ownerKey)
	page := e.get(t, c, "/ui/").body
	for _, want := range []string{
		`data-state="unhealthy"`, // health checks on
		`data-state="unchecked"`, // checks off, and reported healthy: not probed
		`data-state="ejected"`,
		"no replica available", "1 of 2 replicas available",
		"7 queued", "weight 90 (90%)",
		"Redis unreachable", "deciding on the local copy, 1.5 s old (bound 5.0 s)", "rate limits degraded", "connection refused",
		"scoring.example.com", "expired", "5 days left",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, `data-state="healthy"`) {
		t.Error("a replica without health checks is shown healthy")
	}
	if strings.Index(page, "old.example.com") > strings.Index(page, "scoring.example.com") {
		t.Error("the certificates are not listed soonest expiry first")
	}
}

// A language-model service with calls shows its tokens per minute beside its requests; a service
// without shows no such figure (issue 22).
func TestStatusPageShowsTokensPerMinute(t *testing.T) {
	e := newUIEnv(t, false, func(_ *config.Config, d *Deps) {
		d.Status.Traffic = func(string, time.Time, time.Duration, int) []telemetry.TrafficPoint { return nil }
		d.Status.Tokens = func(service string, _ time.Time) (int64, bool) {
			if service == "fraud" {
				return 1234, true
			}
			return 0, false
		}
	})
	c := e.browser(t)
	e.login(t, c, ownerKey)
	page := e.get(t, c, "/ui/").body
	fraud, iris := page[strings.Index(page, `id="svc-fraud"`):], page[strings.Index(page, `id="svc-iris"`):]
	fraud, iris = fraud[:strings.Index(fraud, "</article>")], iris[:strings.Index(iris, "</article>")]
	if !strings.Contains(fraud, `<dd data-figure="tokens">1234<small>/min</small></dd>`) || !strings.Contains(fraud, `class="figures with-tokens"`) {
		t.Errorf("the fraud service lacks its tokens per minute:\n%s", fraud)
	}
	if strings.Contains(iris, `data-figure="tokens"`) || !strings.Contains(iris, `data-figure="rate"`) {
		t.Errorf("the iris service shows tokens, or no figures:\n%s", iris)
	}
}
