package proxy_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/scoregate/scoregate/config"
)

// hopByHop are the headers that never cross the gateway, in either direction (HTTP-16).
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Proxy-Authorization", "Proxy-Authenticate", "Http2-Settings",
}

// TestRequestHeaderHygiene checks which client headers reach the model: HTTP-14, 16, 17, 19, 20.
func TestRequestHeaderHygiene(t *testing.T) {
	e := newEnv(t, envOptions{})
	const score = "/api/v1/service/iris/score"
	key := bearer(e.primary)
	tests := []struct {
		name    string
		lines   []string
		absent  []string          // header names the model must not see
		present map[string]string // header name → the only value the model must see
	}{
		{
			name: "HTTP-16 hop-by-hop request headers are removed",
			lines: []string{key, "Connection: keep-alive, X-Foo", "X-Foo: nominated", "Proxy-Connection: keep-alive",
				"Keep-Alive: timeout=5", "TE: trailers", "Trailer: X-Checksum", "Upgrade: websocket",
				"Proxy-Authorization: Basic Zm9vOmJhcg==", "Proxy-Authenticate: Basic", "X-Kept: yes"},
			absent:  append([]string{"X-Foo", "Authorization"}, hopByHop...),
			present: map[string]string{"X-Kept": "yes"},
		},
		{
			name:    "HTTP-16 Connection: close is not passed on",
			lines:   []string{key, "Connection: close"},
			absent:  hopByHop,
			present: map[string]string{},
		},
		{
			name:    "HTTP-16 Connection split over two lines",
			lines:   []string{key, "Connection: X-A", "Connection: X-B", "X-A: 1", "X-B: 2", "X-C: 3"},
			absent:  []string{"Connection", "X-A", "X-B"},
			present: map[string]string{"X-C": "3"},
		},
		{
			name: "HTTP-17 nominated client fields removed, the gateway's own still set",
			lines: []string{"Connection: close, X-Forwarded-For, X-Api-Key, Authorization, X-Custom", key,
				"X-Forwarded-For: 6.6.6.6", "X-Api-Key: sgk_secret", "X-Custom: nominated", "X-Other: kept"},
			absent:  []string{"Connection", "X-Api-Key", "X-Custom", "Authorization"},
			present: map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Other": "kept"},
		},
		{
			name: "HTTP-17 nominating the gateway's own headers and framing removes none of them",
			lines: []string{"Connection: X-Request-Id, X-Forwarded-Proto, X-Forwarded-Host, Host, Content-Length, Content-Type", key,
				"X-Request-Id: client-id", "Content-Type: application/json", "Content-Length: 2"},
			present: map[string]string{"X-Request-Id": "client-id", "X-Forwarded-Proto": "http",
				"X-Forwarded-Host": "gw.test", "Content-Type": "application/json", "Content-Length": "2"},
		},
		{
			name:    "HTTP-17 nominated names are matched without regard to case",
			lines:   []string{key, "Connection: x-custom", "X-CUSTOM: 1"},
			absent:  []string{"X-Custom"},
			present: map[string]string{},
		},
		{
			name: "HTTP-14 h2c upgrade is stripped",
			lines: []string{key, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
				"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"},
			absent: []string{"Connection", "Upgrade", "Http2-Settings"},
		},
		{
			name:    "HTTP-14 websocket upgrade is stripped",
			lines:   []string{key, "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"},
			absent:  []string{"Connection", "Upgrade"},
			present: map[string]string{"Sec-Websocket-Version": "13"},
		},
		{
			name: "HTTP-19 header names with '_' are not forwarded",
			lines: []string{key, "X_Forwarded_For: 6.6.6.6", "X_Api_Key: k", "SCRIPT_NAME: /admin", "script_name: /admin",
				"X-Custom_Header: 1", "Authorization_: Bearer x", "_: x", "X-Ok: yes"},
			absent:  []string{"X_Forwarded_For", "X_Api_Key", "Script_name", "X-Custom_header", "Authorization_", "_"},
			present: map[string]string{"X-Ok": "yes", "X-Forwarded-For": "127.0.0.1"},
		},
		{
			name: "HTTP-20 URL and method rewrite headers are stripped",
			lines: []string{key, "X-Original-URL: /admin", "X-Rewrite-URL: /admin", "X-HTTP-Method-Override: DELETE",
				"X-HTTP-Method: DELETE", "X-Method-Override: DELETE", "Forwarded: for=6.6.6.6;host=evil.test;proto=https",
				"X-Real-IP: 6.6.6.6"},
			absent: []string{"X-Original-Url", "X-Rewrite-Url", "X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
				"Forwarded", "X-Real-Ip"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			raw := request("POST", score, tc.lines...)
			if v := values(parseLines(tc.lines), "Content-Length"); len(v) > 0 {
				raw += "{}"
			}
			r := e.do(t, raw)
			if r.Status != 200 {
				t.Fatalf("status %d %s, want 200 (never 101)", r.Status, r.Body)
			}
			seen := e.up.requireOne(t)
			for _, name := range tc.absent {
				if seen.has(name) {
					t.Errorf("the model saw %s: %q", name, seen.values(name))
				}
			}
			for name, want := range tc.present {
				checkEqual(t, "the model's "+name, []string{want}, seen.values(name))
			}
			for _, f := range seen.Header {
				if strings.Contains(f.Name, "_") {
					t.Errorf("HTTP-19 the model saw %s: %s", f.Name, f.Value)
				}
			}
		})
	}

	// Past the bound on names to remove, the request is refused rather than half cleaned.
	names := make([]string, 40)
	for i := range names {
		names[i] = "X-N" + strconv.Itoa(i)
	}
	under := make([]string, 40)
	for i := range under {
		under[i] = "X_U" + strconv.Itoa(i) + ": 1"
	}
	for _, tc := range []struct {
		name  string
		lines []string
	}{
		{"HTTP-17 more Connection names than the gateway removes", []string{key, "Connection: " + strings.Join(names, ", ")}},
		{"HTTP-19 more '_' names than the gateway removes", append([]string{key}, under...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			checkError(t, e.do(t, request("GET", score, tc.lines...)), 400, "BadRequest", "")
			e.up.requireNone(t)
		})
	}
}

func parseLines(lines []string) []field {
	var h []field
	for _, l := range lines {
		name, value, _ := strings.Cut(l, ":")
		h = append(h, field{name, strings.TrimSpace(value)})
	}
	return h
}

// TestResponseHeaderHygiene is HTTP-16 in the other direction: the model's hop-by-hop headers,
// and those its Connection header names, never reach the client.
func TestResponseHeaderHygiene(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.do(t, request("GET", "/api/v1/service/open/hop"))
	if r.Status != 200 || string(r.Body) != okBody {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	for _, name := range append([]string{"X-Foo"}, hopByHop...) {
		if v := r.values(name); len(v) > 0 {
			t.Errorf("the client saw %s %q", name, v)
		}
	}
	checkEqual(t, "end-to-end header X-Kept", []string{"yes"}, r.values("X-Kept"))
	checkEqual(t, "Content-Length", []string{strconv.Itoa(len(okBody))}, r.values("Content-Length"))
}

// TestForwardedHeaders is HTTP-22: the model sees exactly the gateway's X-Forwarded-* unless the
// peer is a trusted proxy, whatever the client sends.
func TestForwardedHeaders(t *testing.T) {
	const score = "/api/v1/service/open/score"
	xff50 := make([]string, 50)
	for i := range xff50 {
		xff50[i] = "X-Forwarded-For: 10.0.0." + strconv.Itoa(i)
	}
	tests := []struct {
		name    string
		trusted []string
		lines   []string
		want    map[string][]string
	}{
		{"no forwarding headers from the client", nil, nil,
			map[string][]string{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"gw.test"}}},
		{"HTTP-22 client X-Forwarded-For replaced", nil, []string{"X-Forwarded-For: 203.0.113.7"},
			map[string][]string{"X-Forwarded-For": {"127.0.0.1"}}},
		{"HTTP-22 50 X-Forwarded-For lines replaced by one", nil, xff50,
			map[string][]string{"X-Forwarded-For": {"127.0.0.1"}}},
		{"HTTP-22 X-Forwarded-For unknown", nil, []string{"X-Forwarded-For: unknown"},
			map[string][]string{"X-Forwarded-For": {"127.0.0.1"}}},
		{"HTTP-22 X-Forwarded-For with a port", nil, []string{"X-Forwarded-For: [::1]:80"},
			map[string][]string{"X-Forwarded-For": {"127.0.0.1"}}},
		{"HTTP-22 X-Forwarded-For of 10 KiB", nil, []string{"X-Forwarded-For: " + strings.Repeat("1.2.3.4, ", 1100)},
			map[string][]string{"X-Forwarded-For": {"127.0.0.1"}}},
		{"HTTP-22 X-Forwarded-For empty list", nil, []string{"X-Forwarded-For: , ,"},
			map[string][]string{"X-Forwarded-For": {"127.0.0.1"}}},
		{"client X-Forwarded-Proto and Host replaced", nil,
			[]string{"X-Forwarded-Proto: https", "X-Forwarded-Host: evil.test", "X-Forwarded-Proto: wss"},
			map[string][]string{"X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"gw.test"}}},
		{"trusted proxy: client X-Forwarded-For kept and the peer appended", []string{"127.0.0.1"},
			[]string{"X-Forwarded-For: 203.0.113.7"},
			map[string][]string{"X-Forwarded-For": {"203.0.113.7, 127.0.0.1"}}},
		{"trusted proxy range: two X-Forwarded-For lines joined in order", []string{"127.0.0.0/8"},
			[]string{"X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 198.51.100.1, 10.0.0.1"},
			map[string][]string{"X-Forwarded-For": {"203.0.113.7, 198.51.100.1, 10.0.0.1, 127.0.0.1"}}},
		{"trusted proxy: X-Forwarded-Proto and Host kept", []string{"127.0.0.1"},
			[]string{"X-Forwarded-Proto: https", "X-Forwarded-Host: api.example.com"},
			map[string][]string{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"api.example.com"}, "X-Forwarded-For": {"127.0.0.1"}}},
		{"HTTP-22 trusted proxy with 50 lines", []string{"127.0.0.1"}, xff50,
			map[string][]string{"X-Forwarded-For": {joinXFF(50) + ", 127.0.0.1"}}},
		{"another trusted range does not trust loopback", []string{"10.0.0.0/8"}, []string{"X-Forwarded-For: 203.0.113.7", "X-Forwarded-Host: evil.test"},
			map[string][]string{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Host": {"gw.test"}}},
	}
	envs := map[string]*env{}
	for _, tc := range tests {
		id := strings.Join(tc.trusted, ",")
		if envs[id] == nil {
			trusted := tc.trusted
			envs[id] = newEnv(t, envOptions{config: func(c *config.Config) { c.Server.TrustedProxies = trusted }})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := envs[strings.Join(tc.trusted, ",")]
			e.up.reset()
			r := e.do(t, request("GET", score, tc.lines...))
			if r.Status != 200 {
				t.Fatalf("status %d %s, want 200", r.Status, r.Body)
			}
			seen := e.up.requireOne(t)
			got := map[string][]string{}
			for name := range tc.want {
				got[name] = seen.values(name)
			}
			checkEqual(t, "the model's forwarding headers", tc.want, got)
		})
	}
}

// TestValidHostForwarded checks that every valid Host form is served and reaches the model as
// X-Forwarded-Host (the refused forms are in TestMalformedRequests, HTTP-23).
func TestValidHostForwarded(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, host := range []string{"gw.test", "gw.test:8080", "GW.Test", "127.0.0.1", "127.0.0.1:80", "[::1]", "[::1]:8080",
		"xn--bcher-kva.example", "a-b_c~d.example", "b%C3%BCcher.example"} {
		t.Run("Host "+host, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, request("GET", "/api/v1/service/open/score", "Host: "+host))
			if r.Status != 200 {
				t.Fatalf("status %d %s", r.Status, r.Body)
			}
			checkEqual(t, "the model's X-Forwarded-Host", []string{host}, e.up.requireOne(t).values("X-Forwarded-Host"))
		})
	}
	t.Run("HTTP/1.0 without Host is served", func(t *testing.T) {
		e.up.reset()
		r := e.do(t, "GET /api/v1/service/open/score HTTP/1.0\r\n\r\n")
		if r.Status != 200 {
			t.Fatalf("status %d %s", r.Status, r.Body)
		}
		seen := e.up.requireOne(t)
		if seen.has("X-Forwarded-Host") || seen.get("Host") != e.up.addr {
			t.Errorf("the model saw Host %q and X-Forwarded-Host %q", seen.values("Host"), seen.values("X-Forwarded-Host"))
		}
	})
}

func joinXFF(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = "10.0.0." + strconv.Itoa(i)
	}
	return strings.Join(parts, ", ")
}
