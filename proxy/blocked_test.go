package proxy_test

import (
	"testing"

	"github.com/scoregate/scoregate/config"
)

// TestF11BlockedPathSpellings is issue 17 finding 11: blocked_paths ["/admin"] must also hold
// against the spellings a model server may read as /admin (an encoded ';' that starts path
// parameters, trailing dots and spaces that Windows and some servers drop, a dot-dot hidden by
// them), through a real socket, with a valid key: the model receives nothing for a blocked path
// and gets the others unchanged.
func TestF11BlockedPathSpellings(t *testing.T) {
	e := newEnv(t, envOptions{config: editService("iris", func(s *config.Service) {
		s.BlockedPaths = []string{"/admin", "/v2/repository/"}
	})})
	const svc = "/api/v1/service/iris"
	tests := []struct {
		name   string
		path   string
		status int // 404: blocked; 400: refused by the router already; 200: forwarded
	}{
		{"the blocked path itself", "/admin", 404},
		{"with a trailing slash", "/admin/", 404},
		{"under it", "/admin/x", 404},
		{"with a query", "/admin?x=1", 404},
		{"in another case", "/ADMIN", 404},
		{"mixed case under it", "/Admin/Users", 404},
		{"an encoded letter", "/%61dmin/x", 404},
		{"a parameter", "/admin;jsessionid=1", 404},
		{"finding 11: an encoded semicolon", "/admin%3Bx", 404},
		{"an encoded semicolon in lower-case hex", "/admin%3bx/y", 404},
		{"an encoded semicolon alone", "/admin%3B", 404},
		{"finding 11: a trailing dot", "/admin.", 404},
		{"trailing dots", "/admin...", 404},
		{"a trailing dot under it", "/admin./x", 404},
		{"finding 11: a trailing encoded space", "/admin%20", 404},
		{"trailing spaces and dots", "/admin%20.%20.", 404},
		{"a leading encoded space", "/%20admin", 404},
		{"finding 11: dot-dot and a parameter glued on", "/admin..;/", 404},
		{"dot-dot glued on, then a path", "/admin..;/x", 404},
		{"dot-dot glued on with an encoded semicolon", "/admin..%3B/", 404},
		{"a dot-dot with a trailing space climbs back", "/x/..%20/admin", 404},
		{"three dots climb back as a dot-dot", "/x/.../admin", 404},
		{"a dot with a parameter and a space", "/.%20;x/admin", 404},
		{"a second blocked path, trailing slash in the config", "/v2/repository", 404},
		{"the second, with a trailing dot on a later segment", "/v2/repository./index", 404},

		{"double encoding is refused by the router", "/admin%253Bx", 400},
		{"an encoded dot is refused by the router", "/admin%2e", 400},
		{"an encoded dot in upper case", "/admin%2E", 400},
		{"an encoded tab is refused by the router", "/admin%09", 400},
		{"an empty segment is refused by the router", "//admin", 400},
		{"a raw dot-dot with a parameter is refused by the router", "/x/..;/admin", 400},

		{"a longer name", "/administrator", 200},
		{"a longer name after a trailing dot", "/admin.x", 200},
		{"a name with an inner space", "/ad%20min", 200},
		{"a hidden name", "/.admin", 200},
		{"the name deeper down", "/x/admin", 200},
		{"the service root", "/", 200},
		{"scoring", "/score", 200},
		{"a sibling of the second", "/v2/repositoryx", 200},
		{"the parent of the second", "/v2/models/x/infer", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, request("GET", svc+tc.path, bearer(e.primary)))
			switch tc.status {
			case 200:
				if r.Status != 200 {
					t.Fatalf("%s: %d %s, want 200 from the model", tc.path, r.Status, r.Body)
				}
				checkEqual(t, "the target the model saw", tc.path, e.up.requireOne(t).Target)
			case 404:
				checkError(t, r, 404, "NotFound", "")
				e.up.requireNone(t)
			default:
				checkError(t, r, tc.status, "BadRequest", "")
				e.up.requireNone(t)
			}
		})
	}
}
