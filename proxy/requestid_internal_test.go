package proxy

import (
	"crypto/rand"
	"regexp"
	"sync"
	"testing"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// referenceUUID is the version 4 UUID of b written digit by digit, for appendUUID to match.
func referenceUUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexDigits = "0123456789abcdef"
	var dst []byte
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return string(dst)
}

func TestRequestIDEncoding(t *testing.T) {
	inputs := [][16]byte{{}, {0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}}
	for i := range 256 {
		var b [16]byte
		for j := range b {
			b[j] = byte(i + j*17)
		}
		inputs = append(inputs, b)
	}
	for range 100 {
		var b [16]byte
		rand.Read(b[:])
		inputs = append(inputs, b)
	}
	for _, b := range inputs {
		want := referenceUUID(b)
		prefix := []byte("id:")
		got := appendUUID(prefix, &b)
		if string(got) != "id:"+want {
			t.Fatalf("appendUUID(%x) = %q, want %q", b, got, "id:"+want)
		}
	}
}

// TestRequestIDUnique draws ids from several goroutines at once, over many batches: each is a
// version 4 UUID, and none repeats.
func TestRequestIDUnique(t *testing.T) {
	const workers, each = 8, 2000 // 16000 ids: about 60 batches
	ids := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				var buf [requestIDMaxLen]byte
				ids[w] = append(ids[w], string(newRequestID(buf[:0])))
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool, workers*each)
	for _, list := range ids {
		for _, id := range list {
			if !uuidV4.MatchString(id) {
				t.Fatalf("id %q is not a version 4 UUID", id)
			}
			if seen[id] {
				t.Fatalf("id %q given twice", id)
			}
			seen[id] = true
		}
	}
}

// TestRequestIDBatchCleared checks that an id's bytes do not stay in its batch once taken.
func TestRequestIDBatchCleared(t *testing.T) {
	rb := &randomBatch{off: len(randomBatch{}.buf)}
	var b [16]byte
	for range 3 * len(rb.buf) / len(b) {
		rb.take(&b)
		if rb.off < len(b) {
			t.Fatalf("offset %d after a take", rb.off)
		}
		for _, c := range rb.buf[:rb.off] {
			if c != 0 {
				t.Fatalf("a taken byte left in the batch at offset %d", rb.off)
			}
		}
	}
}

func BenchmarkNewRequestID(b *testing.B) {
	var buf [requestIDMaxLen]byte
	b.ReportAllocs()
	for b.Loop() {
		newRequestID(buf[:0])
	}
}

func BenchmarkNewRequestIDParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var buf [requestIDMaxLen]byte
		for pb.Next() {
			newRequestID(buf[:0])
		}
	})
}
