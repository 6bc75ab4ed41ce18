package authn

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// ---------------------------------------------------------------------------------------------
// KEY-04: constant-time comparison.
//
// A timing attack needs a comparison whose duration depends on how much of a stored secret the
// guess got right. authn never compares a presented key with anything stored: it hashes the key
// (HMAC-SHA-256 under the installation secret, a fixed 32 bytes whatever the key's length) and
// compares the two digests with crypto/subtle. The checks before that (prefix, separator,
// base62 alphabet, CRC) look only at the presented key and public constants, so their timing
// tells an attacker nothing it did not send.
//
// ctCheck enforces this on authn's source: any ==, !=, <, >, bytes.Equal, strings.Compare,
// reflect.DeepEqual, switch, or map/table index whose operand is derived from a stored secret or
// a digest (a [sha256.Size]byte, a field holding one, a stored Hash or Seed, anything named
// secret, and whatever is assigned from those) is a finding; only subtle.ConstantTimeCompare,
// hmac.Equal and len/cap may touch them. Keyring.Verify and Principals.Authenticate must compare
// fixed-length digests with subtle.ConstantTimeCompare, and the hasher must be HMAC-SHA-256.

// ctComparators compare in constant time; their result carries no secret.
var ctComparators = map[string]bool{
	"subtle.ConstantTimeCompare": true, "subtle.ConstantTimeEq": true, "subtle.ConstantTimeByteEq": true,
	"hmac.Equal": true,
}

// variableTime are functions whose running time depends on the contents they compare or search.
var variableTime = map[string]bool{
	"bytes.Equal": true, "bytes.Compare": true, "bytes.EqualFold": true, "bytes.HasPrefix": true, "bytes.HasSuffix": true,
	"bytes.Index": true, "bytes.Contains": true, "strings.Compare": true, "strings.EqualFold": true,
	"strings.HasPrefix": true, "strings.HasSuffix": true, "strings.Index": true, "strings.Contains": true,
	"slices.Equal": true, "slices.Compare": true, "slices.Index": true, "slices.Contains": true,
	"reflect.DeepEqual": true, "cmp.Equal": true, "maps.Equal": true,
}

// storedSecretFields are the fields that hold a stored key hash or a signing-key seed.
var storedSecretFields = map[string]bool{"Hash": true, "Seed": true}

// ctRequirement is a function of the verification path and the constant-time digest
// comparisons it must make.
type ctRequirement struct {
	fn          string // "Type.Method" or "func"
	comparisons int
}

var ctVerificationPath = []ctRequirement{
	{"Keyring.verify", 1},          // a service key against its slot's hash (Verify and VerifyCaller call it)
	{"Principals.Authenticate", 2}, // a principal key against its hash, then against the Owner's
}

func selectorName(e ast.Expr) string {
	if s, ok := e.(*ast.SelectorExpr); ok {
		if x, ok := s.X.(*ast.Ident); ok {
			return x.Name + "." + s.Sel.Name
		}
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// isDigestArray reports whether t is [<pkg>.Size]byte, a fixed-length digest.
func isDigestArray(t ast.Expr) bool {
	if st, ok := t.(*ast.StarExpr); ok {
		t = st.X
	}
	at, ok := t.(*ast.ArrayType)
	if !ok || at.Len == nil {
		return false
	}
	sel, ok := at.Len.(*ast.SelectorExpr)
	elt, ok2 := at.Elt.(*ast.Ident)
	return ok && ok2 && sel.Sel.Name == "Size" && elt.Name == "byte"
}

func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if st, ok := t.(*ast.StarExpr); ok {
		t = st.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}

// ctCheck analyses files (one package) and returns its findings, each "file:line: what".
func ctCheck(fset *token.FileSet, files []*ast.File, required []ctRequirement) []string {
	var problems []string
	report := func(n ast.Node, format string, args ...any) {
		p := fset.Position(n.Pos())
		problems = append(problems, fmt.Sprintf("%s:%d: %s", filepath.Base(p.Filename), p.Line, fmt.Sprintf(format, args...)))
	}

	// Struct fields that hold a digest, in any type of the package.
	digestFields := map[string]bool{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if st, ok := n.(*ast.StructType); ok {
				for _, fl := range st.Fields.List {
					if isDigestArray(fl.Type) {
						for _, name := range fl.Names {
							digestFields[name.Name] = true
						}
					}
				}
			}
			return true
		})
	}

	funcs := map[string]*ast.FuncDecl{}
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			funcs[funcName(fd)] = fd
			ctCheckFunc(fset, fd, digestFields, report)
		}
	}

	for _, req := range required {
		fd := funcs[req.fn]
		if fd == nil {
			problems = append(problems, fmt.Sprintf("%s: not found; the verification path moved, update ctVerificationPath", req.fn))
			continue
		}
		digests := digestLocals(fd)
		isDigest := func(e ast.Expr) bool {
			sl, ok := e.(*ast.SliceExpr)
			if !ok || sl.Low != nil || sl.High != nil {
				return false // a sub-slice would compare part of a digest
			}
			switch x := sl.X.(type) {
			case *ast.Ident:
				return digests[x.Name]
			case *ast.SelectorExpr:
				return digestFields[x.Sel.Name]
			}
			return false
		}
		n := 0
		ast.Inspect(fd.Body, func(node ast.Node) bool {
			if c, ok := node.(*ast.CallExpr); ok && ctComparators[selectorName(c.Fun)] && len(c.Args) == 2 &&
				isDigest(c.Args[0]) && isDigest(c.Args[1]) {
				n++
			}
			return true
		})
		if n < req.comparisons {
			problems = append(problems, fmt.Sprintf("%s: %d constant-time comparisons of two whole fixed-length digests, want %d",
				req.fn, n, req.comparisons))
		}
	}

	// The digests are HMAC-SHA-256: fixed length whatever the key's.
	if nh := funcs["newHasher"]; nh == nil {
		problems = append(problems, "newHasher: not found")
	} else {
		hmacSHA256 := false
		ast.Inspect(nh.Body, func(node ast.Node) bool {
			if c, ok := node.(*ast.CallExpr); ok && selectorName(c.Fun) == "hmac.New" && len(c.Args) == 2 && selectorName(c.Args[0]) == "sha256.New" {
				hmacSHA256 = true
			}
			return true
		})
		if !hmacSHA256 {
			problems = append(problems, "newHasher: keys are not hashed with hmac.New(sha256.New, secret)")
		}
	}
	return problems
}

// digestLocals are the variables and parameters of fd declared as fixed-length digests.
func digestLocals(fd *ast.FuncDecl) map[string]bool {
	out := map[string]bool{}
	addFields := func(fl *ast.FieldList) {
		if fl == nil {
			return
		}
		for _, f := range fl.List {
			if isDigestArray(f.Type) {
				for _, n := range f.Names {
					out[n.Name] = true
				}
			}
		}
	}
	addFields(fd.Type.Params)
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		switch v := n.(type) {
		case *ast.ValueSpec:
			if v.Type != nil && isDigestArray(v.Type) {
				for _, name := range v.Names {
					out[name.Name] = true
				}
			}
		case *ast.FuncLit:
			addFields(v.Type.Params)
		}
		return true
	})
	return out
}

// ctCheckFunc reports the variable-time uses of secret-derived values in one function (closures
// included).
func ctCheckFunc(fset *token.FileSet, fd *ast.FuncDecl, digestFields map[string]bool, report func(ast.Node, string, ...any)) {
	tainted := digestLocals(fd)
	isSecretName := func(name string) bool { return strings.Contains(strings.ToLower(name), "secret") }

	isTainted := func(e ast.Expr) bool {
		found := false
		ast.Inspect(e, func(n ast.Node) bool {
			if found {
				return false
			}
			switch v := n.(type) {
			case *ast.CallExpr:
				name := selectorName(v.Fun)
				if name == "len" || name == "cap" || ctComparators[name] || variableTime[name] {
					// len, cap and the constant-time comparators reveal nothing of the contents;
					// a variable-time call is reported itself, once.
					return false
				}
			case *ast.SelectorExpr:
				if digestFields[v.Sel.Name] || storedSecretFields[v.Sel.Name] {
					found = true
				}
			case *ast.Ident:
				if tainted[v.Name] || isSecretName(v.Name) {
					found = true
				}
			}
			return !found
		})
		return found
	}
	isNil := func(e ast.Expr) bool { id, ok := e.(*ast.Ident); return ok && id.Name == "nil" }

	// Propagate through assignments until nothing changes.
	for changed := true; changed; {
		changed = false
		taint := func(lhs ast.Expr) {
			// err and ok come with a secret from the same call, but are not made of it.
			if id, ok := lhs.(*ast.Ident); ok && id.Name != "_" && id.Name != "err" && id.Name != "ok" && !tainted[id.Name] {
				tainted[id.Name] = true
				changed = true
			}
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			switch v := n.(type) {
			case *ast.AssignStmt:
				for i, lhs := range v.Lhs {
					rhs := v.Rhs[0]
					if len(v.Rhs) == len(v.Lhs) {
						rhs = v.Rhs[i]
					}
					if isTainted(rhs) {
						taint(lhs)
					}
				}
			case *ast.ValueSpec:
				for i, name := range v.Names {
					if i < len(v.Values) && isTainted(v.Values[i]) {
						taint(name)
					}
				}
			case *ast.RangeStmt:
				if isTainted(v.X) && v.Value != nil { // the key is an index, not a secret
					taint(v.Value)
				}
			}
			return true
		})
	}

	ast.Inspect(fd.Body, func(n ast.Node) bool {
		switch v := n.(type) {
		case *ast.BinaryExpr:
			switch v.Op {
			case token.EQL, token.NEQ, token.LSS, token.LEQ, token.GTR, token.GEQ:
				if (isTainted(v.X) || isTainted(v.Y)) && !isNil(v.X) && !isNil(v.Y) {
					report(v, "%s compares secret or digest bytes with %s; use subtle.ConstantTimeCompare", exprString(fset, v), v.Op)
				}
			}
		case *ast.CallExpr:
			if name := selectorName(v.Fun); variableTime[name] {
				for _, a := range v.Args {
					if isTainted(a) {
						report(v, "%s compares or searches secret or digest bytes in variable time", exprString(fset, v))
						break
					}
				}
			}
		case *ast.IndexExpr:
			if isTainted(v.Index) && !isTainted(v.X) {
				report(v, "%s looks a secret or digest up in a map or table (variable time)", exprString(fset, v))
			}
		case *ast.SwitchStmt:
			if v.Tag != nil && isTainted(v.Tag) {
				report(v, "switch on secret or digest bytes")
			}
		}
		return true
	})
}

func exprString(fset *token.FileSet, e ast.Expr) string {
	var b strings.Builder
	if err := printer.Fprint(&b, fset, e); err != nil {
		return fmt.Sprintf("%T", e)
	}
	return b.String()
}

func TestKEY04ConstantTimeComparator(t *testing.T) {
	t.Run("authn's sources", func(t *testing.T) {
		fset := token.NewFileSet()
		names, err := filepath.Glob("*.go")
		if err != nil {
			t.Fatal(err)
		}
		var files []*ast.File
		for _, name := range names {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		if len(files) < 5 {
			t.Fatalf("parsed %d files of authn", len(files))
		}
		for _, p := range ctCheck(fset, files, ctVerificationPath) {
			t.Error(p)
		}
	})

	// The check has teeth: each of these ways of comparing a digest is found, and the constant-
	// time forms are not.
	const header = `package authn
import ("bytes"; "crypto/hmac"; "crypto/sha256"; "crypto/subtle"; "strings")
var _, _, _ = bytes.Equal, hmac.Equal, strings.Compare
type keyEntry struct{ hash [sha256.Size]byte }
type Keyring struct{ idx map[string]*keyEntry; byHash map[string]bool }
type KeyRecord struct{ Hash []byte }
func newHasher(secret []byte) { hmac.New(sha256.New, secret) }
`
	verifyWith := func(body string) string {
		return header + "func (k *Keyring) Verify(key []byte, e *keyEntry, rec KeyRecord) bool {\n\tvar sum [sha256.Size]byte\n" + body + "\n}\n"
	}
	cases := []struct {
		name, src string
		want      []string // substrings of the findings, in order; none for a clean source
	}{
		{"subtle.ConstantTimeCompare over whole digests", verifyWith(`return subtle.ConstantTimeCompare(sum[:], e.hash[:]) == 1`), nil},
		{"hmac.Equal over whole digests", verifyWith(`return hmac.Equal(sum[:], e.hash[:])`), nil},
		{"length checks and nil checks say nothing of the contents", verifyWith(`if len(rec.Hash) != sha256.Size || rec.Hash == nil { return false }
	return subtle.ConstantTimeCompare(sum[:], e.hash[:]) == 1`), nil},
		{"bytes.Equal", verifyWith(`return bytes.Equal(sum[:], e.hash[:])`), []string{"variable time", "0 constant-time comparisons"}},
		{"== on the arrays", verifyWith(`return sum == e.hash`), []string{"with ==", "0 constant-time"}},
		{"== on strings of the digests", verifyWith(`return string(sum[:]) == string(e.hash[:])`), []string{"with ==", "0 constant-time"}},
		{"a copy of the digest compared", verifyWith(`h := sum
	got := h[:]
	return strings.Compare(string(got), string(rec.Hash)) == 0`), []string{"variable time", "0 constant-time"}},
		{"a stored hash compared with the presented key", verifyWith(`_ = subtle.ConstantTimeCompare(sum[:], e.hash[:])
	return bytes.Equal(key, rec.Hash)`), []string{"variable time"}},
		{"a map keyed by the digest", verifyWith(`_ = subtle.ConstantTimeCompare(sum[:], e.hash[:])
	return k.byHash[string(sum[:])]`), []string{"map or table"}},
		{"a switch on the digest", verifyWith(`_ = subtle.ConstantTimeCompare(sum[:], e.hash[:])
	switch sum[0] { case 0: return false }
	return true`), []string{"switch"}},
		{"a loop that stops at the first differing byte", verifyWith(`for i := range sum { if sum[i] != e.hash[i] { return false } }
	return true`), []string{"with !=", "0 constant-time"}},
		{"a constant-time compare of part of the digests only", verifyWith(`return subtle.ConstantTimeCompare(sum[:8], e.hash[:8]) == 1`), []string{"0 constant-time"}},
		{"the secret itself compared", header + `func (k *Keyring) Verify(e *keyEntry) bool { var sum [sha256.Size]byte; _ = subtle.ConstantTimeCompare(sum[:], e.hash[:]); return false }
func check(installationSecret, guess []byte) bool { return string(installationSecret) == string(guess) }`, []string{"with =="}},
	}
	for _, c := range cases {
		t.Run("finds: "+c.name, func(t *testing.T) {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, "case.go", c.src, 0)
			if err != nil {
				t.Fatal(err)
			}
			got := ctCheck(fset, []*ast.File{f}, []ctRequirement{{"Keyring.Verify", 1}})
			if len(got) != len(c.want) {
				t.Fatalf("findings %q, want %d matching %q", got, len(c.want), c.want)
			}
			for i, w := range c.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("finding %q, want it to mention %q", got[i], w)
				}
			}
		})
	}

	// The verification path refuses a key whose secret differs from the stored one in its first
	// or its last character (checksum made valid, so the comparison is what refuses it).
	t.Run("first- and last-character mismatches are refused", func(t *testing.T) {
		k, store := openKeyring(t, t.TempDir())
		defer store.Close()
		key := regenerate(t, k, "iris", SlotPrimary)
		for _, pos := range []int{keySecretStart, keySecretEnd - 1} {
			bad := mutateSecret(key, pos)
			if _, ok := parseKey([]byte(bad), ServiceKeyPrefix); !ok {
				t.Fatalf("mutated key %q does not parse: the test would not reach the comparison", bad)
			}
			if _, ok := k.Verify("iris", []byte(bad)); ok {
				t.Fatalf("a key differing at %d was accepted", pos)
			}
		}
		if _, ok := k.Verify("iris", []byte(key)); !ok {
			t.Fatal("the key itself was refused")
		}
	})
}

// keySecretStart and keySecretEnd bound the secret part of a key.
const (
	keySecretStart = prefixLen + keyIDLen + 1
	keySecretEnd   = keySecretStart + keySecretLen
)

// mutateSecret changes the key's character at pos (inside the secret) and recomputes the
// checksum, so that the key passes parseKey and fails only on its hash.
func mutateSecret(key string, pos int) string {
	b := []byte(key[:keyLen-keySumLen])
	i := strings.IndexByte(base62, b[pos])
	b[pos] = base62[(i+1)%len(base62)]
	return string(appendChecksum(b, crc32.ChecksumIEEE(b)))
}

// KEY-04, measured. Off by default (and in CI): timing on a shared machine is noise. Run it with
//
//	SCOREGATE_TIMING=1 go test -run KEY04Timing -count=1 -v ./authn
//
// It checks 2×10⁵ keys whose secret differs from the stored key's in its first character, and as
// many differing in its last, interleaved in random order, and fails when the medians of the two
// differ by more than 5% (or 20 ns, whichever is more). An early-exit comparison of the keys
// would show the difference; comparing HMAC digests with subtle.ConstantTimeCompare cannot.
func TestKEY04TimingFirstVsLastByte(t *testing.T) {
	if os.Getenv("SCOREGATE_TIMING") != "1" {
		t.Skip("timing test: set SCOREGATE_TIMING=1 to run it (not in CI)")
	}
	k, store := openKeyring(t, t.TempDir())
	defer store.Close()
	key := regenerate(t, k, "iris", SlotPrimary)
	first, last := []byte(mutateSecret(key, keySecretStart)), []byte(mutateSecret(key, keySecretEnd-1))
	const n = 200_000
	order := make([]bool, 2*n) // true: first
	for i := range n {
		order[i] = true
	}
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for range 20_000 { // warm up
		k.Verify("iris", first)
		k.Verify("iris", last)
	}
	var dFirst, dLast []time.Duration
	for _, isFirst := range order {
		in := last
		if isFirst {
			in = first
		}
		start := time.Now()
		_, ok := k.Verify("iris", in)
		d := time.Since(start)
		if ok {
			t.Fatal("a mutated key was accepted")
		}
		if isFirst {
			dFirst = append(dFirst, d)
		} else {
			dLast = append(dLast, d)
		}
	}
	slices.Sort(dFirst)
	slices.Sort(dLast)
	q := func(d []time.Duration, f float64) time.Duration { return d[int(f*float64(len(d)-1))] }
	mf, ml := q(dFirst, 0.5), q(dLast, 0.5)
	t.Logf("first-character mismatch: p10 %v p50 %v p90 %v; last-character mismatch: p10 %v p50 %v p90 %v (%d samples each)",
		q(dFirst, 0.1), mf, q(dFirst, 0.9), q(dLast, 0.1), ml, q(dLast, 0.9), n)
	diff := mf - ml
	if diff < 0 {
		diff = -diff
	}
	if limit := max(20*time.Nanosecond, min(mf, ml)/20); diff > limit {
		t.Errorf("median times differ by %v (> %v): the comparison's time depends on where the key differs", diff, limit)
	}
}

// ---------------------------------------------------------------------------------------------
// KEY-06: lookup leakage. Everything authn sends to Redis while keys are made, checked and
// rotated, principals made and deleted, tokens minted, checked and revoked names keys and tokens
// by id (and hashes), never by their secret part or the token itself.

func TestKEY06RedisNeverSeesASecret(t *testing.T) {
	srv := redistest.Start(t)
	mon := redistest.StartMonitor(t, srv.Addr)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	a, b := startInstance(t, cfg), startInstance(t, cfg)
	ctx := context.Background()

	primary, err := a.keys.Regenerate(ctx, "iris", SlotPrimary)
	if err != nil {
		t.Fatal(err)
	}
	secondary, err := b.keys.Regenerate(ctx, "iris", SlotSecondary)
	if err != nil {
		t.Fatal(err)
	}
	p, principalKey, err := a.principals.Create(ctx, "kim", "reader")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "both keys and the principal known to both instances", func() bool {
		_, ok := b.principals.Lookup("kim")
		return ok && a.checkKey(secondary) == nil && b.checkKey(primary) == nil
	})
	tok, err := a.tokens.Mint(ctx, p, "scoring")
	if err != nil {
		t.Fatal(err)
	}
	wrong := mutateSecret(primary, keySecretStart+5)
	for _, in := range []*instance{a, b} {
		if err := in.checkKey(wrong); !errors.Is(err, ErrInvalidCredential) {
			t.Fatalf("a wrong secret under the primary's id: %v", err)
		}
		if err := in.checkToken(tok.AccessToken); err != nil {
			t.Fatalf("the token: %v", err)
		}
	}
	if _, err := b.principals.Authenticate([][]byte{[]byte("Bearer " + principalKey)}); err != nil {
		t.Fatalf("the principal's key: %v", err)
	}
	claims, err := b.tokens.RevokeToken(ctx, tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the revoked token refused by the other instance", func() bool {
		return errors.Is(a.checkToken(tok.AccessToken), ErrInvalidCredential)
	})
	for _, in := range []*instance{a, b} {
		if err := in.keys.Flush(ctx); err != nil { // last-use times, by key id
			t.Fatal(err)
		}
	}
	replaced := primary
	if primary, err = a.keys.Regenerate(ctx, "iris", SlotPrimary); err != nil {
		t.Fatal(err)
	}
	if err := b.principals.Delete(ctx, "kim"); err != nil {
		t.Fatal(err)
	}
	a.stop()
	b.stop()
	seen := mon.Stop()

	// The monitor saw the operations, by id.
	for what, want := range map[string]string{
		"the primary's id":                   replaced[prefixLen : prefixLen+keyIDLen],
		"the new primary's id":               primary[prefixLen : prefixLen+keyIDLen],
		"the secondary's id":                 secondary[prefixLen : prefixLen+keyIDLen],
		"the principal's key id":             principalKey[prefixLen : prefixLen+keyIDLen],
		"the revoked token's jti":            claims.ID,
		"the last-use script (EVALSHA/EVAL)": "eval",
	} {
		if !strings.Contains(strings.ToLower(seen), strings.ToLower(want)) {
			t.Errorf("MONITOR never saw %s (%q): the search below would prove nothing", what, want)
		}
	}
	secrets := map[string]string{"the owner key": testOwnerKey}
	for name, k := range map[string]string{"the replaced primary": replaced, "the new primary": primary, "the secondary": secondary,
		"the wrong key": wrong, "the principal key": principalKey} {
		secrets[name] = k
		secrets[name+"'s secret part"] = k[keySecretStart:keySecretEnd]
		secrets[name+"'s secret and checksum"] = k[keySecretStart:]
	}
	parts := strings.Split(tok.AccessToken, ".")
	secrets["the token"] = tok.AccessToken
	secrets["the token's signature"] = parts[2]
	secrets["the token's claims segment"] = parts[1]
	secrets["the token's signing input"] = parts[0] + "." + parts[1]
	for what, s := range secrets {
		if strings.Contains(seen, s) {
			t.Errorf("%s appears in a Redis command", what)
		}
	}
	// Nor in base64 (JSON encodes []byte fields so).
	for what, s := range map[string]string{"the primary": primary, "the principal key": principalKey} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
			if strings.Contains(seen, enc.EncodeToString([]byte(s))) {
				t.Errorf("%s appears base64-encoded in a Redis command", what)
			}
		}
	}
	var n int
	for range strings.Lines(seen) {
		n++
	}
	t.Logf("MONITOR saw %d commands; none carried a key's secret or a token", n)
}
