package telemetry

import (
	"bytes"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/scoregate/scoregate/config"
)

// Credential-shaped stand-ins: a service key, a principal key and a JWT, each with a canary.
const (
	canaryServiceKey   = "sgk_CANARYf7id01_CANARYf7secretCANARYf7secretCANARYf7secret0ABCDE"
	canaryPrincipalKey = "sgp_CANARYf7id02_CANARYf7secretCANARYf7secretCANARYf7secret1ABCDE"
	canaryJWT          = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJDQU5BUllmNyJ9.CANARYf7signature"
)

func TestRedactTarget(t *testing.T) {
	key, pkey, jwt := canaryServiceKey, canaryPrincipalKey, canaryJWT
	for _, tc := range []struct{ name, in, want string }{
		{"innocent path", "/api/v1/service/iris/score", "/api/v1/service/iris/score"},
		{"innocent path and query", "/api/v1/service/iris/score?version=2&x=a%20b", "/api/v1/service/iris/score?version=2&x=a%20b"},
		{"innocent percent-encoding", "/api/v1/service/iris/a%2Fb%5Fc", "/api/v1/service/iris/a%2Fb%5Fc"},
		{"innocent near misses", "/sgk/sg_k/SGK_x/eyj/EYJ/sgk%5/%/%zz?sgk=1&eyj", "/sgk/sg_k/SGK_x/eyj/EYJ/sgk%5/%/%zz?sgk=1&eyj"},
		{"the start of a JWT percent-encoded", "/ey%4Ax", "/REDACTED"},
		{"words with eyJ inside", "/keyJson/surveyJob/heyJude?q=journeyJ", "/keyJson/surveyJob/heyJude?q=journeyJ"},
		{"a JWT after a separator inside a segment", "/x.eyJhbGciOiJub25lIn0.e30.", "/REDACTED"},
		{"a JWT after an encoded space", "/Bearer%20eyJhbGciOiJub25lIn0.e30.", "/REDACTED"},
		{"root", "/", "/"},
		{"empty", "", ""},
		{"key as the first segment", "/" + key + "/score", "/REDACTED/score"},
		{"key in the middle", "/api/v1/service/iris/" + key + "/score", "/api/v1/service/iris/REDACTED/score"},
		{"key at the end", "/api/v1/service/iris/" + key, "/api/v1/service/iris/REDACTED"},
		{"key inside a segment", "/api/v1/service/iris/x-" + key + ".json", "/api/v1/service/iris/REDACTED"},
		{"key after a trailing slash", "/api/v1/service/iris/" + key + "/", "/api/v1/service/iris/REDACTED/"},
		{"principal key", "/api/v1/service/iris/" + pkey, "/api/v1/service/iris/REDACTED"},
		{"key with its prefix percent-encoded", "/api/v1/service/iris/sgk%5F" + key[4:], "/api/v1/service/iris/REDACTED"},
		{"key with its prefix percent-encoded in lower case", "/api/v1/service/iris/%73%67%6b%5f" + key[4:], "/api/v1/service/iris/REDACTED"},
		{"key behind an encoded slash", "/api/v1/service/iris/a%2F" + key, "/api/v1/service/iris/REDACTED"},
		{"key in a path parameter", "/api/v1/service/iris/score;k=" + key, "/api/v1/service/iris/REDACTED"},
		{"key in a fragment", "/api/v1/service/iris/score#" + key, "/api/v1/service/iris/REDACTED"},
		{"key as a query value", "/api/v1/service/iris/score?x=1&k=" + key + "&y=2", "/api/v1/service/iris/score?x=1&k=REDACTED&y=2"},
		{"key as a bare query parameter", "/api/v1/service/iris/score?" + key, "/api/v1/service/iris/score?REDACTED"},
		{"key as a query name", "/api/v1/service/iris/score?" + key + "=1&y=2", "/api/v1/service/iris/score?REDACTED&y=2"},
		{"key percent-encoded in a query value", "/x?k=sgk%5f" + key[4:], "/x?k=REDACTED"},
		{"key in a query value's fragment", "/x?y=2#" + key, "/x?y=REDACTED"},
		{"JWT in the path", "/api/v1/service/iris/" + jwt + "/score", "/api/v1/service/iris/REDACTED/score"},
		{"JWT in the query", "/api/v1/service/iris/score?access_token=" + jwt, "/api/v1/service/iris/score?access_token=REDACTED"},
		{"JWT with its header percent-encoded", "/api/v1/service/iris/%65%79%4A" + jwt[3:], "/api/v1/service/iris/REDACTED"},
		{"everywhere at once", "/" + key + "/" + jwt + "?" + pkey + "&a=" + jwt, "/REDACTED/REDACTED?REDACTED&a=REDACTED"},
		{"an empty segment and query parameter kept", "//a/" + key + "?&a=1&&b=" + key + "&", "//a/REDACTED?&a=1&&b=REDACTED&"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendRedactedTarget([]byte("kept:"), []byte(tc.in)))
			if got != "kept:"+tc.want {
				t.Errorf("appendRedactedTarget(%q)\n got %q\nwant %q", tc.in, got, "kept:"+tc.want)
			}
		})
	}
}

// Redaction costs a clean target no allocation, nor a redacted one written into a buffer with room.
func TestRedactTargetAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	for _, target := range []string{
		"/api/v1/service/iris/score?version=2&x=1",
		"/api/v1/service/iris/a%20b?x=a%2Cb",
		"/api/v1/service/iris/" + canaryServiceKey + "?k=" + canaryJWT,
	} {
		b := []byte(target)
		if n := testing.AllocsPerRun(100, func() { buf = appendRedactedTarget(buf[:0], b) }); n != 0 {
			t.Errorf("appendRedactedTarget(%q) allocates %v times", target, n)
		}
	}
}

// Issue 17, finding 7: a key or a JWT that a client put in the URL (in the path, a query name or
// value, percent-encoded or not), in Host or in the User-Agent, or in a gRPC call's service or
// method name, reaches no span attribute, access-log line or metric.
func TestCredentialInTheURLIsNeverRecorded(t *testing.T) {
	var log accessLog
	tel, mem := newTel(t, func(c *config.Config) { c.Telemetry.AccessLog = true }, Options{AccessLog: log.logger()})
	key, pkey, jwt := canaryServiceKey, canaryPrincipalKey, canaryJWT
	cases := []struct {
		name, target, host, userAgent string
		rpcService, rpcMethod         string
		wantPath, wantQuery           string
	}{
		{name: "key in the path, refused", target: "/api/v1/service/iris/" + key,
			wantPath: "/api/v1/service/iris/REDACTED"},
		{name: "principal key and JWT in the path", target: "/api/v1/service/iris/" + pkey + "/" + jwt + "/score?x=1",
			wantPath: "/api/v1/service/iris/REDACTED/REDACTED/score", wantQuery: "x=1"},
		{name: "percent-encoded prefix", target: "/api/v1/service/iris/sgk%5F" + key[4:] + "?v=2",
			wantPath: "/api/v1/service/iris/REDACTED", wantQuery: "v=2"},
		{name: "key as a query name, JWT as a value", target: "/api/v1/service/iris/score?" + key + "=1&t=" + jwt,
			wantPath: "/api/v1/service/iris/score", wantQuery: "REDACTED&t=REDACTED"},
		{name: "key in Host and User-Agent", target: "/api/v1/service/iris/score", host: key + ".gw.test", userAgent: "client/1 " + jwt,
			wantPath: "/api/v1/service/iris/score"},
		{name: "gRPC method path", target: "/" + pkey + "/" + key, rpcService: pkey, rpcMethod: key,
			wantPath: "/REDACTED/REDACTED"},
	}
	for i, c := range cases {
		host := c.host
		if host == "" {
			host = "gw.test"
		}
		rec := tel.Begin()
		rec.SetRequest([]byte("POST"), []byte(c.target), []byte(c.userAgent), []byte(host), []byte(testClient), nil, nil)
		rec.SetRequestID([]byte(fmt.Sprint("f7-", i)))
		rec.Service, rec.Auth, rec.Reason = "iris", config.AuthKey, "invalid_credential"
		rec.RPCService, rec.RPCMethod = c.rpcService, c.rpcMethod
		rec.End(401)
	}
	shutdown(t, tel)
	spans := spansByID(t, mem.GetSpans())
	lines := log.lines(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprint("f7-", i)
			a := attrs(spans[id].Attributes)
			checkEqual(t, "url.path", any(c.wantPath), a["url.path"])
			checkEqual(t, "access log path", any(c.wantPath), lines[id]["path"])
			if c.wantQuery != "" {
				checkEqual(t, "url.query", any(c.wantQuery), a["url.query"])
				checkEqual(t, "access log query", any(c.wantQuery), lines[id]["query"])
			}
			if c.rpcService != "" {
				checkEqual(t, "rpc.service", any("REDACTED"), a["rpc.service"])
				checkEqual(t, "rpc.method", any("REDACTED"), a["rpc.method"])
			}
			for k, v := range a {
				if s := fmt.Sprint(v); strings.Contains(s, "CANARY") {
					t.Errorf("span attribute %s=%q", k, s)
				}
			}
			for k, v := range lines[id] {
				if s := fmt.Sprint(v); strings.Contains(s, "CANARY") {
					t.Errorf("access log %s=%q", k, s)
				}
			}
		})
	}
	rr := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	metrics, _ := io.ReadAll(rr.Body)
	if !bytes.Contains(metrics, []byte(`service="iris"`)) {
		t.Fatalf("/metrics has no series of the requests; the search would prove nothing:\n%s", metrics)
	}
	if bytes.Contains(metrics, []byte("CANARY")) {
		t.Errorf("/metrics carries a canary:\n%s", metrics)
	}
}

// boundedString keeps a value fit to record as it is, and otherwise redacts it, cuts it at a rune
// boundary or mends its UTF-8, within maxValueLen bytes.
func TestBoundedString(t *testing.T) {
	long := strings.Repeat("a", maxValueLen)
	for _, c := range []struct{ name, in, want string }{
		{"empty", "", ""},
		{"a model name, kept", "gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"},
		{"exactly the limit, kept", long, long},
		{"a key anywhere", "my-model-" + canaryServiceKey, "REDACTED"},
		{"a JWT", canaryJWT, "REDACTED"},
		{"a principal key, percent-encoded", "sgp%5Fx", "REDACTED"},
		{"one byte too long", long + "b", long},
		{"cut within a rune: before it", long[:maxValueLen-1] + "é", long[:maxValueLen-1]},
		{"cut within a four-byte rune", long[:maxValueLen-2] + "😀", long[:maxValueLen-2]},
		{"invalid UTF-8, mended", "m\xff\xfeodel", "m\uFFFDodel"},
		{"mended past the limit, cut again", strings.Repeat("\xffa", maxValueLen/2), strings.Repeat("\uFFFDa", maxValueLen/4)},
		{"continuation bytes only", strings.Repeat("\x80", 2*maxValueLen), "\uFFFD"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := boundedString(c.in)
			if got != c.want {
				t.Errorf("boundedString(%q) = %q, want %q", c.in, got, c.want)
			}
			if len(got) > maxValueLen || !utf8.ValidString(got) {
				t.Errorf("boundedString(%q): %d bytes, valid UTF-8 %v", c.in, len(got), utf8.ValidString(got))
			}
		})
	}
}
