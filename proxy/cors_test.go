package proxy_test

import (
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// respondCORSModel is respondByPath, but /model-cors answers with the model's own CORS headers,
// which a service with cors must not pass on.
func respondCORSModel(r *recorder, w io.Writer, req *seenRequest) bool {
	if path, _, _ := strings.Cut(req.Target, "?"); path != "/model-cors" {
		return respondByPath(r, w, req)
	}
	_, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"+
		"Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\nAccess-Control-Expose-Headers: X-Secret\r\n"+
		"Vary: Accept-Encoding\r\nContent-Length: "+strconv.Itoa(len(okBody))+"\r\n\r\n"+okBody)
	return err == nil
}

// TestF10CORSPreflight is issue 17 finding 10: a CORS preflight to a service with cors is
// answered by the gateway without a credential and never forwarded: 204 with the allow headers
// for an allowed origin, method and headers, 403 otherwise. A service without cors treats it as
// any request (401 without a credential).
func TestF10CORSPreflight(t *testing.T) {
	e := newEnv(t, envOptions{respond: respondCORSModel, config: func(c *config.Config) {
		editService("iris", func(s *config.Service) {
			s.CORS = config.CORS{
				AllowedOrigins: []string{"https://app.example", "http://localhost:3000"},
				AllowedMethods: []string{"POST", "PUT"},
				AllowedHeaders: []string{"Authorization", "Content-Type", "X-Ms-Client-Request-Id"},
				MaxAge:         10 * time.Minute,
			}
		})(c)
		editService("open", func(s *config.Service) {
			s.CORS = config.CORS{AllowedOrigins: []string{"*"}, AllowedMethods: []string{"*"}, AllowedHeaders: []string{"*"}}
		})(c)
	}})
	const score = "/api/v1/service/iris/score"
	preflight := func(target, origin, method string, lines ...string) string {
		return request("OPTIONS", target, append([]string{"Origin: " + origin, "Access-Control-Request-Method: " + method}, lines...)...)
	}
	type allowed struct{ Origin, Methods, Headers, MaxAge string }
	tests := []struct {
		name   string
		raw    string
		status int
		want   allowed // for 204
	}{
		{"an allowed origin, method and headers", preflight(score, "https://app.example", "POST", "Access-Control-Request-Headers: authorization,content-type"), 204,
			allowed{"https://app.example", "POST, PUT", "Authorization, Content-Type, X-Ms-Client-Request-Id", "600"}},
		{"headers in any case and with spaces", preflight(score, "https://app.example", "PUT", "Access-Control-Request-Headers: Authorization , X-MS-CLIENT-REQUEST-ID"), 204,
			allowed{"https://app.example", "POST, PUT", "Authorization, Content-Type, X-Ms-Client-Request-Id", "600"}},
		{"no requested headers", preflight(score, "http://localhost:3000", "POST"), 204,
			allowed{"http://localhost:3000", "POST, PUT", "Authorization, Content-Type, X-Ms-Client-Request-Id", "600"}},
		{"a valid key changes nothing", preflight(score, "https://app.example", "POST", bearer(e.primary)), 204,
			allowed{"https://app.example", "POST, PUT", "Authorization, Content-Type, X-Ms-Client-Request-Id", "600"}},
		{"the token path", preflight("/api/v1/service/iris/token", "https://app.example", "POST"), 204,
			allowed{"https://app.example", "POST, PUT", "Authorization, Content-Type, X-Ms-Client-Request-Id", "600"}},
		{"any origin, method and headers", preflight("/api/v1/service/open/score", "https://anyone.example", "DELETE", "Access-Control-Request-Headers: x-anything,authorization"), 204,
			allowed{"*", "DELETE", "x-anything,authorization", ""}},

		{"an origin not listed", preflight(score, "https://evil.example", "POST"), 403, allowed{}},
		{"an origin not listed, with a valid key", preflight(score, "https://evil.example", "POST", bearer(e.primary)), 403, allowed{}},
		{"a listed origin in another case", preflight(score, "https://APP.example", "POST"), 403, allowed{}},
		{"a listed origin as a prefix", preflight(score, "https://app.example.evil.example", "POST"), 403, allowed{}},
		{"a listed origin with a path", preflight(score, "https://app.example/x", "POST"), 403, allowed{}},
		{"the null origin", preflight(score, "null", "POST"), 403, allowed{}},
		{"a method not listed", preflight(score, "https://app.example", "DELETE"), 403, allowed{}},
		{"a method in another case", preflight(score, "https://app.example", "post"), 403, allowed{}},
		{"a header not listed", preflight(score, "https://app.example", "POST", "Access-Control-Request-Headers: authorization,x-other"), 403, allowed{}},
		{"a header list that is not names", preflight(score, "https://app.example", "POST", "Access-Control-Request-Headers: a b"), 403, allowed{}},
		{"TRACE under any method", preflight("/api/v1/service/open/score", "https://anyone.example", "TRACE"), 403, allowed{}},
		{"a header list that is not names, under any header", preflight("/api/v1/service/open/score", "https://anyone.example", "POST", "Access-Control-Request-Headers: a\tb;c"), 403, allowed{}},

		{"a service without cors", preflight("/api/v1/service/other/score", "https://app.example", "POST"), 401, allowed{}},
		{"an unknown service", preflight("/api/v1/service/nope/score", "https://app.example", "POST"), 404, allowed{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, tc.raw)
			e.up.requireNone(t)
			switch tc.status {
			case 204:
				if r.Status != 204 {
					t.Fatalf("%d %s, want 204", r.Status, r.Body)
				}
				got := allowed{r.get("Access-Control-Allow-Origin"), r.get("Access-Control-Allow-Methods"),
					r.get("Access-Control-Allow-Headers"), r.get("Access-Control-Max-Age")}
				checkEqual(t, "the preflight's answer", tc.want, got)
				if tc.want.Origin != "*" && !slices.Contains(varyOf(r), "origin") {
					t.Errorf("Vary %q, want Origin in it", r.values("Vary"))
				}
				if len(r.values("Access-Control-Allow-Credentials")) > 0 {
					t.Errorf("Access-Control-Allow-Credentials %q", r.values("Access-Control-Allow-Credentials"))
				}
				checkRequestIDs(t, r)
			case 403:
				checkError(t, r, 403, "Forbidden", "")
				if (len(r.values("Access-Control-Allow-Origin")) > 0) || (len(r.values("Access-Control-Allow-Methods")) > 0) {
					t.Errorf("a refused preflight carries allow headers: %v", r.Header)
				}
			case 401:
				checkError(t, r, 401, "Unauthorized", challenge)
			default:
				checkError(t, r, tc.status, "NotFound", "")
			}
		})
	}
}

// TestF10CORSActualRequests is the other half of finding 10: a cross-origin request that is not
// a preflight still needs its credential and reaches the model as usual; its answer (an error
// too, so that the page can read it) carries Access-Control-Allow-Origin and Vary: Origin when
// the origin is allowed, and the model's own CORS headers never pass for a service with cors.
func TestF10CORSActualRequests(t *testing.T) {
	e := newEnv(t, envOptions{respond: respondCORSModel, config: func(c *config.Config) {
		editService("iris", func(s *config.Service) {
			s.CORS = config.CORS{AllowedOrigins: []string{"https://app.example"}}
		})(c)
		editService("open", func(s *config.Service) { s.CORS = config.CORS{AllowedOrigins: []string{"*"}} })(c)
	}})
	const score = "/api/v1/service/iris/score"
	tests := []struct {
		name      string
		raw       string
		status    int
		forwarded bool
		origin    string // the Access-Control-Allow-Origin wanted, "" for none
		vary      bool   // Vary: Origin wanted
	}{
		{"an allowed origin with a key", request("POST", score, "Origin: https://app.example", bearer(e.primary), "Content-Length: 0"), 200, true, "https://app.example", true},
		{"an allowed origin without a key", request("POST", score, "Origin: https://app.example", "Content-Length: 0"), 401, false, "https://app.example", true},
		{"an allowed origin with a bad key", request("POST", score, "Origin: https://app.example", "Authorization: Bearer sgk_nope", "Content-Length: 0"), 401, false, "https://app.example", true},
		{"OPTIONS with Origin but no request method is not a preflight", request("OPTIONS", score, "Origin: https://app.example", bearer(e.primary)), 200, true, "https://app.example", true},
		{"OPTIONS with Origin but no request method needs a key", request("OPTIONS", score, "Origin: https://app.example"), 401, false, "https://app.example", true},
		{"the model's own CORS headers are replaced", request("GET", "/api/v1/service/iris/model-cors", "Origin: https://app.example", bearer(e.primary)), 200, true, "https://app.example", true},
		{"the model's own CORS headers are dropped for another origin", request("GET", "/api/v1/service/iris/model-cors", "Origin: https://evil.example", bearer(e.primary)), 200, true, "", true},
		{"an origin not listed is served without the header", request("POST", score, "Origin: https://evil.example", bearer(e.primary), "Content-Length: 0"), 200, true, "", true},
		{"no Origin", request("POST", score, bearer(e.primary), "Content-Length: 0"), 200, true, "", true},
		{"any origin", request("POST", "/api/v1/service/open/score", "Origin: https://anyone.example", "Content-Length: 0"), 200, true, "*", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, tc.raw)
			if r.Status != tc.status {
				t.Fatalf("%d %s, want %d", r.Status, r.Body, tc.status)
			}
			if tc.forwarded {
				e.up.requireOne(t)
			} else {
				e.up.requireNone(t)
			}
			checkEqual(t, "Access-Control-Allow-Origin", tc.origin, strings.Join(r.values("Access-Control-Allow-Origin"), " | "))
			if got := slices.Contains(varyOf(r), "origin"); got != tc.vary {
				t.Errorf("Vary %q: Origin in it %v, want %v", r.values("Vary"), got, tc.vary)
			}
			for _, h := range []string{"Access-Control-Allow-Credentials", "Access-Control-Allow-Methods"} {
				if len(r.values(h)) > 0 {
					t.Errorf("%s %q on an actual request's answer", h, r.values(h))
				}
			}
			expose := strings.ToLower(strings.Join(r.values("Access-Control-Expose-Headers"), ","))
			if strings.Contains(expose, "x-secret") || tc.origin != "" && !strings.Contains(expose, "x-request-id") {
				t.Errorf("Access-Control-Expose-Headers %q", expose)
			}
		})
	}
}

// varyOf lists the response's Vary members, lower case.
func varyOf(r *response) []string {
	var out []string
	for _, v := range r.values("Vary") {
		for m := range strings.SplitSeq(v, ",") {
			out = append(out, strings.ToLower(strings.TrimSpace(m)))
		}
	}
	return out
}
