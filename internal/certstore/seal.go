package certstore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/caddyserver/certmagic"
)

// sealMagic starts every sealed value: the format's name and version.
var sealMagic = []byte("SGE1")

// sealAAD starts the additional data of every sealed value; the cleaned storage key follows, so
// that a value copied to another key does not open there.
const sealAAD = "scoregate certificate storage v1\x00"

// ErrUnsealed is returned when a sealed storage finds a value stored in clear (before the key
// was set, or by an instance without the key).
var ErrUnsealed = errors.New("stored unencrypted, but tls.storage_key is set: run \"gateway store seal-certificates -config FILE\" once to encrypt what is stored, and give every instance the key")

// ErrOpen is returned when a sealed value does not decrypt: another key, or a value altered or
// moved from another name.
var ErrOpen = errors.New("does not decrypt with tls.storage_key: another key, or a value altered or moved from another name")

// Sealed is a certmagic.Storage that encrypts every value with AES-256-GCM before the storage
// below keeps it, and authenticates it on the way back: the certificates' and the ACME account's
// private keys, and everything else certmagic stores. A stored value is "SGE1", a 12-byte random
// nonce and the ciphertext with its tag; the additional data is the cleaned key, so a value
// cannot be moved to another name. Key names, sizes and modification times stay visible.
// Locks are the storage below's.
type Sealed struct {
	certmagic.Storage
	aead cipher.AEAD
}

// Seal returns inner with every value sealed with key (32 bytes, AES-256). The result keeps the
// TryLocker and LockLeaseRenewer of inner, which certmagic looks for.
func Seal(inner certmagic.Storage, key []byte) (certmagic.Storage, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("certstore: the storage key has %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &Sealed{Storage: inner, aead: aead}
	tl, try := inner.(certmagic.TryLocker)
	rn, renew := inner.(certmagic.LockLeaseRenewer)
	switch {
	case try && renew:
		return &sealedLeases{sealedTry{s, tl.TryLock}, rn.RenewLockLease}, nil
	case try:
		return &sealedTry{s, tl.TryLock}, nil
	}
	return s, nil
}

type sealedTry struct {
	*Sealed
	try func(context.Context, string) (bool, error)
}

func (s *sealedTry) TryLock(ctx context.Context, name string) (bool, error) { return s.try(ctx, name) }

type sealedLeases struct {
	sealedTry
	renew func(context.Context, string, time.Duration) error
}

func (s *sealedLeases) RenewLockLease(ctx context.Context, lockKey string, d time.Duration) error {
	return s.renew(ctx, lockKey, d)
}

func (s *Sealed) aad(key string) []byte { return []byte(sealAAD + clean(key)) }

// seal encrypts value for key.
func (s *Sealed) seal(key string, value []byte) []byte {
	out := make([]byte, len(sealMagic), len(sealMagic)+s.aead.NonceSize()+len(value)+s.aead.Overhead())
	copy(out, sealMagic)
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	out = append(out, nonce...)
	return s.aead.Seal(out, nonce, value, s.aad(key))
}

// open decrypts what seal made for key.
func (s *Sealed) open(key string, stored []byte) ([]byte, error) {
	if !bytes.HasPrefix(stored, sealMagic) {
		return nil, fmt.Errorf("certstore: %q is %w", key, ErrUnsealed)
	}
	rest := stored[len(sealMagic):]
	n := s.aead.NonceSize()
	if len(rest) < n+s.aead.Overhead() {
		return nil, fmt.Errorf("certstore: %q %w", key, ErrOpen)
	}
	plain, err := s.aead.Open(nil, rest[:n], rest[n:], s.aad(key))
	if err != nil {
		return nil, fmt.Errorf("certstore: %q %w", key, ErrOpen)
	}
	return plain, nil
}

// Store implements certmagic.Storage: it stores value sealed.
func (s *Sealed) Store(ctx context.Context, key string, value []byte) error {
	return s.Storage.Store(ctx, key, s.seal(key, value))
}

// Load implements certmagic.Storage: it loads and opens a sealed value. A value stored in clear is
// ErrUnsealed, one that does not open ErrOpen; both are errors, never a missing key, so that
// certmagic neither takes them nor replaces them.
func (s *Sealed) Load(ctx context.Context, key string) ([]byte, error) {
	stored, err := s.Storage.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.open(key, stored)
}

// String names the storage in certmagic's logs.
func (s *Sealed) String() string { return fmt.Sprintf("sealed %v", s.Storage) }

// SealStored encrypts, in inner, every value still stored in clear, and returns how many it
// sealed: the one step that turns encryption on for a storage in use. Values already sealed
// with key are left alone; a sealed value that does not open with key is an error.
func SealStored(ctx context.Context, inner certmagic.Storage, key []byte) (int, error) {
	st, err := Seal(inner, key)
	if err != nil {
		return 0, err
	}
	s := sealedOf(st)
	keys, err := inner.List(ctx, "", true)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		info, err := inner.Stat(ctx, k)
		if err != nil || !info.IsTerminal {
			continue // a directory
		}
		stored, err := inner.Load(ctx, k)
		if err != nil {
			return n, err
		}
		if _, err := s.open(k, stored); err == nil {
			continue
		} else if !errors.Is(err, ErrUnsealed) {
			return n, err
		}
		if err := inner.Store(ctx, k, s.seal(k, stored)); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func sealedOf(st certmagic.Storage) *Sealed {
	switch s := st.(type) {
	case *sealedLeases:
		return s.Sealed
	case *sealedTry:
		return s.Sealed
	}
	return st.(*Sealed)
}
