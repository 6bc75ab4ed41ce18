package telemetry

import (
	"encoding/hex"
	"strings"
	"testing"
)

// FuzzParseTraceparent feeds parseTraceparent untrusted header values: it must never panic, and
// whatever it accepts must be the canonical lowercase form of what it returns, so that the ids
// passed on to the model are exactly the ones the client sent. The seeds are TestParseTraceparent's
// table, which plain go test runs.
func FuzzParseTraceparent(f *testing.F) {
	for _, c := range traceparentCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		tid, pid, flags, ok := parseTraceparent(v)
		if !ok {
			return
		}
		if len(v) < 55 {
			t.Fatalf("accepted %q, shorter than a traceparent", v)
		}
		if tid == [16]byte{} || pid == [8]byte{} {
			t.Fatalf("accepted %q with an all-zero id", v)
		}
		version := string(v[:2])
		if version == "ff" || strings.ToLower(version) != version {
			t.Fatalf("accepted %q with version %q", v, version)
		}
		if _, err := hex.DecodeString(version); err != nil {
			t.Fatalf("accepted %q with version %q: %v", v, version, err)
		}
		enc := "00-" + hex.EncodeToString(tid[:]) + "-" + hex.EncodeToString(pid[:]) + "-" + hex.EncodeToString([]byte{flags})
		in := strings.ToLower(string(v[:55]))
		if string(v[:55]) != in {
			t.Fatalf("accepted %q: W3C trace context is lowercase hex", v)
		}
		if version == "00" {
			if len(v) != 55 {
				t.Fatalf("accepted %q: version 00 with %d bytes", v, len(v))
			}
			if enc != in {
				t.Fatalf("parseTraceparent(%q) re-encodes as %q", v, enc)
			}
			return
		}
		if enc[2:] != in[2:] {
			t.Fatalf("parseTraceparent(%q) re-encodes as %q", v, enc)
		}
		if len(v) > 55 && v[55] != '-' {
			t.Fatalf("accepted %q: a later version's extension must start with '-'", v)
		}
	})
}

// FuzzRedactTarget feeds appendRedactedTarget untrusted request targets: it must never panic,
// what it records must hold no credential marker (sgk_, sgp_, eyJ), as sent or percent-decoded,
// and a target that holds none must be recorded as it was sent.
func FuzzRedactTarget(f *testing.F) {
	for _, s := range []string{
		"/api/v1/service/iris/score?x=1",
		"/api/v1/service/iris/" + canaryServiceKey + "?k=" + canaryJWT,
		"/api/v1/service/iris/sgk%5F" + canaryPrincipalKey[4:] + "#f",
		"/a%2F%73gp_b?%65yJ=1&&=&sgk_",
		"%%7%",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, target []byte) {
		out := appendRedactedTarget(nil, target)
		if holdsCredential(out) {
			t.Fatalf("appendRedactedTarget(%q) = %q, which holds a credential marker", target, out)
		}
		if !holdsCredential(target) && string(out) != string(target) {
			t.Fatalf("appendRedactedTarget(%q) = %q, changed though it holds no credential marker", target, out)
		}
	})
}
