package authn

import (
	"errors"
	"testing"
)

func TestBearer(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    string
		err     error
	}{
		{"KEY-01 no header", nil, "", ErrNoCredential},
		{"empty header", []string{""}, "", ErrNoCredential},
		{"plain bearer", []string{"Bearer abc"}, "abc", nil},
		{"JWT-46 scheme is case-insensitive", []string{"bearer abc"}, "abc", nil},
		{"JWT-46 upper-case scheme", []string{"BEARER abc"}, "abc", nil},
		{"token68 padding", []string{"Bearer ab+/c=="}, "ab+/c==", nil},
		{"JWT-46 no space", []string{"Bearerabc"}, "", ErrInvalidCredential},
		{"JWT-46 scheme alone", []string{"Bearer"}, "", ErrInvalidCredential},
		{"JWT-46 scheme and space", []string{"Bearer "}, "", ErrInvalidCredential},
		{"JWT-46 two spaces", []string{"Bearer  abc"}, "", ErrInvalidCredential},
		{"JWT-46 tab", []string{"Bearer\tabc"}, "", ErrInvalidCredential},
		{"JWT-46 two credentials in one header", []string{"Bearer a, Bearer b"}, "", ErrInvalidCredential},
		{"KEY-12 trailing space", []string{"Bearer abc "}, "", ErrInvalidCredential},
		{"KEY-12 NUL", []string{"Bearer abc\x00"}, "", ErrInvalidCredential},
		{"padding in the middle", []string{"Bearer ab=c"}, "", ErrInvalidCredential},
		{"Basic auth", []string{"Basic dXNlcjpwYXNz"}, "", ErrInvalidCredential},
		{"other scheme of the same length", []string{"Bearex abc"}, "", ErrInvalidCredential},
		{"non-ASCII", []string{"Bearer ab\xc3\xa9"}, "", ErrInvalidCredential},
		{"KEY-07 / JWT-47 two headers, same value", []string{"Bearer abc", "Bearer abc"}, "", ErrMultipleCredentials},
		{"KEY-07 / JWT-47 two headers, different values", []string{"Bearer abc", "Bearer def"}, "", ErrMultipleCredentials},
		{"KEY-13 key and an invalid token", []string{"Bearer abc", "Bearer x.y.z"}, "", ErrMultipleCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hs [][]byte
			for _, h := range tt.headers {
				hs = append(hs, []byte(h))
			}
			got, err := bearer(hs)
			if !errors.Is(err, tt.err) || string(got) != tt.want {
				t.Errorf("bearer(%q) = %q, %v; want %q, %v", tt.headers, got, err, tt.want, tt.err)
			}
		})
	}
}

// FuzzBearer: Authorization header parsing never panics, and what it accepts is exactly one
// token68 credential after "Bearer ".
func FuzzBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer x.y.z", "Bearer ", "Basic a", "Bearer a==", "Bearer =", "", "Bearer\ta"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		got, err := bearer([][]byte{[]byte(h)})
		if err != nil {
			return
		}
		if len(got) == 0 || len(h) != len("Bearer ")+len(got) || !isToken68(got) {
			t.Fatalf("bearer(%q) accepted %q", h, got)
		}
	})
}
