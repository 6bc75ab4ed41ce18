package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// jwksSource is an external issuer's signing keys, fetched from its JWKS URL. Keys are cached and
// refreshed in the background once older than the refresh interval; an unknown kid fetches them
// again at once, but not more often than minRefetch; when the issuer cannot be reached the keys
// already known keep serving.
type jwksSource struct {
	issuer, url string
	algorithms  []string // the issuer's: each key verifies the one of them it fits
	setting     string   // the configuration path of algorithms, for log lines
	client      *http.Client
	log         *slog.Logger
	refresh     time.Duration
	minRefetch  time.Duration

	keys        atomic.Pointer[map[string]jwk]
	fetchedAt   atomic.Int64 // unix nanoseconds of the last successful fetch
	refreshing  atomic.Bool
	mu          sync.Mutex // one fetch at a time
	lastAttempt time.Time  // guarded by mu
}

type jwk struct {
	key crypto.PublicKey
	alg string // the one algorithm it verifies
}

var _ KeySource = (*jwksSource)(nil)

// JWKS fetching bounds.
const (
	jwksFetchTimeout = 5 * time.Second
	jwksMaxBytes     = 1 << 20
)

// jwksMinRefetch is the least time between two fetches caused by unknown kids (a variable for
// tests).
var jwksMinRefetch = 30 * time.Second

// newJWKSSource reads the keys of issuer from url. algorithms are the issuer's (setting names them
// in the configuration, for log lines).
func newJWKSSource(issuer, url string, algorithms []string, setting string, refresh time.Duration, log *slog.Logger) (*jwksSource, error) {
	if url == "" {
		return nil, errors.New("no jwks_url")
	}
	s := &jwksSource{
		issuer:     issuer,
		url:        url,
		algorithms: algorithms,
		setting:    setting,
		client:     &http.Client{Timeout: jwksFetchTimeout},
		log:        log,
		refresh:    refresh,
		minRefetch: jwksMinRefetch,
	}
	empty := map[string]jwk{}
	s.keys.Store(&empty)
	return s, nil
}

// Key implements KeySource.
func (s *jwksSource) Key(ctx context.Context, kid string) (crypto.PublicKey, string, error) {
	fetched := s.fetchedAt.Load()
	if fetched != 0 && time.Since(time.Unix(0, fetched)) > s.refresh && s.refreshing.CompareAndSwap(false, true) {
		go func() { // refresh in the background; callers keep the keys they have
			defer s.refreshing.Store(false)
			fctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
			defer cancel()
			s.fetch(fctx, s.refresh) // a failed refresh is retried at the next interval, not at once
		}()
	}
	if k, ok := (*s.keys.Load())[kid]; ok {
		return k.key, k.alg, nil
	}
	// Unknown kid: the issuer may have rotated. Fetch again, at a bounded rate.
	if !s.fetch(ctx, s.minRefetch) {
		return nil, "", ErrUnknownKey
	}
	if k, ok := (*s.keys.Load())[kid]; ok {
		return k.key, k.alg, nil
	}
	return nil, "", ErrUnknownKey
}

// Known reports whether kid is in the key set as last fetched, without fetching.
func (s *jwksSource) Known(kid string) bool {
	_, ok := (*s.keys.Load())[kid]
	return ok
}

// fetch loads the key set. It does nothing (and returns false) when the last attempt, successful
// or not, was under every ago.
func (s *jwksSource) fetch(ctx context.Context, every time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.lastAttempt.IsZero() && time.Since(s.lastAttempt) < every {
		return false
	}
	s.lastAttempt = time.Now()
	keys, err := s.get(ctx)
	if err != nil {
		s.log.Warn("fetching an issuer's keys; the keys already known keep serving", "issuer", s.issuer, "err", err)
		return false
	}
	s.keys.Store(&keys)
	s.fetchedAt.Store(time.Now().UnixNano())
	return true
}

func (s *jwksSource) get(ctx context.Context) (map[string]jwk, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %d", s.url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > jwksMaxBytes {
		return nil, fmt.Errorf("%s: key set over %d bytes", s.url, jwksMaxBytes)
	}
	keys, ambiguous, err := parseJWKS(body, s.algorithms)
	for _, k := range ambiguous {
		s.log.Warn(fmt.Sprintf("jwks %s: key kid=%s is not used: it has no alg and the issuer's algorithms %v allow %d for its type (%s); set %s to one of them, or have the issuer publish the key's alg",
			s.url, k.kid, s.algorithms, len(k.fits), strings.Join(k.fits, " "), s.setting), "issuer", s.issuer)
	}
	return keys, err
}

// ambiguousKey is a published key without alg that fits several of the issuer's algorithms.
type ambiguousKey struct {
	kid  string
	fits []string
}

// rsaAlgorithms are the algorithms of an RSA signing key.
var rsaAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

// oneAlgorithm is the one algorithm a key of type kty (whose algorithms are of) may verify: its
// alg if it names one, else the one of the issuer's algorithms that the type allows. ok is false
// when there is none; fits lists several when the key names no alg and the type allows more than
// one of the issuer's (RFC 8725 section 3.1: a key is used with exactly one algorithm).
func oneAlgorithm(alg string, of, issuer []string) (one string, fits []string, ok bool) {
	if alg != "" {
		return alg, nil, slices.Contains(of, alg) && slices.Contains(issuer, alg)
	}
	for _, a := range of {
		if slices.Contains(issuer, a) {
			fits = append(fits, a)
		}
	}
	if len(fits) != 1 {
		return "", fits, false
	}
	return fits[0], nil, true
}

// parseJWKS reads a JSON Web Key Set (RFC 7517) of an issuer whose tokens may use algorithms.
// Keys that are not for signatures, have no kid, are of an unsupported type or fit none of
// algorithms are skipped, and so are keys without alg that fit several of them (those are also
// returned, to be logged); a set with no usable key is an error.
func parseJWKS(body []byte, algorithms []string) (map[string]jwk, []ambiguousKey, error) {
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			Alg string `json:"alg"`
			N   string `json:"n"`
			E   string `json:"e"`
			Crv string `json:"crv"`
			X   string `json:"x"`
			Y   string `json:"y"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, nil, fmt.Errorf("not a JWKS: %w", err)
	}
	out := map[string]jwk{}
	var ambiguous []ambiguousKey
	unfit := 0 // usable keys that fit none of algorithms
	// keep adds key to the set, limited to its one algorithm; of are the algorithms of its type.
	keep := func(kid, alg string, of []string, key crypto.PublicKey) {
		one, fits, ok := oneAlgorithm(alg, of, algorithms)
		switch {
		case ok:
			out[kid] = jwk{key: key, alg: one}
		case len(fits) > 1:
			ambiguous = append(ambiguous, ambiguousKey{kid: kid, fits: fits})
		default:
			unfit++
		}
	}
	b64 := base64.RawURLEncoding
	for _, k := range set.Keys {
		if k.Kid == "" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		switch k.Kty {
		case "RSA":
			n, err1 := b64.DecodeString(k.N)
			e, err2 := b64.DecodeString(k.E)
			if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
				continue
			}
			pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
			if pub.N.BitLen() < 2048 || pub.E < 3 {
				continue // too weak to trust
			}
			keep(k.Kid, k.Alg, rsaAlgorithms, pub) // like an EC key's, the alg must fit the key (and be a signature's)
		case "EC":
			var curve elliptic.Curve
			alg := ""
			switch k.Crv {
			case "P-256":
				curve, alg = elliptic.P256(), "ES256"
			case "P-384":
				curve, alg = elliptic.P384(), "ES384"
			case "P-521":
				curve, alg = elliptic.P521(), "ES512"
			default:
				continue
			}
			x, err1 := b64.DecodeString(k.X)
			y, err2 := b64.DecodeString(k.Y)
			size := (curve.Params().BitSize + 7) / 8
			if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
				continue
			}
			pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
			if err != nil {
				continue // not on the curve
			}
			keep(k.Kid, k.Alg, []string{alg}, pub)
		case "OKP":
			x, err := b64.DecodeString(k.X)
			if k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
				continue
			}
			keep(k.Kid, k.Alg, []string{"EdDSA"}, ed25519.PublicKey(x))
		}
	}
	if len(out) == 0 {
		if unfit > 0 {
			return nil, ambiguous, fmt.Errorf("none of the key set's signing keys fits the issuer's algorithms %v", algorithms)
		}
		return nil, ambiguous, errors.New("the key set has no usable signing key")
	}
	return out, ambiguous, nil
}
