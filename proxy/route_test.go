package proxy

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// routeCases are raw request targets with what splitTarget makes of them. They are the fuzz seeds
// of FuzzSplitTarget too.
var routeCases = []struct {
	name      string
	target    string
	svc       string // service name, when ok and valid
	forward   string // target for the model, when ok and valid
	ok, valid bool
}{
	{"contract: score keeps its query", "/api/v1/service/iris/score?x=1&y=2", "iris", "/score?x=1&y=2", true, true},
	{"contract: swagger.json", "/api/v1/service/iris/swagger.json", "iris", "/swagger.json", true, true},
	{"service root with slash", "/api/v1/service/iris/", "iris", "/", true, true},
	{"service root without slash", "/api/v1/service/iris", "iris", "/", true, true},
	{"service root without slash with a query", "/api/v1/service/iris?x=1", "iris", "/?x=1", true, true},
	{"service root with an empty query", "/api/v1/service/iris?", "iris", "/?", true, true},
	{"query holding slashes, dots and a question mark", "/api/v1/service/iris/score?p=/../a//b?c", "iris", "/score?p=/../a//b?c", true, true},
	{"query holding encoded slash and NUL", "/api/v1/service/iris/score?p=%2F%00", "iris", "/score?p=%2F%00", true, true},
	{"HTTP-28 matrix parameter", "/api/v1/service/iris/score;jsessionid=1", "iris", "/score;jsessionid=1", true, true},
	{"HTTP-28 parameter on the name", "/api/v1/service/iris;x/score", "iris;x", "/score", true, true},
	{"HTTP-29 encoded '#'", "/api/v1/service/iris/admin%23foo", "iris", "/admin%23foo", true, true},
	{"dots inside a segment", "/api/v1/service/iris/a..b/.c/d.", "iris", "/a..b/.c/d.", true, true},
	{"three dots is a name, not a dot segment", "/api/v1/service/iris/.../x", "iris", "/.../x", true, true},

	{"HTTP-50 /models is not a service path", "/models", "", "", false, true},
	{"HTTP-50 /metrics", "/metrics", "", "", false, true},
	{"HTTP-50 /debug/pprof", "/debug/pprof/", "", "", false, true},
	{"HTTP-50 Triton load", "/v2/repository/models/x/load", "", "", false, true},
	{"root", "/", "", "", false, true},
	{"prefix without a name", "/api/v1/service/", "", "", false, true},
	{"prefix without a name with a query", "/api/v1/service/?x", "", "", false, true},
	{"prefix without its slash", "/api/v1/service", "", "", false, true},
	{"prefix in another case", "/API/v1/service/iris/score", "", "", false, true},

	{"HTTP-25 empty", "", "", "", false, false},
	{"HTTP-25 absolute-form", "http://169.254.169.254/latest", "", "", false, false},
	{"HTTP-25 absolute-form of a service path", "http://gw/api/v1/service/iris/score", "", "", false, false},
	{"HTTP-25 authority-form", "example.com:80", "", "", false, false},
	{"HTTP-25 asterisk", "*", "", "", false, false},
	{"HTTP-25 relative", "admin", "", "", false, false},
	{"HTTP-26 lone percent", "/api/v1/service/iris/x%", "", "", true, false},
	{"HTTP-26 percent and one digit", "/api/v1/service/iris/x%1", "", "", true, false},
	{"HTTP-26 percent and non-hex", "/api/v1/service/iris/x%zz", "", "", true, false},
	{"HTTP-26 raw space", "/api/v1/service/iris/a b", "", "", true, false},
	{"HTTP-26 raw control byte", "/api/v1/service/iris/a\x02", "", "", true, false},
	{"HTTP-26 raw DEL", "/api/v1/service/iris/a\x7f", "", "", true, false},
	{"HTTP-26 raw non-ASCII", "/api/v1/service/iris/caf\xc3\xa9", "", "", true, false},
	{"HTTP-26 raw backslash", "/api/v1/service/iris/..\\admin", "", "", true, false},
	{"HTTP-26 bad percent in the query", "/api/v1/service/iris/score?q=%", "", "", true, false},
	{"HTTP-26 raw space in the query", "/api/v1/service/iris/score?q=a b", "", "", true, false},
	{"HTTP-26 bad path outside the prefix", "/x%", "", "", false, false},
	{"HTTP-28 dot-dot with a parameter", "/api/v1/service/iris/..;foo=bar/admin", "", "", true, false},
	{"HTTP-28 dot-dot into another service", "/api/v1/service/iris/../other/score", "", "", true, false},
	{"HTTP-28 dot-dot as the name", "/api/v1/service/../x", "", "", true, false},
	{"HTTP-28 dot as the name", "/api/v1/service/./x", "", "", true, false},
	{"HTTP-28 dot segment", "/api/v1/service/iris/./score", "", "", true, false},
	{"HTTP-28 dot segment with a parameter", "/api/v1/service/iris/.;x/score", "", "", true, false},
	{"HTTP-28 trailing dot", "/api/v1/service/iris/score/.", "", "", true, false},
	{"HTTP-28 trailing dot-dot", "/api/v1/service/iris/score/..", "", "", true, false},
	{"HTTP-28 trailing dot-dot before a query", "/api/v1/service/iris/score/..?x", "", "", true, false},
	{"HTTP-28 empty segment", "/api/v1/service/iris//score", "", "", true, false},
	{"HTTP-28 empty name segment", "/api/v1/service//score", "", "", true, false},
	{"HTTP-28 empty segment outside the prefix", "//api/v1/service/iris/score", "", "", false, false},
	{"HTTP-29 fragment", "/api/v1/service/iris/score#frag", "", "", true, false},
	{"HTTP-29 fragment in the query", "/api/v1/service/iris/score?x#frag", "", "", true, false},
	{"HTTP-29 fragment outside the prefix", "/%aa#f", "", "", false, false},
	{"HTTP-31 encoded NUL", "/api/v1/service/iris/%00", "", "", true, false},
	{"HTTP-31 encoded dot-dot", "/api/v1/service/iris/%2e%2e/other", "", "", true, false},
	{"HTTP-31 encoded dot", "/api/v1/service/iris/%2E/x", "", "", true, false},
	{"HTTP-31 encoded slash", "/api/v1/service/iris/a%2Fb", "", "", true, false},
	{"HTTP-31 encoded slash lower case", "/api/v1/service/iris/a%2fb", "", "", true, false},
	{"HTTP-31 encoded slash in the name", "/api/v1/service/ir%2fis/x", "", "", true, false},
	{"HTTP-31 encoded backslash", "/api/v1/service/iris/a%5cb", "", "", true, false},
	{"HTTP-31 encoded percent", "/api/v1/service/iris/%252e", "", "", true, false},
	{"HTTP-31 overlong dot", "/api/v1/service/iris/%c0%ae%c0%ae/x", "", "", true, false},
	{"HTTP-31 fullwidth solidus", "/api/v1/service/iris/..%ef%bc%8fx", "", "", true, false},
	{"HTTP-31 encoded LF", "/api/v1/service/iris/a%0a", "", "", true, false},
	{"HTTP-31 encoded DEL", "/api/v1/service/iris/a%7F", "", "", true, false},
}

func TestSplitTarget(t *testing.T) {
	for _, tc := range routeCases {
		t.Run(tc.name, func(t *testing.T) {
			name, forward, ok, valid := splitTarget([]byte(tc.target))
			type result struct {
				Name, Forward string
				OK, Valid     bool
			}
			got := result{string(name), string(forward), ok, valid}
			want := result{tc.svc, tc.forward, tc.ok, tc.valid}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("splitTarget(%q) mismatch (-want +got):\n%s", tc.target, diff)
			}
			checkSplitInvariants(t, []byte(tc.target))
		})
	}
}

// FuzzSplitTarget checks splitTarget's promises on any raw target: what it calls valid and
// routes can be forwarded as it is, without a model reading a different path than the gateway.
func FuzzSplitTarget(f *testing.F) {
	for _, tc := range routeCases {
		f.Add([]byte(tc.target))
	}
	f.Fuzz(func(t *testing.T, target []byte) {
		checkSplitInvariants(t, target)
	})
}

func checkSplitInvariants(t *testing.T, target []byte) {
	t.Helper()
	orig := bytes.Clone(target)
	name, forward, ok, valid := splitTarget(target)
	if !bytes.Equal(target, orig) {
		t.Fatalf("splitTarget modified its input: %q → %q", orig, target)
	}
	if valid != validTarget(target) {
		t.Fatalf("splitTarget(%q) valid = %v, validTarget says %v", target, valid, !valid)
	}
	if !ok || !valid {
		if name != nil || forward != nil {
			t.Fatalf("splitTarget(%q) refused (ok %v, valid %v) but returned name %q forward %q", target, ok, valid, name, forward)
		}
		return
	}
	if len(name) == 0 || bytes.ContainsAny(name, "/?#") {
		t.Fatalf("splitTarget(%q): bad name %q", target, name)
	}
	if len(forward) == 0 || forward[0] != '/' {
		t.Fatalf("splitTarget(%q): forward target %q does not start with '/'", target, forward)
	}
	if bytes.IndexByte(forward, '#') >= 0 {
		t.Fatalf("splitTarget(%q): forward target %q has a fragment", target, forward)
	}
	for _, c := range forward {
		if c <= ' ' || c >= 0x7f {
			t.Fatalf("splitTarget(%q): forward target %q has the raw byte %#x", target, forward, c)
		}
	}
	// The path is what a model routes on; the query is passed through unchanged and may hold
	// anything well-formed.
	path, query, hasQuery := bytes.Cut(forward, []byte("?"))
	lower := bytes.ToLower(path)
	for _, bad := range []string{"//", "/../", "/./", "%2f", "%5c", "%00", "%2e", "%25"} {
		if bytes.Contains(lower, []byte(bad)) {
			t.Fatalf("splitTarget(%q): forward path %q contains %q", target, path, bad)
		}
	}
	for seg := range bytes.SplitSeq(path[1:], []byte("/")) {
		if s, _, _ := bytes.Cut(seg, []byte(";")); string(s) == "." || string(s) == ".." {
			t.Fatalf("splitTarget(%q): forward path %q has a dot segment", target, path)
		}
	}
	if !validTarget(forward) {
		t.Fatalf("splitTarget(%q): forward target %q is not itself a valid target", target, forward)
	}
	// Nothing is decoded, re-encoded or dropped: the forward target is the rest of the raw target.
	rest := target[len(ServicePrefix)+len(name):]
	if len(rest) == 0 || rest[0] != '/' {
		rest = append([]byte{'/'}, rest...)
	}
	if !bytes.Equal(forward, rest) {
		t.Fatalf("splitTarget(%q): forward target %q, want the raw rest %q", target, forward, rest)
	}
	if _, q, has := bytes.Cut(target, []byte("?")); has != hasQuery || !bytes.Equal(q, query) {
		t.Fatalf("splitTarget(%q): query %q, want %q", target, query, q)
	}
	if !bytes.HasPrefix(target, []byte(ServicePrefix)) || !bytes.Equal(target[len(ServicePrefix):len(ServicePrefix)+len(name)], name) {
		t.Fatalf("splitTarget(%q): name %q is not the segment after the prefix", target, name)
	}
}
