package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// The status page as its users see it: the real binary on a real Redis with real models on
// sockets, read in headless Chromium.

// requireChromium returns the path of Debian's chromium; without it the test fails under CI and
// is skipped, loudly, elsewhere.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is required under CI; install it (apt-get install -y chromium)")
	}
	t.Skip("SKIPPING: chromium not installed; apt-get install -y chromium")
	return ""
}

// pageModel is a model on a socket that can be stopped and started again on the same address.
// It answers its health path 200 and every other request with status.
type pageModel struct {
	t      *testing.T
	addr   string
	status int
	mu     sync.Mutex
	srv    *http.Server
}

func startPageModel(t *testing.T, status int) *pageModel {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &pageModel{t: t, addr: ln.Addr().String(), status: status}
	m.serve(ln)
	t.Cleanup(m.stop)
	return m
}

func (m *pageModel) url() string { return "http://" + m.addr }

func (m *pageModel) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/health" {
			w.Write([]byte(`{"status": "ready"}`))
			return
		}
		w.WriteHeader(m.status)
		fmt.Fprintf(w, `{"result": [0.1, 0.9], "status": %d}`, m.status)
	})}
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
	go srv.Serve(ln)
}

// stop closes the listener and every connection: the model is gone.
func (m *pageModel) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		m.srv.Close()
		m.srv = nil
	}
}

// restart listens on the same address again.
func (m *pageModel) restart() {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", m.addr); err == nil {
			m.serve(ln)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.t.Fatalf("restarting the model on %s: %v", m.addr, err)
}

// browserLog is what the browser did: every request, every response with its body, every
// console message.
type browserLog struct {
	mu        sync.Mutex
	requests  []string // URLs, in order
	responses map[network.RequestID]*browserResponse
	console   []string               // errors, warnings, exceptions and security messages
	notes     []string               // the other console messages (the browser's own hints)
	bodies    chan network.RequestID // loaded responses whose bodies are still to be read
}

type browserResponse struct {
	url     string
	status  int64
	headers map[string]string
	size    float64 // bytes on the wire
	body    []byte
	bodyErr error
}

func (l *browserLog) listen(ev any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		l.requests = append(l.requests, ev.Request.URL)
	case *network.EventResponseReceived:
		h := map[string]string{}
		for k, v := range ev.Response.Headers {
			h[strings.ToLower(k)] = fmt.Sprint(v)
		}
		l.responses[ev.RequestID] = &browserResponse{url: ev.Response.URL, status: ev.Response.Status, headers: h}
	case *network.EventLoadingFinished:
		if r := l.responses[ev.RequestID]; r != nil {
			r.size = ev.EncodedDataLength
			select {
			case l.bodies <- ev.RequestID:
			default: // the reader is far behind; the check of bodies counts it as unread
			}
		}
	}
}

// readBodies keeps reading the bodies of loaded responses until ctx ends.
func (l *browserLog) readBodies(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-l.bodies:
			res, err := chromedp.Call(ctx, network.GetResponseBody, network.GetResponseBodyParams{RequestID: id})
			l.mu.Lock()
			if r := l.responses[id]; r != nil {
				r.body, r.bodyErr = res.Body, err
			}
			l.mu.Unlock()
		}
	}
}

// watchConsole notes every console message, exception and browser log entry.
func (l *browserLog) watchConsole(ctx context.Context) {
	for m, err := range chromedp.Console(ctx) {
		if err != nil {
			return
		}
		line := fmt.Sprintf("%s (%s %s:%d)", m, m.Source, m.URL, m.Line+1)
		l.mu.Lock()
		switch {
		case m.Type == chromedp.ConsoleError, m.Type == chromedp.ConsoleWarning, m.IsException(),
			m.Source == "security", m.Source == "violation":
			l.console = append(l.console, line)
		default:
			l.notes = append(l.notes, line)
		}
		l.mu.Unlock()
	}
}

func (l *browserLog) consoleLines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.console...)
}

// evaluate runs a JavaScript expression in the page and decodes its value.
func evaluate[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// within polls cond until it holds or d has passed, and returns how long that took.
func within(t *testing.T, d time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, detail := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s (last seen: %s)", what, d, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// figure reads a service's figure from the page ("rate", "p50", "p99", "4xx", "5xx").
func figure(t *testing.T, ctx context.Context, service, name string) (float64, string) {
	t.Helper()
	text := evaluate[string](t, ctx, fmt.Sprintf(
		`(document.querySelector('#svc-%s [data-figure="%s"]') || {textContent: ""}).textContent`, service, name))
	f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(text), "/s"), 64)
	if err != nil {
		return -1, text
	}
	return f, text
}

// replicaState reads the state a replica shows on the page, in words (beside its colour and
// symbol).
func replicaState(t *testing.T, ctx context.Context, service, replicaURL string) string {
	t.Helper()
	text := evaluate[string](t, ctx, fmt.Sprintf(
		`(document.querySelector('#svc-%s tr[data-replica="%s"] [data-state]') || {innerText: "(no such row)"}).innerText`,
		service, replicaURL))
	_, state, _ := strings.Cut(strings.TrimSpace(text), " ") // after the symbol
	return state
}

// paced sends rate requests a second to url for d, each with a fresh goroutine, and returns how
// many were sent and how many answered each status.
func paced(ctx context.Context, client *http.Client, url, cred string, rate int, d time.Duration) (sent int, statuses map[int]int) {
	var mu sync.Mutex
	statuses = map[int]int{}
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		if ctx.Err() != nil {
			break
		}
		sent++
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"data": [[5.1, 3.5, 1.4, 0.2]]}`))
			req.Header.Set("Content-Type", "application/json")
			if cred != "" {
				req.Header.Set("Authorization", "Bearer "+cred)
			}
			code := 0
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			statuses[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return sent, statuses
}

func TestStatusPageInABrowser(t *testing.T) {
	chromium := requireChromium(t)
	const ownerKey = "owner-key-of-the-status-page-test-0123456789"
	const redisPassword = "redis-password-never-on-the-page-42"
	rdb := redistest.Start(t, redistest.WithPassword(redisPassword))

	irisA, irisB := startPageModel(t, 200), startPageModel(t, 200)
	fraud := startPageModel(t, 500)
	blue, green := startPageModel(t, 200), startPageModel(t, 200)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "gateway.yaml")
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
store:
  dir: %q
  redis_url: %q
  staleness_bound: 5s
  resync_interval: 250ms
services:
  - name: iris
    auth: key
    upstreams: [%q, %q]
    health_check:
      path: /health
      interval: 250ms
      timeout: 200ms
      unhealthy_threshold: 1
      healthy_threshold: 1
  - name: fraud
    auth: none
    upstreams: [%q]
  - name: churn
    auth: token
    deployments:
      - name: blue
        weight: 90
        upstreams: [%q]
      - name: green
        weight: 10
        upstreams: [%q]
`, filepath.Join(dir, "data"), rdb.URL(), irisA.url(), irisB.url(), fraud.url(), blue.url(), green.url())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := start(t, []string{"GATEWAY_ADMIN_KEY=" + ownerKey}, "serve", "-config", cfgPath)
	admin := func(method, path, cred, body string, out any) int {
		t.Helper()
		return adminCallAs(t, gw, cred, method, path, body, out)
	}

	// The credentials in use: a reader principal's key, the service's keys, a token.
	var reader struct{ Key string }
	if s := admin("POST", "/v1/principals", ownerKey, `{"name": "ops-reader", "role": "reader"}`, &reader); s != 201 || reader.Key == "" {
		t.Fatalf("creating the reader: %d", s)
	}
	var primary, secondary struct{ Key string }
	admin("POST", "/v1/services/iris/keys/primary/regenerate", ownerKey, "", &primary)
	admin("POST", "/v1/services/iris/keys/secondary/regenerate", ownerKey, "", &secondary)
	var tok struct{ AccessToken string }
	if s := admin("POST", "/v1/services/churn/token", reader.Key, "", &tok); s != 200 || tok.AccessToken == "" {
		t.Fatalf("minting a token: %d", s)
	}
	for _, c := range []struct{ service, cred string }{{"iris", primary.Key}, {"iris", secondary.Key}, {"churn", tok.AccessToken}} {
		if resp, body := score(t, gw.dataURL+"/api/v1/service/"+c.service+"/score", c.cred); resp.StatusCode != 200 {
			t.Fatalf("%s before the page: %d %s", c.service, resp.StatusCode, body)
		}
	}
	secrets := map[string]string{"the Owner key": ownerKey, "the reader's key": reader.Key, "iris's primary key": primary.Key,
		"iris's secondary key": secondary.Key, "the token": tok.AccessToken, "the Redis password": redisPassword}

	// The browser, with every request, response and console message noted.
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.WindowSize(1280, 900))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	blog := &browserLog{responses: map[network.RequestID]*browserResponse{}, bodies: make(chan network.RequestID, 10000)}
	if err := chromedp.Listen(ctx, blog.listen); err != nil {
		t.Fatal(err)
	}
	go blog.readBodies(ctx)
	go blog.watchConsole(ctx)
	// Every Content-Security-Policy violation the page meets, as the page itself sees them.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__violations = []; document.addEventListener("securitypolicyviolation", function (e) {
			window.__violations.push(e.violatedDirective + " " + e.blockedURI); });`,
	}); err != nil {
		t.Fatal(err)
	}
	adminHost := strings.TrimPrefix(gw.adminURL, "http://")
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, tcancel := context.WithTimeout(ctx, 15*time.Second)
		defer tcancel()
		if err := chromedp.Do(tctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	location := func() *url.URL {
		t.Helper()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(loc)
		return u
	}
	sessionCookie := func() string {
		t.Helper()
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{gw.adminURL + "/ui/"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Cookies {
			if c.Name == "scoregate_ui" {
				if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/ui/" {
					t.Errorf("the session cookie is %+v; want HttpOnly, SameSite=Strict, Path=/ui/", c)
				}
				return c.Value
			}
		}
		return ""
	}

	// 1. The page asks for a key; a wrong one stays on the form with an error and no cookie.
	do("opening the page", chromedp.Navigate(gw.adminURL+"/ui/"), chromedp.WaitVisible(chromedp.ID("key")))
	if u := location(); u.Path != "/ui/login" {
		t.Fatalf("without a session the page is %s, want the login form", u)
	}
	if label := evaluate[string](t, ctx, `document.querySelector('label[for="key"]').textContent`); label != "Key" {
		t.Errorf("the key field's label is %q", label)
	}
	do("entering a wrong key", chromedp.SendKeys(chromedp.ID("key"), "sgp_not-a-key-of-anyone-0123456789abcdef"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS(".error")))
	if u := location(); u.Path != "/ui/login" {
		t.Fatalf("after a wrong key the page is %s, want the login form", u)
	}
	if msg := evaluate[string](t, ctx, `document.querySelector(".error").textContent`); !strings.Contains(msg, "not valid") {
		t.Errorf("the error says %q", msg)
	}
	if c := sessionCookie(); c != "" {
		t.Fatal("a wrong key got a session cookie")
	}
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		os.WriteFile(filepath.Join(t.ArtifactDir(), "status-page-login.png"), png, 0o644)
	}
	var recs []struct{ Operation, Initiator, Target, Result string }
	admin("GET", "/v1/activity?limit=5", ownerKey, "", &recs)
	if len(recs) == 0 || recs[0].Operation != "ui.login" || recs[0].Result != "denied" || recs[0].Initiator != "127.0.0.1" {
		t.Errorf("the activity log does not have the wrong key first: %+v", recs)
	}

	// The reader's key opens the page: every service, each replica's state.
	do("signing in", chromedp.SendKeys(chromedp.ID("key"), reader.Key), chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("overview")))
	if u := location(); u.Path != "/ui/" {
		t.Fatalf("after signing in the page is %s", u)
	}
	session := sessionCookie()
	if session == "" {
		t.Fatal("no session cookie after signing in")
	}
	secrets["the session id"] = session
	want := map[string]map[string]string{
		"iris":  {irisA.url(): "healthy", irisB.url(): "healthy"},
		"fraud": {fraud.url(): "unchecked"},
		"churn": {blue.url(): "unchecked", green.url(): "unchecked"},
	}
	for service, replicas := range want {
		for u, state := range replicas {
			within(t, 3*time.Second, service+" "+u+" shows "+state, func() (bool, string) {
				got := replicaState(t, ctx, service, u)
				return got == state, got
			})
		}
	}
	if n := evaluate[int](t, ctx, `document.querySelectorAll("article.service").length`); n != 3 {
		t.Errorf("the page lists %d services, want 3", n)
	}
	if weights := evaluate[string](t, ctx, `document.querySelector('#svc-churn tbody[data-deployment="green"] tr.dep').textContent`); !strings.Contains(weights, "weight 10 (10%)") {
		t.Errorf("churn's green deployment reads %q", weights)
	}
	if evaluate[bool](t, ctx, `!!document.getElementById("principals")`) || !evaluate[bool](t, ctx, `!!document.getElementById("activity")`) {
		t.Error("a reader sees the principals, or does not see the activity log")
	}
	// The keyboard reaches the skip link first.
	do("pressing Tab", chromedp.KeyEvent("\t"))
	if f := evaluate[string](t, ctx, `document.activeElement.className`); f != "skip" {
		t.Errorf("the first Tab focuses %q, want the skip link", f)
	}
	do("leaving the skip link", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))

	// 2. A replica's model stops: the page shows it unhealthy within 3 s without a reload, and
	// healthy again once it is back.
	do("marking the page", chromedp.Evaluate[chromedp.Void](`window.__samePage = true`))
	irisA.stop()
	took := within(t, 3*time.Second, "the stopped replica shows unhealthy", func() (bool, string) {
		got := replicaState(t, ctx, "iris", irisA.url())
		return got == "unhealthy", got
	})
	t.Logf("stopped replica shown unhealthy after %s", took.Round(10*time.Millisecond))
	if got := replicaState(t, ctx, "iris", irisB.url()); got != "healthy" {
		t.Errorf("the other replica shows %q", got)
	}
	irisA.restart()
	took = within(t, 3*time.Second, "the restarted replica shows healthy", func() (bool, string) {
		got := replicaState(t, ctx, "iris", irisA.url())
		return got == "healthy", got
	})
	t.Logf("restarted replica shown healthy after %s", took.Round(10*time.Millisecond))
	if !evaluate[bool](t, ctx, `window.__samePage === true`) {
		t.Fatal("the page was loaded again")
	}

	// 3. 200 requests a second to iris for 10 s: the page shows 200/s within 20% while the load
	// runs; fraud's model answers 500, which shows in fraud's 5xx rate.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 5 * time.Second}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	const loadRate, loadFor = 200, 10 * time.Second
	var irisSent, fraudSent int
	var irisStatuses, fraudStatuses map[int]int
	var load sync.WaitGroup
	loadStart := time.Now()
	load.Go(func() {
		irisSent, irisStatuses = paced(loadCtx, client, gw.dataURL+"/api/v1/service/iris/score", primary.Key, loadRate, loadFor)
	})
	load.Go(func() {
		fraudSent, fraudStatuses = paced(loadCtx, client, gw.dataURL+"/api/v1/service/fraud/score", "", 20, loadFor)
	})
	var readings []string
	var shot atomic.Bool
	for _, at := range []time.Duration{7 * time.Second, 9500 * time.Millisecond} {
		time.Sleep(time.Until(loadStart.Add(at)))
		r, text := figure(t, ctx, "iris", "rate")
		f5, f5text := figure(t, ctx, "fraud", "5xx")
		i5, _ := figure(t, ctx, "iris", "5xx")
		readings = append(readings, fmt.Sprintf("%s: iris %s requests, fraud %s 5xx", at, text, f5text))
		if r < loadRate*0.8 || r > loadRate*1.2 {
			t.Errorf("%s into the load, iris shows %q requests/s; want %d within 20%%", at, text, loadRate)
		}
		if f5 < 10 || f5 > 30 {
			t.Errorf("%s into the load, fraud shows %q 5xx/s; want about 20", at, f5text)
		}
		if i5 != 0 {
			t.Errorf("%s into the load, iris shows %v 5xx/s", at, i5)
		}
		if !shot.Swap(true) { // the screenshots, with the load running
			screenshots(t, ctx, do)
		}
	}
	load.Wait()
	elapsed := time.Since(loadStart)
	t.Logf("page readings under load: %s", strings.Join(readings, "; "))
	t.Logf("load: iris %d sent in %s (%v), fraud %d sent (%v)", irisSent, elapsed.Round(time.Millisecond), irisStatuses, fraudSent, fraudStatuses)
	if irisStatuses[200] < int(float64(loadRate)*loadFor.Seconds()*0.95) {
		t.Fatalf("the load did not run as planned: %v", irisStatuses)
	}
	if fraudStatuses[500] == 0 {
		t.Fatalf("fraud's model did not answer 500: %v", fraudStatuses)
	}

	// 5. Nothing the page showed or loaded holds a key or a token; no CSP violation, no console
	// error; no request left for another host; the page is small.
	html := evaluate[string](t, ctx, `document.documentElement.outerHTML`)
	for name, s := range secrets {
		if strings.Contains(html, s) {
			t.Errorf("the page's DOM holds %s", name)
		}
	}
	time.Sleep(500 * time.Millisecond) // the last bodies are read
	blog.mu.Lock()
	var pageBytes float64
	read := 0
	for _, r := range blog.responses {
		if r.status/100 == 3 {
			continue // a redirect has no body to read
		}
		if r.bodyErr != nil || r.body == nil && r.size > 0 {
			if r.bodyErr != nil || r.status != 200 {
				t.Errorf("the body of %s (%d) could not be read: %v", r.url, r.status, r.bodyErr)
			}
			continue
		}
		read++
		for name, s := range secrets {
			if strings.Contains(string(r.body), s) {
				t.Errorf("the answer of %s holds %s", r.url, name)
			}
			for h, v := range r.headers {
				if h != "set-cookie" && strings.Contains(v, s) {
					t.Errorf("the %s header of %s holds %s", h, r.url, name)
				}
			}
		}
		u, _ := url.Parse(r.url)
		if u.Path == "/ui/" || strings.HasPrefix(u.Path, "/ui/assets/") {
			pageBytes += r.size
		}
		if u.Path != "/ui/live" && u.Path != "/ui/login" && r.headers["content-security-policy"] != "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'" {
			t.Errorf("%s has Content-Security-Policy %q", r.url, r.headers["content-security-policy"])
		}
	}
	requests := append([]string(nil), blog.requests...)
	blog.mu.Unlock()
	if read < 10 {
		t.Errorf("only %d response bodies were read", read)
	}
	for _, r := range requests {
		u, err := url.Parse(r)
		if err != nil || u.Host != adminHost {
			t.Errorf("the browser requested %s, not on the admin listener", r)
		}
	}
	t.Logf("the browser made %d requests, all to %s; %d bodies checked; the page with its assets is %.1f KB", len(requests), adminHost, read, pageBytes/1024)
	if pageBytes > 100*1024 || pageBytes == 0 {
		t.Errorf("the page with its assets is %.0f bytes, want under 100 KB", pageBytes)
	}
	if v := evaluate[[]string](t, ctx, `window.__violations`); len(v) > 0 {
		t.Errorf("Content-Security-Policy violations: %q", v)
	}
	if lines := blog.consoleLines(); len(lines) > 0 {
		t.Errorf("the browser console has: %q", lines)
	}
	blog.mu.Lock()
	for _, n := range blog.notes {
		t.Logf("console (neither error nor warning): %s", n)
	}
	blog.mu.Unlock()
	// The watch works: an inline script, which the policy forbids, is reported.
	do("adding an inline script", chromedp.Evaluate[chromedp.Void](
		`(function () { var s = document.createElement("script"); s.textContent = "window.__ran = 1"; document.body.appendChild(s); })()`))
	within(t, 3*time.Second, "the forbidden inline script is reported", func() (bool, string) {
		v := evaluate[[]string](t, ctx, `window.__violations`)
		return len(v) > 0 && len(blog.consoleLines()) > 0, fmt.Sprint(v)
	})
	if evaluate[bool](t, ctx, `window.__ran === 1`) {
		t.Error("an inline script ran despite the policy")
	}

	// 4. The principal is deleted: the page's next refresh asks for the key again.
	if s := admin("DELETE", "/v1/principals/ops-reader", ownerKey, "", nil); s != 204 {
		t.Fatalf("deleting the reader: %d", s)
	}
	took = within(t, 3*time.Second, "the page asks for the key after the principal is deleted", func() (bool, string) {
		u := location()
		return u.Path == "/ui/login" && evaluate[bool](t, ctx, `!!document.getElementById("key")`), u.String()
	})
	t.Logf("the deleted principal's page asked for the key after %s", took.Round(10*time.Millisecond))
	do("opening the page again", chromedp.Navigate(gw.adminURL+"/ui/"), chromedp.WaitVisible(chromedp.ID("key")))
	if u := location(); u.Path != "/ui/login" {
		t.Fatalf("the deleted principal's session still opens %s", u)
	}
}

// screenshots writes the overview at a laptop's and at a phone's width to the test's artifact
// directory (go test -artifacts keeps them).
func screenshots(t *testing.T, ctx context.Context, do func(string, ...chromedp.Action[chromedp.Void])) {
	t.Helper()
	dir := t.ArtifactDir()
	for _, s := range []struct {
		name          string
		width, height int64
		opts          []chromedp.EmulateViewportOption
	}{
		{"status-page-desktop.png", 1280, 900, nil},
		{"status-page-phone.png", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateScale(2), chromedp.EmulateMobile}},
	} {
		do("sizing the window for "+s.name, chromedp.EmulateViewport(s.width, s.height, s.opts...))
		time.Sleep(300 * time.Millisecond)   // the layout settles
		shot := chromedp.FullScreenshot(100) // the whole page on a laptop; what a phone's screen shows
		if s.opts != nil {
			shot = chromedp.CaptureScreenshot()
		}
		png, err := chromedp.Run(ctx, shot)
		if err != nil {
			t.Fatalf("screenshot %s: %v", s.name, err)
		}
		path := filepath.Join(dir, s.name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		if overflow := evaluate[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth + 1`); overflow {
			t.Errorf("at %d px the page is wider than the screen", s.width)
		}
		t.Logf("screenshot %s (%d KB)", path, len(png)/1024)
	}
	do("sizing the window back", chromedp.EmulateViewport(1280, 900))
	// And in dark colours, as a browser set to them shows it.
	dark := func(on bool) {
		t.Helper()
		p := emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}}
		if on {
			p.Features[0].Value = "dark"
		}
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, p); err != nil {
			t.Fatal(err)
		}
	}
	dark(true)
	defer dark(false)
	time.Sleep(300 * time.Millisecond)
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		os.WriteFile(filepath.Join(dir, "status-page-dark.png"), png, 0o644)
	}
}
