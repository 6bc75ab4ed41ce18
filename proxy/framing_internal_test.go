package proxy

import (
	"bytes"
	"strings"
	"testing"
)

// hasFieldReference reports whether a header block has a field of the given lower-case name,
// line by line, for framingFields to match.
func hasFieldReference(block []byte, name string) bool {
	for line := range bytes.SplitSeq(block, []byte("\n")) {
		key, _, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimRight(key, " \t"), []byte(name)) {
			return true
		}
	}
	return false
}

func TestFramingFields(t *testing.T) {
	blocks := []string{
		"",
		"\r\n",
		"Content-Length: 5\r\n",
		"content-length:5\r\nTransfer-Encoding: chunked\r\n",
		"Transfer-Encoding: chunked\r\nContent-Length: 5",
		"TRANSFER-ENCODING \t: chunked\r\nCONTENT-LENGTH : 1\r\n",
		"Tran\u017ffer-Encoding: chunked\r\nContent-Length: 1\r\n", // long s folds to s under EqualFold
		"X-Content-Length: 1\r\nTransfer-Encoding-X: chunked\r\n",
		"Content-Length\r\nTransfer-Encoding\r\n", // no colon: not fields
		" Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
		"Content-Type: a:b\r\nServer: x\r\nContent-Length: 14\r\nDate: d\r\n",
	}
	for _, b := range blocks {
		for _, block := range []string{b, strings.ReplaceAll(b, "\r\n", "\n")} {
			cl, te := framingFields([]byte(block))
			wantCL := hasFieldReference([]byte(block), "content-length")
			wantTE := hasFieldReference([]byte(block), "transfer-encoding")
			if cl != wantCL || te != wantTE {
				t.Errorf("%q: framingFields %v %v, want %v %v", block, cl, te, wantCL, wantTE)
			}
		}
	}
}

func BenchmarkAmbiguousFraming(b *testing.B) {
	block := []byte("Content-Type: application/json\r\nContent-Length: 14\r\nDate: Mon, 07 Dec 2026 11:00:00 GMT\r\nServer: model\r\n")
	b.ReportAllocs()
	for b.Loop() {
		cl, te := framingFields(block)
		if cl && te {
			b.Fatal("ambiguous")
		}
	}
}
