package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want float64
	}{
		{"empty is zero", nil, 0},
		{"odd count takes the middle", []float64{3, 1, 2}, 2},
		{"even count averages the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"the input order does not matter", []float64{9, 1, 5}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.in); got != tc.want {
				t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestNum(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0"}, {999.4, "999"}, {1000, "1,000"}, {1234567.8, "1,234,568"}, {-1500, "-1,500"},
	} {
		if got := num(tc.in); got != tc.want {
			t.Errorf("num(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		want    loadResult
		wantErr bool
	}{
		{
			name: "a clean run",
			out:  "Running 1s test\nBENCH-RESULT 1000 1000000 0 0 0 0 0 250 400 900 1500\n",
			want: loadResult{requests: 1000, elapsed: time.Second,
				lat: [4]time.Duration{250 * time.Microsecond, 400 * time.Microsecond, 900 * time.Microsecond, 1500 * time.Microsecond}},
		},
		{
			name: "errors of every kind are summed",
			out:  "BENCH-RESULT 10 2000000 1 2 3 4 5 1 1 1 1\n",
			want: loadResult{requests: 10, errors: 15, elapsed: 2 * time.Second,
				firstErr: "wrk: connect 1, read 2, write 3, non-2xx/3xx status 4, timeout 5",
				lat:      [4]time.Duration{time.Microsecond, time.Microsecond, time.Microsecond, time.Microsecond}},
		},
		{name: "no result line is an error", out: "unable to connect\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(loadResult{})); diff != "" {
				t.Errorf("parseWrk (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStatFields(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := []byte("42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0")
	f, err := statFields(line)
	if err != nil {
		t.Fatal(err)
	}
	if f[1] != "1" || f[11] != "7" || f[12] != "3" {
		t.Errorf("ppid %s, utime %s, stime %s; want 1, 7, 3", f[1], f[11], f[12])
	}
}

func TestFillerIDs(t *testing.T) {
	seen := map[string]bool{}
	for _, i := range []int64{0, 1, 61, 62, 999_999, 1_000_000} {
		id := fillerID(i)
		if len(id) != 12 || seen[id] {
			t.Errorf("fillerID(%d) = %q: wrong length or repeated", i, id)
		}
		seen[id] = true
	}
}
