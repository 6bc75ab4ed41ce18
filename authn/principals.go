package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoregate/scoregate/config"
)

// Permission is one thing a role may do, as a bit.
type Permission uint16

// The permissions, named as in the configuration.
const (
	ServicesRead Permission = 1 << iota
	ServicesCall
	TokensMint
	KeysRegenerate
	TokensRevoke
	PrincipalsManage
	ActivityRead
	ConfigReload
	UsageRead
)

var permissionNames = map[string]Permission{
	config.PermServicesRead:     ServicesRead,
	config.PermServicesCall:     ServicesCall,
	config.PermTokensMint:       TokensMint,
	config.PermKeysRegenerate:   KeysRegenerate,
	config.PermTokensRevoke:     TokensRevoke,
	config.PermPrincipalsManage: PrincipalsManage,
	config.PermActivityRead:     ActivityRead,
	config.PermConfigReload:     ConfigReload,
	config.PermUsageRead:        UsageRead,
}

// Roles maps role names (built-in and custom) to their permissions.
type Roles map[string]Permission

// NewRoles reads the built-in roles and the custom ones of cfg (which must be valid).
func NewRoles(cfg *config.Config) Roles {
	r := Roles{}
	add := func(name string, perms []string) {
		var p Permission
		for _, n := range perms {
			p |= permissionNames[n]
		}
		r[name] = p
	}
	for name, perms := range config.BuiltinRoles {
		add(name, perms)
	}
	for _, role := range cfg.Roles {
		add(role.Name, role.Permissions)
	}
	return r
}

// OwnerName is the built-in principal whose key is GATEWAY_ADMIN_KEY or the generated admin.key.
const OwnerName = "owner"

// Principal is an authenticated identity with a role.
type Principal struct {
	Name      string
	Role      string
	CreatedAt time.Time
	perms     Permission
	keyID     string // the id of its key ("owner" for the Owner): a principal deleted and made again has another
}

// Can reports whether the principal's role grants p.
func (p Principal) Can(perm Permission) bool { return p.perms&perm == perm }

// Same reports whether p and q are the same principal with the same key: false for a principal
// deleted and made again under the same name.
func (p Principal) Same(q Principal) bool { return p.Name == q.Name && p.keyID == q.keyID }

// PrincipalRecord is a stored principal: its key only as a keyed hash.
type PrincipalRecord struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	KeyID     string    `json:"keyId"`
	Hash      []byte    `json:"hash"`
	CreatedAt time.Time `json:"createdAt"`
}

// Errors of principal management.
var (
	ErrPrincipalExists  = errors.New("a principal of that name exists")
	ErrPrincipalUnknown = errors.New("no principal of that name")
	ErrUnknownRole      = errors.New("no such role")
	ErrBadName          = errors.New("a principal name is 1 to 64 letters, digits and - _ . @")
	// ErrForbidden: the principal is valid, its role lacks the permission. (403)
	ErrForbidden = errors.New("the principal's role does not grant this")
)

var principalName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// Principals holds every principal in memory (keys as keyed hashes), plus the built-in Owner.
type Principals struct {
	store  Store
	hasher *hasher
	roles  Roles
	owner  [sha256.Size]byte

	index atomic.Pointer[principalIndex]
	mu    sync.Mutex // serialises changes
	// writes counts the changes made here (guarded by mu); see Keyring.writes.
	writes uint64
}

type principalIndex struct {
	byName  map[string]*principalEntry
	byKeyID map[string]*principalEntry
}

type principalEntry struct {
	p    Principal
	id   string
	hash [sha256.Size]byte
}

// NewPrincipals loads the stored principals. ownerKey is the Owner's key (GATEWAY_ADMIN_KEY or
// admin.key); it is kept only as a hash.
func NewPrincipals(ctx context.Context, store Store, keys *Keyring, roles Roles, ownerKey string) (*Principals, error) {
	if len(ownerKey) < MinAdminKeyLen {
		return nil, fmt.Errorf("the admin key must be at least %d characters", MinAdminKeyLen)
	}
	if !isToken68([]byte(ownerKey)) {
		return nil, errors.New("the admin key must be letters, digits and - . _ ~ + / only, so that it can be sent as a Bearer credential")
	}
	ps := &Principals{store: store, hasher: keys.hasher, roles: roles}
	ps.hasher.sum(&ps.owner, []byte(ownerKey))
	if err := ps.Reload(ctx); err != nil {
		return nil, err
	}
	return ps, nil
}

// Reload replaces the in-memory principals with the store's (see reloadStable).
func (ps *Principals) Reload(ctx context.Context) error {
	return reloadStable(ctx, &ps.mu, &ps.writes, ps.store.Principals, ps.install)
}

// install makes recs the principals (mu held).
func (ps *Principals) install(recs []PrincipalRecord) error {
	idx := &principalIndex{byName: map[string]*principalEntry{}, byKeyID: map[string]*principalEntry{}}
	for _, r := range recs {
		e, err := ps.entry(r)
		if err != nil {
			return err
		}
		idx.byName[r.Name] = e
		idx.byKeyID[r.KeyID] = e
	}
	ps.index.Store(idx)
	return nil
}

func (ps *Principals) entry(r PrincipalRecord) (*principalEntry, error) {
	if len(r.Hash) != sha256.Size {
		return nil, fmt.Errorf("principal %s: stored hash has %d bytes", r.Name, len(r.Hash))
	}
	e := &principalEntry{p: Principal{Name: r.Name, Role: r.Role, CreatedAt: r.CreatedAt, perms: ps.roles[r.Role], keyID: r.KeyID}, id: r.KeyID}
	copy(e.hash[:], r.Hash)
	return e, nil
}

// Authenticate returns the principal whose key is the Bearer credential in authorization.
func (ps *Principals) Authenticate(authorization [][]byte) (Principal, error) {
	cred, err := bearer(authorization)
	if err != nil {
		return Principal{}, err
	}
	var sum [sha256.Size]byte
	ps.hasher.sum(&sum, cred)
	if id, ok := parseKey(cred, PrincipalKeyPrefix); ok {
		if e := ps.index.Load().byKeyID[string(id)]; e != nil {
			if subtle.ConstantTimeCompare(sum[:], e.hash[:]) == 1 {
				return e.p, nil
			}
			return Principal{}, ErrInvalidCredential
		}
	}
	if subtle.ConstantTimeCompare(sum[:], ps.owner[:]) == 1 {
		return ps.ownerPrincipal(), nil
	}
	return Principal{}, ErrInvalidCredential
}

func (ps *Principals) ownerPrincipal() Principal {
	return Principal{Name: OwnerName, Role: "owner", perms: ps.roles["owner"], keyID: OwnerName}
}

// Lookup returns the current principal called name. The Owner always exists.
func (ps *Principals) Lookup(name string) (Principal, bool) {
	if name == OwnerName {
		return ps.ownerPrincipal(), true
	}
	e := ps.index.Load().byName[name]
	if e == nil {
		return Principal{}, false
	}
	return e.p, true
}

// keyID is the id of the named principal's current key ("owner" for the Owner), or "".
func (ps *Principals) keyID(name string) string {
	if name == OwnerName {
		return OwnerName
	}
	if e := ps.index.Load().byName[name]; e != nil {
		return e.id
	}
	return ""
}

// Create makes a principal with a role and returns its key, shown this once.
func (ps *Principals) Create(ctx context.Context, name, role string) (Principal, string, error) {
	if !principalName.MatchString(name) {
		return Principal{}, "", ErrBadName
	}
	if _, ok := ps.roles[role]; !ok {
		return Principal{}, "", ErrUnknownRole
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	old := ps.index.Load()
	if name == OwnerName || old.byName[name] != nil {
		return Principal{}, "", ErrPrincipalExists
	}
	key, id := NewKey(PrincipalKeyPrefix)
	var sum [sha256.Size]byte
	ps.hasher.sum(&sum, []byte(key))
	rec := PrincipalRecord{Name: name, Role: role, KeyID: id, Hash: sum[:], CreatedAt: time.Now().UTC().Truncate(time.Second)}
	if err := ps.store.PutPrincipal(ctx, rec); err != nil {
		return Principal{}, "", err
	}
	e, _ := ps.entry(rec)
	idx := &principalIndex{byName: make(map[string]*principalEntry, len(old.byName)+1), byKeyID: make(map[string]*principalEntry, len(old.byKeyID)+1)}
	for k, v := range old.byName {
		idx.byName[k] = v
	}
	for k, v := range old.byKeyID {
		idx.byKeyID[k] = v
	}
	idx.byName[name] = e
	idx.byKeyID[id] = e
	ps.index.Store(idx)
	ps.writes++
	return e.p, key, nil
}

// Delete removes a principal: its key stops working at once, and so do the tokens minted for it.
func (ps *Principals) Delete(ctx context.Context, name string) error {
	if name == OwnerName {
		return fmt.Errorf("the built-in owner cannot be deleted: %w", ErrForbidden)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	old := ps.index.Load()
	e := old.byName[name]
	if e == nil {
		return ErrPrincipalUnknown
	}
	if err := ps.store.DeletePrincipal(ctx, name); err != nil {
		return err
	}
	idx := &principalIndex{byName: make(map[string]*principalEntry, len(old.byName)), byKeyID: make(map[string]*principalEntry, len(old.byKeyID))}
	for k, v := range old.byName {
		if k != name {
			idx.byName[k] = v
		}
	}
	for k, v := range old.byKeyID {
		if k != e.id {
			idx.byKeyID[k] = v
		}
	}
	ps.index.Store(idx)
	ps.writes++
	return nil
}

// List returns every stored principal (not the built-in Owner), without keys.
func (ps *Principals) List() []Principal {
	idx := ps.index.Load()
	out := make([]Principal, 0, len(idx.byName))
	for _, e := range idx.byName {
		out = append(out, e.p)
	}
	return out
}
