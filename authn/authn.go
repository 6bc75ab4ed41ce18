// Package authn decides who a caller is: it parses the Authorization header, checks service keys
// (primary and secondary, stored only as keyed hashes) and the Owner's admin key, and declares the
// Store its backends satisfy. It sees a request only as plain values (the service name and the
// Authorization header values), never as an HTTP server's types, so every listener shares it.
package authn

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"

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
)

// Caller is who made an authenticated request.
type Caller struct {
	// KeySlot is "primary" or "secondary" for a service key, empty otherwise.
	KeySlot string
}

// Authenticator checks data-plane credentials.
type Authenticator struct {
	keys *Keyring
}

// NewAuthenticator returns an Authenticator over keys.
func NewAuthenticator(keys *Keyring) *Authenticator {
	return &Authenticator{keys: keys}
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
	switch mode {
	case config.AuthKey:
		slot, ok := a.keys.Verify(service, cred)
		if !ok {
			return Caller{}, ErrInvalidCredential
		}
		return Caller{KeySlot: slot}, nil
	default:
		// Token-mode services accept no key; token validation is not built yet, so every
		// credential is refused rather than let through.
		return Caller{}, ErrInvalidCredential
	}
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

// Owner checks the Owner's admin key. It keeps only the key's hash.
type Owner struct {
	hasher *hasher
	hash   [sha256.Size]byte
}

// MinAdminKeyLen is the shortest Owner key accepted from GATEWAY_ADMIN_KEY.
const MinAdminKeyLen = 32

// NewOwner returns an Owner checker for key, hashed with the keyring's installation secret.
func NewOwner(keys *Keyring, key string) (*Owner, error) {
	if len(key) < MinAdminKeyLen {
		return nil, fmt.Errorf("the admin key must be at least %d characters", MinAdminKeyLen)
	}
	if !isToken68([]byte(key)) {
		return nil, errors.New("the admin key must be letters, digits and - . _ ~ + / only, so that it can be sent as a Bearer credential")
	}
	o := &Owner{hasher: keys.hasher}
	o.hasher.sum(&o.hash, []byte(key))
	return o, nil
}

// Authenticate checks an admin request's Authorization header values.
func (o *Owner) Authenticate(authorization [][]byte) error {
	cred, err := bearer(authorization)
	if err != nil {
		return err
	}
	var sum [sha256.Size]byte
	o.hasher.sum(&sum, cred)
	if subtle.ConstantTimeCompare(sum[:], o.hash[:]) != 1 {
		return ErrInvalidCredential
	}
	return nil
}
