package authn

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"hash/crc32"
	"sync"
)

// A key is "<prefix>_<id>_<secret><checksum>":
//
//	sgk_ 3fT9aQ2LmZ0p _ <43 base62 characters, 256 bits> <6 base62 characters, CRC-32>
//
// The prefix tells what the key is for (sgk_ a service key, sgp_ a principal key) and lets secret
// scanners find leaked keys. The id names the stored record and is not secret. The checksum
// covers everything before it, so a mistyped or truncated key is refused without a store lookup.
const (
	// ServiceKeyPrefix starts every service (scoring) key.
	ServiceKeyPrefix = "sgk_"
	// PrincipalKeyPrefix starts every principal (admin API) key.
	PrincipalKeyPrefix = "sgp_"

	keyIDLen     = 12
	keySecretLen = 43 // 62^43 > 2^256
	keySumLen    = 6  // 62^6 > 2^32
	prefixLen    = 4
	keyLen       = prefixLen + keyIDLen + 1 + keySecretLen + keySumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// base62Value maps a byte to its base62 digit value, or 0xff.
var base62Value = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = byte(i)
	}
	return t
}()

// NewKey returns a fresh random key with the given prefix, and its id.
func NewKey(prefix string) (key, id string) {
	b := make([]byte, 0, keyLen)
	b = append(b, prefix...)
	b = appendRandomBase62(b, keyIDLen)
	b = append(b, '_')
	b = appendRandomBase62(b, keySecretLen)
	b = appendChecksum(b, crc32.ChecksumIEEE(b))
	return string(b), string(b[prefixLen : prefixLen+keyIDLen])
}

// appendRandomBase62 appends n uniformly random base62 digits, by rejection sampling.
func appendRandomBase62(b []byte, n int) []byte {
	var buf [64]byte
	for n > 0 {
		rand.Read(buf[:]) // never fails (crypto/rand)
		for _, c := range buf {
			if c >= 248 { // 248 = 4*62: keep the distribution uniform
				continue
			}
			b = append(b, base62[c%62])
			if n--; n == 0 {
				break
			}
		}
	}
	return b
}

func appendChecksum(b []byte, sum uint32) []byte {
	var d [keySumLen]byte
	v := uint64(sum)
	for i := keySumLen - 1; i >= 0; i-- {
		d[i] = base62[v%62]
		v /= 62
	}
	return append(b, d[:]...)
}

// parseKey checks the shape and checksum of a key with the given prefix and returns its id. It
// allocates nothing and touches no store.
func parseKey(key []byte, prefix string) (id []byte, ok bool) {
	if len(key) != keyLen || string(key[:prefixLen]) != prefix || key[prefixLen+keyIDLen] != '_' {
		return nil, false
	}
	body := key[prefixLen:]
	for i, c := range body {
		if i == keyIDLen {
			continue // the '_' checked above
		}
		if base62Value[c] == 0xff {
			return nil, false
		}
	}
	var sum uint64
	for _, c := range key[keyLen-keySumLen:] {
		sum = sum*62 + uint64(base62Value[c])
	}
	if sum != uint64(crc32.ChecksumIEEE(key[:keyLen-keySumLen])) {
		return nil, false
	}
	return key[prefixLen : prefixLen+keyIDLen], true
}

// hasher computes the keyed hash (HMAC-SHA-256 with the installation secret) under which keys are
// stored. Its states are pooled so that hashing allocates nothing.
type hasher struct {
	pool sync.Pool
}

type hmacState struct {
	mac hash.Hash
	buf [sha256.Size]byte
}

func newHasher(secret []byte) *hasher {
	s := append([]byte(nil), secret...)
	h := &hasher{}
	h.pool.New = func() any { return &hmacState{mac: hmac.New(sha256.New, s)} }
	return h
}

// sum writes the keyed hash of key to dst.
func (h *hasher) sum(dst *[sha256.Size]byte, key []byte) {
	st := h.pool.Get().(*hmacState)
	st.mac.Reset()
	st.mac.Write(key)
	st.mac.Sum(st.buf[:0])
	*dst = st.buf
	h.pool.Put(st)
}
