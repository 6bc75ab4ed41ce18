// Package authn decides who a caller is and what it may do: it parses the Authorization header,
// checks service keys (primary and secondary, stored only as keyed hashes), principals and their
// roles, mints and checks tokens (with signing-key rotation, revocation, external issuers and a
// verified-token cache), keeps the activity log, and declares the Store its backends satisfy
// (and the UsageStore in which both backends also keep language-model token usage). It
// sees a request only as plain values (the service name and the Authorization header values),
// never as an HTTP server's types, so every listener shares it.
package authn

import (
	"context"
	"errors"

	"github.com/scoregate/scoregate/config"
)

// Sentinel errors of Authenticate. Callers branch on them to pick the status; none of them says
// which part of a credential failed.
var (
	// ErrNoCredential: the request carries no Authorization header. (401)
	ErrNoCredential = errors.New("no credential")
	// ErrInvalidCredential: a credential was sent and is not valid for the service: malformed,
	// unknown, of another service, of the wrong kind, expired or revoked. (401, invalid_token)
	ErrInvalidCredential = errors.New("invalid credential")
	// ErrMultipleCredentials: the request carries more than one Authorization header. (400)
	ErrMultipleCredentials = errors.New("more than one credential")
	// ErrUnavailable: the gateway's copy of the shared state is older than its staleness bound,
	// so it cannot decide. (503 with Retry-After, never 401)
	ErrUnavailable = errors.New("the shared state is not current; cannot decide")
)

// Caller is who made an authenticated request.
type Caller struct {
	// KeySlot is "primary" or "secondary" for a service key, empty otherwise.
	KeySlot string
	// Token holds the claims of a token, for token-mode services.
	Token TokenClaims
	// Name names the caller in telemetry and usage: "key:<key id>" for a service key (the id
	// the admin API lists, not secret), "principal:<subject>" for a token (a principal's name
	// for the gateway's own tokens), "" without a credential (auth none). Never the credential.
	// Built when the key is loaded or the token first checked: no allocation per request.
	Name string
}

// Authenticator checks data-plane credentials.
type Authenticator struct {
	keys   *Keyring
	tokens *Tokens
	fresh  func() bool
}

// AuthenticatorOption adds to an Authenticator.
type AuthenticatorOption func(*Authenticator)

// WithTokens lets token-mode services accept tokens checked by t. Without it they refuse every
// request.
func WithTokens(t *Tokens) AuthenticatorOption { return func(a *Authenticator) { a.tokens = t } }

// WithFreshness makes every decision wait on fresh(): while it reports false, Authenticate and
// MintToken return ErrUnavailable instead of deciding on a stale copy of the shared state.
func WithFreshness(fresh func() bool) AuthenticatorOption {
	return func(a *Authenticator) { a.fresh = fresh }
}

// NewAuthenticator returns an Authenticator over keys.
func NewAuthenticator(keys *Keyring, opts ...AuthenticatorOption) *Authenticator {
	a := &Authenticator{keys: keys}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Authenticate checks the credential in authorization (every Authorization header value of the
// request, in order) for a service with the given auth mode (config.AuthKey, AuthToken or
// AuthNone). It allocates nothing.
func (a *Authenticator) Authenticate(service, mode string, authorization [][]byte) (Caller, error) {
	if mode == config.AuthNone {
		return Caller{}, nil
	}
	cred, err := bearer(authorization)
	if err != nil {
		return Caller{}, err
	}
	if a.fresh != nil && !a.fresh() {
		return Caller{}, ErrUnavailable
	}
	switch mode {
	case config.AuthKey:
		e := a.keys.verify(service, cred)
		if e == nil {
			return Caller{}, ErrInvalidCredential
		}
		return Caller{KeySlot: e.rec.Slot, Name: e.caller}, nil
	case config.AuthToken:
		if a.tokens == nil {
			return Caller{}, ErrInvalidCredential
		}
		claims, name, err := a.tokens.verifyCaller(service, cred)
		if err != nil {
			return Caller{}, err
		}
		return Caller{Token: claims, Name: name}, nil
	default:
		return Caller{}, ErrInvalidCredential
	}
}

// MintToken makes a token for the principal whose key is the Bearer credential in authorization,
// to call service. Errors: those of Authenticate for the principal's key, ErrForbidden,
// ErrNotTokenService.
func (a *Authenticator) MintToken(ctx context.Context, service string, authorization [][]byte) (TokenResponse, error) {
	if a.tokens == nil {
		return TokenResponse{}, ErrNotTokenService
	}
	if a.fresh != nil && !a.fresh() {
		return TokenResponse{}, ErrUnavailable
	}
	p, err := a.tokens.principals.Authenticate(authorization)
	if err != nil {
		return TokenResponse{}, err
	}
	return a.tokens.Mint(ctx, p, service)
}

// bearer returns the credential of the single "Bearer <token68>" Authorization header. The scheme
// is matched without regard to case (RFC 9110 §11.1); the credential must be a single token68
// (RFC 9110 §11.2) after exactly one space, with nothing trimmed or folded.
func bearer(authorization [][]byte) ([]byte, error) {
	switch len(authorization) {
	case 0:
		return nil, ErrNoCredential
	case 1:
	default:
		return nil, ErrMultipleCredentials
	}
	v := authorization[0]
	const scheme = "bearer "
	if len(v) <= len(scheme) {
		if len(v) == 0 {
			return nil, ErrNoCredential
		}
		return nil, ErrInvalidCredential
	}
	for i := 0; i < len(scheme); i++ {
		if v[i]|0x20 != scheme[i] { // ASCII case folding; the space maps to itself
			return nil, ErrInvalidCredential
		}
	}
	cred := v[len(scheme):]
	if !isToken68(cred) {
		return nil, ErrInvalidCredential
	}
	return cred, nil
}

// isToken68 reports whether b is 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isToken68(b []byte) bool {
	i := 0
	for ; i < len(b); i++ {
		c := b[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		switch c {
		case '-', '.', '_', '~', '+', '/':
			continue
		}
		break
	}
	if i == 0 {
		return false
	}
	for ; i < len(b); i++ {
		if b[i] != '=' {
			return false
		}
	}
	return true
}

// MinAdminKeyLen is the shortest Owner key accepted from GATEWAY_ADMIN_KEY.
const MinAdminKeyLen = 32
