package proxy_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// mutate changes the base62 character at i of key into another base62 character.
func mutate(key string, i int) string {
	b := []byte(key)
	b[i] = base62[(strings.IndexByte(base62, b[i])+1)%len(base62)]
	return string(b)
}

// Layout of a service key: "sgk_" id(12) "_" secret(43) checksum(6).
const (
	keyIDAt     = 4
	keySecretAt = 17
)

// TestAPIKeys is the threat model's KEY section (docs/threat-model.md) at the gateway: which
// Authorization headers let a request through to the model, and that every refused one leaves
// the model untouched (U0).
func TestAPIKeys(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := e.primary
	const score = "/api/v1/service/iris/score"
	get := func(lines ...string) string { return request("GET", score, lines...) }
	auth := func(v string) string { return "Authorization: " + v }
	basic := func(user, pass string) string {
		return auth("Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	}
	firstLetter := keySecretAt + strings.IndexAny(k[keySecretAt:], "abcdefghijklmnopqrstuvwxyz")

	tests := []struct {
		name      string
		raw       string
		status    int    // 200: accepted and forwarded
		challenge string // for 401
	}{
		// Accepted.
		{"contract: Bearer primary", get(bearer(k)), 200, ""},
		{"contract: Bearer secondary", get(bearer(e.secondary)), 200, ""},
		{"JWT-46 scheme is case-insensitive: bearer", get(auth("bearer " + k)), 200, ""},
		{"JWT-46 scheme is case-insensitive: BEARER", get(auth("BEARER " + k)), 200, ""},
		// Whitespace before and after a field value is not part of it (RFC 9110 §5.5): every HTTP
		// parser drops it, so it cannot make a different key match.
		{"KEY-12 trailing space on the line is OWS, not part of the key", get(bearer(k + " ")), 200, ""},
		{"KEY-12 trailing tab on the line is OWS, not part of the key", get(bearer(k + "\t")), 200, ""},
		{"leading OWS before the scheme", get("Authorization: \t Bearer " + k), 200, ""},

		// KEY-01 missing.
		{"KEY-01 no credential", get(), 401, challenge},
		{"KEY-01 empty Authorization header", get("Authorization:"), 401, challenge},

		// KEY-03 format and checksum, decided without a lookup.
		{"KEY-03 wrong prefix: principal key prefix", get(bearer("sgp_" + k[4:])), 401, challengeInvalid},
		{"KEY-03 wrong prefix: gwk_", get(bearer("gwk_" + k[4:])), 401, challengeInvalid},
		{"KEY-03 wrong prefix: none", get(bearer(k[4:])), 401, challengeInvalid},
		{"KEY-03 wrong length: one character more", get(bearer(k + "A")), 401, challengeInvalid},
		{"KEY-03 wrong length: truncated by one", get(bearer(k[:len(k)-1])), 401, challengeInvalid},
		{"KEY-03 wrong length: truncated to the id", get(bearer(k[:keySecretAt])), 401, challengeInvalid},
		{"KEY-03 wrong length: key twice", get(bearer(k + k)), 401, challengeInvalid},
		{"KEY-03 bad CRC: one id character changed", get(bearer(mutate(k, keyIDAt+3))), 401, challengeInvalid},
		{"KEY-03 bad CRC: one secret character changed", get(bearer(mutate(k, keySecretAt+10))), 401, challengeInvalid},
		{"KEY-03 bad CRC: last checksum character changed", get(bearer(mutate(k, len(k)-1))), 401, challengeInvalid},
		{"KEY-03 non-base62 '-' in the secret", get(bearer(k[:30] + "-" + k[31:])), 401, challengeInvalid},
		{"KEY-03 non-base62 '~' in the secret", get(bearer(k[:30] + "~" + k[31:])), 401, challengeInvalid},
		{"KEY-03 non-base62 '+' in the checksum", get(bearer(k[:len(k)-2] + "+" + k[len(k)-1:])), 401, challengeInvalid},
		{"KEY-03 non-base62 '/' in the id", get(bearer(k[:6] + "/" + k[7:])), 401, challengeInvalid},
		{"KEY-03 non-base62 '.' as separator", get(bearer(k[:keySecretAt-1] + "." + k[keySecretAt:])), 401, challengeInvalid},
		{"KEY-03 padding appended", get(bearer(k + "==")), 401, challengeInvalid},

		// KEY-12 no normalisation that merges keys.
		{"KEY-12 prefix case changed", get(bearer("SGK_" + k[4:])), 401, challengeInvalid},
		{"KEY-12 whole key upper-cased", get(bearer(strings.ToUpper(k))), 401, challengeInvalid},
		{"KEY-12 whole key lower-cased", get(bearer(strings.ToLower(k))), 401, challengeInvalid},
		{"KEY-12 one letter's case flipped", get(bearer(k[:firstLetter] + strings.ToUpper(k[firstLetter:firstLetter+1]) + k[firstLetter+1:])), 401, challengeInvalid},
		{"KEY-12 %-encoded separators", get(bearer(strings.ReplaceAll(k, "_", "%5F"))), 401, challengeInvalid},
		{"KEY-12 %-encoded first character", get(bearer("%73" + k[1:])), 401, challengeInvalid},
		{"KEY-12 literal %00 suffix", get(bearer(k + "%00")), 401, challengeInvalid},
		{"KEY-12 Unicode confusable: Cyrillic a", get(bearer(k[:firstLetter] + "\u0430" + k[firstLetter+1:])), 401, challengeInvalid},
		{"KEY-12 Unicode confusable: fullwidth prefix", get(bearer("\uff53gk_" + k[4:])), 401, challengeInvalid},
		{"KEY-12 NBSP suffix is obs-text, not OWS", get(bearer(k + "\u00a0")), 401, challengeInvalid},
		{"KEY-12 zero-width space suffix", get(bearer(k + "\u200b")), 401, challengeInvalid},
		{"KEY-12 space then more text", get(bearer(k + " x")), 401, challengeInvalid},
		{"KEY-12 tab then more text", get(bearer(k + "\tx")), 401, challengeInvalid},
		{"KEY-12 comma suffix", get(bearer(k + ",")), 401, challengeInvalid},
		{"KEY-12 quoted key", get(bearer(`"` + k + `"`)), 401, challengeInvalid},

		// Other services' keys and other schemes.
		{"key of another service", get(bearer(e.otherKey)), 401, challengeInvalid},
		{"iris key on service other", request("GET", "/api/v1/service/other/score", bearer(k)), 401, challengeInvalid},
		{"Bearer with no value", get(auth("Bearer")), 401, challengeInvalid},
		{"Bearer and a space, no value", get(auth("Bearer ")), 401, challengeInvalid},
		{"key without a scheme", get(auth(k)), 401, challengeInvalid},
		{"Basic auth with the key as password", get(basic("", k)), 401, challengeInvalid},
		{"Basic auth with the key as user", get(basic(k, "")), 401, challengeInvalid},
		{"Token scheme", get(auth("Token " + k)), 401, challengeInvalid},
		{"ApiKey scheme", get(auth("ApiKey " + k)), 401, challengeInvalid},
		{"JWT-46 scheme glued to the key", get(auth("Bearer" + k)), 401, challengeInvalid},
		{"JWT-46 two spaces after the scheme", get(auth("Bearer  " + k)), 401, challengeInvalid},
		{"JWT-46 tab after the scheme", get(auth("Bearer\t" + k)), 401, challengeInvalid},
		{"JWT-46 two credentials in one header", get(auth("Bearer " + k + ", Bearer " + e.secondary)), 401, challengeInvalid},
		{"JWT-46 scheme with a trailing colon", get(auth("Bearer: " + k)), 401, challengeInvalid},

		// KEY-07 duplicates: never "first wins".
		{"KEY-07 same key in two Authorization headers", get(bearer(k), bearer(k)), 400, ""},
		{"KEY-07 primary and secondary in two headers", get(bearer(k), bearer(e.secondary)), 400, ""},
		{"KEY-07 valid then invalid", get(bearer(k), bearer("nope")), 400, ""},
		{"KEY-07 invalid then valid", get(bearer("nope"), bearer(k)), 400, ""},
		{"KEY-07 valid then empty", get(bearer(k), "Authorization:"), 400, ""},
		{"KEY-07 different header-name case", get(bearer(k), "authorization: Bearer "+k), 400, ""},

		// A credential anywhere but the Authorization header counts for nothing.
		{"key only in the query: key", request("GET", score+"?key="+k), 401, challenge},
		{"key only in the query: api-key", request("GET", score+"?api-key="+k), 401, challenge},
		{"key only in the query: apikey", request("GET", score+"?x=1&apikey="+k), 401, challenge},
		{"key only in the query: access_token", request("GET", score+"?access_token="+k), 401, challenge},
		{"key only in the query: code", request("GET", score+"?code="+k), 401, challenge},
		{"key only in X-Api-Key", get("X-Api-Key: " + k), 401, challenge},
		{"key only in api-key (Azure header)", get("api-key: " + k), 401, challenge},
		{"key only in Proxy-Authorization", get("Proxy-Authorization: Bearer " + k), 401, challenge},
		{"key only in a cookie", get("Cookie: access_token=" + k), 401, challenge},
		{"key only in a form body", request("POST", score, "Content-Type: application/x-www-form-urlencoded",
			"Content-Length: "+strconv.Itoa(len("access_token="+k))) + "access_token=" + k, 401, challenge},
		{"key only in a chunked trailer that is not Authorization", request("POST", score, "Transfer-Encoding: chunked", "Trailer: X-Api-Key") +
			"2\r\n{}\r\n0\r\nX-Api-Key: " + k + "\r\n\r\n", 401, challenge},
		// An Authorization trailer is refused by the HTTP parser itself.
		{"key only in an Authorization trailer", request("POST", score, "Transfer-Encoding: chunked", "Trailer: Authorization") +
			"2\r\n{}\r\n0\r\nAuthorization: Bearer " + k + "\r\n\r\n", 400, ""},
		// Control bytes in a header value are refused by the parser (HTTP-35), before authn.
		{"KEY-12 NUL suffix", get(bearer(k + "\x00")), 400, ""},
		{"KEY-12 vertical tab suffix", get(bearer(k + "\x0b")), 400, ""},
		{"KEY-12 bare CR inside the key", get(bearer(k[:20] + "\r" + k[20:])), 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, tc.raw)
			switch tc.status {
			case 200:
				if r.Status != 200 {
					t.Fatalf("status %d %s, want 200", r.Status, r.Body)
				}
				seen := e.up.requireOne(t)
				if seen.has("Authorization") || seen.has("Proxy-Authorization") {
					t.Errorf("KEY-09 the model saw a credential: %q", seen.Header)
				}
			case 401:
				checkError(t, r, 401, "Unauthorized", tc.challenge)
				e.up.requireNone(t)
			default:
				checkError(t, r, tc.status, "BadRequest", "")
				e.up.requireNone(t)
			}
			if strings.Contains(string(r.Body), k[keySecretAt:keySecretAt+8]) {
				t.Errorf("L0 the response quotes the key: %s", r.Body)
			}
		})
	}
}

// TestSmuggling is HTTP-01/02/10: a request that carries both Content-Length and
// Transfer-Encoding, or hides a second request in its body, never gets that second request past
// the gateway, and the model never sees both framing headers.
func TestSmuggling(t *testing.T) {
	e := newEnv(t, envOptions{})
	// The hidden request targets the auth-none service: if the gateway ever parsed it as a
	// request, it would reach the model.
	const smuggled = "GET /api/v1/service/open/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"
	chunkedSmuggle := "0\r\n\r\n" + smuggled
	cl := "Content-Length: " + strconv.Itoa(len(chunkedSmuggle))
	post := "POST /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\n"
	authLine := bearer(e.primary) + "\r\n"
	tests := []struct {
		name string
		raw  string
	}{
		{"HTTP-01 CL.TE with a key", post + authLine + cl + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedSmuggle},
		{"HTTP-01 CL.TE without a key", post + cl + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedSmuggle},
		{"HTTP-02 TE.CL order", post + authLine + "Transfer-Encoding: chunked\r\n" + cl + "\r\n\r\n" + chunkedSmuggle},
		{"HTTP-02 TE in mixed case", post + authLine + cl + "\r\ntransfer-ENCODING: Chunked\r\n\r\n" + chunkedSmuggle},
		{"HTTP-02 short Content-Length with chunked", post + authLine + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedSmuggle},
		{"HTTP-04 TE with a space before the colon", post + authLine + cl + "\r\nTransfer-Encoding : chunked\r\n\r\n" + chunkedSmuggle},
		{"HTTP-04 TE header folded", post + authLine + cl + "\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" + chunkedSmuggle},
		{"HTTP-04 TE value with a vertical tab", post + authLine + cl + "\r\nTransfer-Encoding: chunked\x0b\r\n\r\n" + chunkedSmuggle},
		{"HTTP-04 TE name with a leading space line", post + authLine + cl + "\r\n Transfer-Encoding: chunked\r\n\r\n" + chunkedSmuggle},
		{"HTTP-10 unauthenticated CL body holds an authenticated request",
			post + "Content-Length: " + strconv.Itoa(len(request("GET", "/api/v1/service/iris/smuggled", bearer(e.primary)))) + "\r\n\r\n" +
				request("GET", "/api/v1/service/iris/smuggled", bearer(e.primary))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			resps := e.exchange(t, tc.raw)
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want exactly one: %s", len(resps), describe(resps))
			}
			r := resps[0]
			t.Logf("answered %d %s", r.Status, r.Body)
			switch r.Status {
			case 400, 401: // issue 17 finding 9: both framing headers are refused, never read as chunked
			default:
				t.Errorf("status %d %s, want 400 or 401", r.Status, r.Body)
			}
			for _, seen := range e.up.requests() {
				if strings.Contains(seen.Target, "smuggled") {
					t.Errorf("the model saw the hidden request %s", seen.Target)
				}
				if seen.has("Content-Length") && seen.has("Transfer-Encoding") {
					t.Errorf("the model saw both Content-Length and Transfer-Encoding: %q", seen.Header)
				}
				if seen.has("Transfer-Encoding") {
					t.Errorf("the model saw Transfer-Encoding %q", seen.values("Transfer-Encoding"))
				}
			}
			if len(e.up.requests()) > 1 {
				t.Errorf("the model saw %d requests, want at most 1", len(e.up.requests()))
			}
		})
	}
}

// TestFramingRefused covers request framing the gateway must refuse outright (400, U0).
func TestFramingRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	head := "POST /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\n" + bearer(e.primary) + "\r\n"
	const chunked = "5\r\nhello\r\n0\r\n\r\n"
	tests := []struct {
		name string
		raw  string
	}{
		{"HTTP-05 TE chunked, chunked", head + "Transfer-Encoding: chunked, chunked\r\n\r\n" + chunked},
		{"HTTP-05 TE gzip, chunked", head + "Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked},
		{"HTTP-05 TE chunked, gzip", head + "Transfer-Encoding: chunked, gzip\r\n\r\n" + chunked},
		{"HTTP-05 TE gzip", head + "Transfer-Encoding: gzip\r\n\r\n" + chunked},
		{"HTTP-05 TE identity", head + "Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello"},
		{"HTTP-05 TE identity alone", head + "Transfer-Encoding: identity\r\n\r\n"},
		{"HTTP-05 two TE lines", head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked},
		{"HTTP-05 TE on HTTP/1.0", strings.Replace(head, "HTTP/1.1", "HTTP/1.0", 1) + "Transfer-Encoding: chunked\r\n\r\n" + chunked},
		{"HTTP-07 chunk size 0x5", head + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"},
		{"HTTP-07 chunk size +5", head + "Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"},
		{"HTTP-07 chunk size with 17 hex digits", head + "Transfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n"},
		{"HTTP-07 no CRLF after chunk data", head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"},
		{"HTTP-07 LF inside a chunk extension", head + "Transfer-Encoding: chunked\r\n\r\n5;\nX\r\nhello\r\n0\r\n\r\n"},
		{"HTTP-08 CL +5", head + "Content-Length: +5\r\n\r\nhello"},
		{"HTTP-08 CL -1", head + "Content-Length: -1\r\n\r\nhello"},
		{"HTTP-08 CL 0x5", head + "Content-Length: 0x5\r\n\r\nhello"},
		{"HTTP-08 CL 1e3", head + "Content-Length: 1e3\r\n\r\nhello"},
		{"HTTP-08 CL 5.0", head + "Content-Length: 5.0\r\n\r\nhello"},
		{"HTTP-08 CL 2^64", head + "Content-Length: 18446744073709551616\r\n\r\nhello"},
		{"HTTP-08 CL 2^64+5 wraps to 5", head + "Content-Length: 18446744073709551621\r\n\r\nhello"},
		{"HTTP-08 CL list 5,5", head + "Content-Length: 5,5\r\n\r\nhello"},
		{"HTTP-08 CL list 5, 5", head + "Content-Length: 5, 5\r\n\r\nhello"},
		{"HTTP-08 CL 5 5", head + "Content-Length: 5 5\r\n\r\nhello"},
		{"HTTP-08 CL empty", head + "Content-Length:\r\n\r\nhello"},
		{"HTTP-08 two equal CL lines", head + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"},
		{"HTTP-08 two different CL lines", head + "Content-Length: 5\r\nContent-Length: 4\r\n\r\nhello"},
	}
	// A request follows each one on the connection: the gateway must close after the 400 (C),
	// so it is never answered, and never reaches the model.
	after := request("GET", "/api/v1/service/open/after")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			resps := e.exchange(t, tc.raw+after)
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want one 400 and the connection closed: %s", len(resps), describe(resps))
			}
			checkError(t, resps[0], 400, "BadRequest", "")
			e.up.requireNone(t)
		})
	}

	// Whitespace around a field value is not part of it (RFC 9110 §5.5), so these are a plain
	// Content-Length: 5 for every parser, and are forwarded as such.
	for _, v := range []string{"Content-Length:  5", "Content-Length: 5 ", "Content-Length:\t5\t"} {
		t.Run("HTTP-08 OWS around the value is read as 5: "+strconv.Quote(v), func(t *testing.T) {
			e.up.reset()
			r := e.do(t, head+v+"\r\n\r\nhello")
			if r.Status != 200 {
				t.Fatalf("status %d %s", r.Status, r.Body)
			}
			seen := e.up.requireOne(t)
			checkEqual(t, "the model's body", "hello", string(seen.Body))
			checkEqual(t, "the model's Content-Length", []string{"5"}, seen.values("Content-Length"))
		})
	}
}

// TestPipelining is HTTP-11: requests in one packet are authenticated one by one, answered in
// order, and only the authenticated ones reach the model.
func TestPipelining(t *testing.T) {
	e := newEnv(t, envOptions{})
	const score = "/api/v1/service/iris/score"
	post := func(target, body string, lines ...string) string {
		return request("POST", target, append(lines, "Content-Length: "+strconv.Itoa(len(body)))...) + body
	}
	tests := []struct {
		name    string
		raw     string
		status  []int
		targets []string
	}{
		{"HTTP-11 authenticated then unauthenticated",
			request("GET", score+"?n=1", bearer(e.primary)) + request("GET", score+"?n=2"),
			[]int{200, 401}, []string{"/score?n=1"}},
		{"HTTP-11 unauthenticated then authenticated",
			request("GET", score+"?n=1") + request("GET", score+"?n=2", bearer(e.primary)),
			[]int{401, 200}, []string{"/score?n=2"}},
		{"HTTP-11 a wrong key between two good ones",
			request("GET", score+"?n=1", bearer(e.primary)) + request("GET", score+"?n=2", bearer(e.otherKey)) +
				request("GET", score+"?n=3", bearer(e.secondary)),
			[]int{200, 401, 200}, []string{"/score?n=1", "/score?n=3"}},
		{"HTTP-11 bodies do not leak into the next request",
			post(score+"?n=1", `{"a":1}`, bearer(e.primary)) + post(score+"?n=2", `{"b":2}`),
			[]int{200, 401}, []string{"/score?n=1"}},
		{"HTTP-11 credential does not carry over to the next request on the connection",
			request("GET", score+"?n=1", bearer(e.primary)) + request("GET", "/api/v1/service/other/score?n=2") +
				request("GET", "/api/v1/service/open/score?n=3"),
			[]int{200, 401, 200}, []string{"/score?n=1", "/score?n=3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			resps := e.exchange(t, tc.raw)
			var status []int
			for _, r := range resps {
				status = append(status, r.Status)
			}
			checkEqual(t, "response statuses in order", tc.status, status)
			var targets []string
			for _, seen := range e.up.requests() {
				targets = append(targets, seen.Target)
				if seen.has("Authorization") {
					t.Errorf("the model saw Authorization on %s", seen.Target)
				}
			}
			checkEqual(t, "targets the model saw", tc.targets, targets)
		})
	}
}

// TestMalformedRequests covers request lines and header blocks the gateway must refuse with 400
// without any model seeing them: HTTP-23, HTTP-35, HTTP-37.
func TestMalformedRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	const target = "/api/v1/service/iris/score"
	authLine := bearer(e.primary) + "\r\n"
	tests := []struct {
		name string
		raw  string
	}{
		{"HTTP-23 no Host on HTTP/1.1", "GET " + target + " HTTP/1.1\r\n" + authLine + "\r\n"},
		{"HTTP-23 two Host lines", "GET " + target + " HTTP/1.1\r\nHost: gw.test\r\nHost: evil.test\r\n" + authLine + "\r\n"},
		{"HTTP-23 two Host lines differing in case", "GET " + target + " HTTP/1.1\r\nHost: gw.test\r\nhost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-23 empty Host on HTTP/1.1", request("GET", target, "Host:", bearer(e.primary))},
		{"HTTP-23 Host with a space", request("GET", target, "Host: a b", bearer(e.primary))},
		{"HTTP-23 Host with two ports", request("GET", target, "Host: x:1:2", bearer(e.primary))},
		{"HTTP-23 Host with a bad port", request("GET", target, "Host: x:port", bearer(e.primary))},
		{"HTTP-23 Host with an open IPv6 bracket", request("GET", target, "Host: [::1", bearer(e.primary))},
		{"HTTP-23 Host with a comma", request("GET", target, "Host: a,b", bearer(e.primary))},
		{"HTTP-23 Host with userinfo", request("GET", target, "Host: user@gw.test", bearer(e.primary))},
		{"HTTP-23 Host with a path", request("GET", target, "Host: gw.test/x", bearer(e.primary))},
		{"HTTP-23 Host with non-ASCII", request("GET", target, "Host: g\xc3\xa9.test", bearer(e.primary))},
		{"HTTP-23 Host with a quote", request("GET", target, "Host: gw.test\"", bearer(e.primary))},
		{"HTTP-35 NUL in a header value", request("GET", target, bearer(e.primary), "X-Foo: a\x00b")},
		{"HTTP-35 bare CR in a header value", request("GET", target, bearer(e.primary), "X-Foo: a\rb")},
		{"HTTP-35 bare CR in a header name", request("GET", target, bearer(e.primary), "X-F\roo: a")},
		{"HTTP-35 NUL in a header name", request("GET", target, bearer(e.primary), "X-F\x00oo: a")},
		{"HTTP-35 DEL in a header value", request("GET", target, bearer(e.primary), "X-Foo: a\x7fb")},
		{"HTTP-35 escape byte in a header value", request("GET", target, bearer(e.primary), "X-Foo: a\x1bb")},
		{"HTTP-37 two spaces before the target", "GET  " + target + " HTTP/1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 two spaces after the target", "GET " + target + "  HTTP/1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 trailing space after the version", "GET " + target + " HTTP/1.1 \r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 tab after the method", "GET\t" + target + " HTTP/1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 tab before the version", "GET " + target + "\tHTTP/1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 leading space on the request line", " GET " + target + " HTTP/1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 lower-case version", "GET " + target + " http/1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 bad version", "GET " + target + " HTTP/1.1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 no version", "GET " + target + "\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-37 method with a bad byte", "G(T " + target + " HTTP/1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-04 header line starting with a space", "GET " + target + " HTTP/1.1\r\n X-Foo: a\r\nHost: gw.test\r\n" + authLine + "\r\n"},
		{"HTTP-19 header name with '('", request("GET", target, bearer(e.primary), "X(Foo: a")},
		{"HTTP-19 header name with '@'", request("GET", target, bearer(e.primary), "X@Foo: a")},
		{"HTTP-19 header name with a non-ASCII byte", request("GET", target, bearer(e.primary), "X\xc3\xa9: a")},
		{"HTTP-19 header name with a space before the colon", request("GET", target, bearer(e.primary), "X-Foo : a")},
		{"header line without a colon", request("GET", target, bearer(e.primary), "X-Foo")},
		{"header line with an empty name", request("GET", target, bearer(e.primary), ": a")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			resps := e.exchange(t, tc.raw)
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want one 400: %s", len(resps), describe(resps))
			}
			checkError(t, resps[0], 400, "BadRequest", "")
			e.up.requireNone(t)
		})
	}
}

// TestRequestTarget covers request-target forms and path encodings: HTTP-25, 26, 28, 29, 31.
// Each is refused before authentication matters, with a valid key sent, and no model is touched.
func TestRequestTarget(t *testing.T) {
	e := newEnv(t, envOptions{})
	bait := newRecorder(t, nil) // a host that an absolute-form or CONNECT target names
	authLine := bearer(e.primary) + "\r\n"
	line := func(method, target string) string {
		return method + " " + target + " HTTP/1.1\r\nHost: gw.test\r\n" + authLine + "\r\n"
	}
	const svc = "/api/v1/service/iris/"
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"HTTP-25 absolute-form to a metadata address", line("GET", "http://169.254.169.254/latest/meta-data/"), 400},
		{"HTTP-25 absolute-form naming a reachable host", line("GET", "http://"+bait.addr+"/api/v1/service/open/score"), 400},
		{"HTTP-25 absolute-form naming the gateway's own route", line("GET", "http://gw.test"+svc+"score"), 400},
		{"HTTP-25 authority-form on GET", line("GET", bait.addr), 400},
		{"HTTP-25 CONNECT to a reachable host", "CONNECT " + bait.addr + " HTTP/1.1\r\nHost: " + bait.addr + "\r\n" + authLine + "\r\n", 400},
		{"HTTP-25 asterisk-form on GET", line("GET", "*"), 400},
		{"HTTP-25 asterisk-form on OPTIONS", line("OPTIONS", "*"), 400},
		{"HTTP-25 OPTIONS */x", line("OPTIONS", "*/x"), 400},
		{"HTTP-25 relative target", line("GET", "admin"), 400},
		{"HTTP-25 relative service path", line("GET", "api/v1/service/iris/score"), 400},
		{"HTTP-14 HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400},

		{"HTTP-26 lone percent", line("GET", svc+"x%"), 400},
		{"HTTP-26 percent and one digit", line("GET", svc+"x%1"), 400},
		{"HTTP-26 percent and non-hex", line("GET", svc+"x%zz"), 400},
		{"HTTP-26 double percent", line("GET", svc+"x%%41"), 400},
		{"HTTP-26 raw space in the path", line("GET", svc+"a b"), 400},
		{"HTTP-26 raw STX in the path", line("GET", svc+"a\x02b"), 400},
		{"HTTP-26 raw DEL in the path", line("GET", svc+"a\x7fb"), 400},
		{"HTTP-26 raw non-ASCII in the path", line("GET", svc+"caf\xc3\xa9"), 400},
		{"HTTP-26 raw backslash in the path", line("GET", svc+`..\admin`), 400},
		{"HTTP-26 raw quote in the path", line("GET", svc+`a"b`), 400},
		{"HTTP-26 raw angle brackets in the path", line("GET", svc+"<script>"), 400},
		{"HTTP-26 raw pipe, caret, backtick, braces", line("GET", svc+"a|b^c`d{e}"), 400},
		{"HTTP-26 bad percent in the query", line("GET", svc+"score?q=%"), 400},
		{"HTTP-26 non-hex percent in the query", line("GET", svc+"score?q=%G1"), 400},
		{"HTTP-26 raw STX in the query", line("GET", svc+"score?q=\x02"), 400},
		{"HTTP-26 raw non-ASCII in the query", line("GET", svc+"score?q=\xff"), 400},
		{"HTTP-26 raw angle brackets in the query", line("GET", svc+"score?q=<x>"), 400},

		{"HTTP-28 dot-dot with a parameter", line("GET", svc+"..;foo=bar/admin"), 400},
		{"HTTP-28 dot-dot into another service", line("GET", svc+"../other/score"), 400},
		{"HTTP-28 dot-dot before the service name", line("GET", "/api/v1/service/../service/iris/score"), 400},
		{"HTTP-28 dot segment", line("GET", svc+"./score"), 400},
		{"HTTP-28 dot segment with a parameter", line("GET", svc+".;x/score"), 400},
		{"HTTP-28 trailing dot segment", line("GET", svc+"score/."), 400},
		{"HTTP-28 trailing dot-dot segment", line("GET", svc+"score/.."), 400},
		{"HTTP-28 empty segment", line("GET", svc+"/score"), 400},
		{"HTTP-28 empty segment in the prefix", line("GET", "/api/v1//service/iris/score"), 400},
		{"HTTP-28 empty segment deeper", line("GET", svc+"a//b"), 400},
		{"HTTP-28 parameter on the service name", line("GET", "/api/v1/service/iris;x/score"), 404},
		{"HTTP-28 encoded service name is not decoded", line("GET", "/api/v1/service/ir%69s/score"), 404},

		{"HTTP-29 fragment", line("GET", svc+"score#frag"), 400},
		{"HTTP-29 fragment hiding a dot-dot", line("GET", svc+"score#/../../admin"), 400},
		{"HTTP-29 fragment after a query", line("GET", svc+"score?x=1#frag"), 400},
		{"HTTP-29 fragment after an encoded byte", line("GET", "/%aa#f"), 400},

		{"HTTP-31 encoded NUL", line("GET", svc+"score%00.json"), 400},
		{"HTTP-31 encoded dot-dot", line("GET", svc+"%2e%2e/other/score"), 400},
		{"HTTP-31 encoded dot-dot upper case", line("GET", svc+"%2E%2E/other/score"), 400},
		{"HTTP-31 encoded single dot", line("GET", svc+"%2e/score"), 400},
		{"HTTP-31 encoded slash", line("GET", svc+"..%2Fother%2Fscore"), 400},
		{"HTTP-31 encoded slash lower case", line("GET", svc+"a%2fb"), 400},
		{"HTTP-31 encoded backslash", line("GET", svc+"..%5Cadmin"), 400},
		{"HTTP-31 encoded backslash lower case", line("GET", svc+"..%5cadmin"), 400},
		{"HTTP-31 encoded percent", line("GET", svc+"%252e%252e/admin"), 400},
		{"HTTP-31 overlong UTF-8 dot", line("GET", svc+"%c0%ae%c0%ae/admin"), 400},
		{"HTTP-31 overlong UTF-8 slash", line("GET", svc+"..%c0%afadmin"), 400},
		{"HTTP-31 fullwidth solidus", line("GET", svc+"..%ef%bc%8fadmin"), 400},
		{"HTTP-31 encoded LF", line("GET", svc+"a%0aSet-Cookie:x"), 400},
		{"HTTP-31 encoded DEL", line("GET", svc+"a%7f"), 400},
		{"HTTP-31 encoded NUL in the service name", line("GET", "/api/v1/service/iris%00/score"), 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			bait.reset()
			resps := e.exchange(t, tc.raw)
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want one %d: %s", len(resps), tc.status, describe(resps))
			}
			code := map[int]string{400: "BadRequest", 404: "NotFound"}[tc.status]
			checkError(t, resps[0], tc.status, code, "")
			e.up.requireNone(t)
			bait.requireNone(t)
		})
	}
}

// TestSizeLimits is HTTP-38 and the body limit: over the limit is 431 or 413 with the contract's
// body, and the model sees nothing.
func TestSizeLimits(t *testing.T) {
	e := newEnv(t, envOptions{})
	const score = "/api/v1/service/iris/score" // max_body_bytes 1024
	head := "POST " + score + " HTTP/1.1\r\nHost: gw.test\r\n" + bearer(e.primary) + "\r\n"
	many := make([]string, 300)
	for i := range many {
		many[i] = "X-Header-" + strconv.Itoa(i) + ": " + strings.Repeat("v", 50)
	}
	big := e.cfg.Server.MaxHeaderBytes + 1024
	tests := []struct {
		name   string
		raw    string
		status int
		code   string
	}{
		{"HTTP-38 one header over max_header_bytes", request("GET", score, bearer(e.primary), "Cookie: a="+strings.Repeat("c", big)), 431, "RequestHeaderFieldsTooLarge"},
		{"HTTP-38 300 headers over max_header_bytes", request("GET", score, append([]string{bearer(e.primary)}, many...)...), 431, "RequestHeaderFieldsTooLarge"},
		{"HTTP-38 request target over max_header_bytes", request("GET", score+"?q="+strings.Repeat("q", big), bearer(e.primary)), 431, "RequestHeaderFieldsTooLarge"},
		{"HTTP-38 unterminated header block filling the buffer", "GET " + score + " HTTP/1.1\r\nHost: gw.test\r\nX-Pad: " +
			strings.Repeat("p", e.cfg.Server.MaxHeaderBytes), 431, "RequestHeaderFieldsTooLarge"},
		// Only the start of the body is sent: the gateway reads one byte of it, answers from the
		// Content-Length and leaves the rest unread.
		{"body over the service limit by Content-Length", head + "Content-Length: 1025\r\n\r\n" + strings.Repeat("b", 1025), 413, "PayloadTooLarge"},
		{"body far over the service limit by Content-Length", head + "Content-Length: 1000000000\r\n\r\n" + strings.Repeat("b", 2048), 413, "PayloadTooLarge"},
		{"chunked body over the service limit in one chunk", head + "Transfer-Encoding: chunked\r\n\r\n401\r\n" + strings.Repeat("b", 1025) + "\r\n0\r\n\r\n", 413, "PayloadTooLarge"},
		{"chunked body over the service limit in small chunks", head + "Transfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat("100\r\n"+strings.Repeat("b", 256)+"\r\n", 4) + "1\r\nb\r\n0\r\n\r\n", 413, "PayloadTooLarge"},
		// A chunked body cut short, over the limit by its declared chunk sizes: refused either
		// way, and never forwarded.
		{"chunked body cut short in a chunk over the limit", head + "Transfer-Encoding: chunked\r\n\r\n401\r\n", 400, "BadRequest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			resps := e.exchange(t, tc.raw)
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want one %d: %s", len(resps), tc.status, describe(resps))
			}
			checkError(t, resps[0], tc.status, tc.code, "")
			e.up.requireNone(t)
		})
	}

	for _, tc := range []struct {
		name, target string
		size         int
	}{
		{"a body of exactly max_body_bytes is accepted", score, 1024},
		{"a chunked body of exactly max_body_bytes is accepted", score + "?chunked", 1024},
		{"another service keeps the server default limit", "/api/v1/service/open/score", 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			body := strings.Repeat("b", tc.size)
			raw := request("POST", tc.target, bearer(e.primary), "Content-Length: "+strconv.Itoa(tc.size)) + body
			if strings.HasSuffix(tc.target, "?chunked") {
				raw = request("POST", tc.target, bearer(e.primary), "Transfer-Encoding: chunked") +
					strconv.FormatInt(int64(tc.size), 16) + "\r\n" + body + "\r\n0\r\n\r\n"
			}
			if r := e.do(t, raw); r.Status != 200 {
				t.Fatalf("status %d %s", r.Status, r.Body)
			}
			if got := e.up.requireOne(t).Body; len(got) != tc.size {
				t.Errorf("the model got %d bytes, want %d", len(got), tc.size)
			}
		})
	}
}

// TestExpectContinueUnauthenticated is HTTP-13: a client without a valid credential that asks
// for "100 Continue" must get its refusal (401, or 417) instead, and its body must not be read.
// The gateway's ExpectHandler (Gateway.expect) decides before the body is read; the model sees
// nothing.
func TestExpectContinueUnauthenticated(t *testing.T) {
	e := newEnv(t, envOptions{})
	cases := []struct {
		name    string
		headers []string
		status  int
	}{
		{"HTTP-13 no credential", nil, 401},
		{"HTTP-13 bad credential", []string{"Authorization: Bearer sgk_bad"}, 401},
		{"HTTP-13 declared body over the limit", []string{"Authorization: Bearer " + e.primary}, 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioDeadline))
			length := "Content-Length: 1000"
			if tc.status == 413 {
				length = fmt.Sprintf("Content-Length: %d", e.cfg.Service("iris").MaxBodyBytes+1)
			}
			// The body is never sent: a gateway that waits for it after a 100 would hang until
			// the deadline, which fails the test either way.
			lines := append([]string{"Expect: 100-continue", length}, tc.headers...)
			if _, err := c.Write([]byte(request("POST", "/api/v1/service/iris/score", lines...))); err != nil {
				t.Fatal(err)
			}
			r, err := readResponse(bufio.NewReader(c))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status == 100 {
				t.Fatalf("the gateway sent 100 Continue to a request it refuses")
			}
			if r.Status != tc.status || !strings.Contains(string(r.Body), `"error"`) {
				t.Errorf("status %d body %s, want %d with a JSON error", r.Status, r.Body, tc.status)
			}
			if tc.status == 401 && !strings.HasPrefix(r.get("Www-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate")
			}
			e.up.requireNone(t)
		})
	}
	// Control: a good credential gets 100 Continue, then the model's answer.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioDeadline))
	c.Write([]byte(request("POST", "/api/v1/service/iris/score", "Expect: 100-continue", "Content-Length: 2", "Authorization: Bearer "+e.primary)))
	br := bufio.NewReader(c)
	r, err := readResponse(br)
	if err != nil || r.Status != 100 {
		t.Fatalf("good credential: %v %v, want 100 Continue", r, err)
	}
	c.Write([]byte("{}"))
	if r, err = readResponse(br); err != nil || r.Status != 200 {
		t.Fatalf("good credential after 100: %v %v", r, err)
	}
}
