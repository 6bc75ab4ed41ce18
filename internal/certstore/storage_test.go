//go:build unix

package certstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// reference is certmagic.FileStorage on a temp dir with the two differences Storage documents
// applied: a directory left empty vanishes, and a key below a file does not exist (FileStorage
// says ENOTDIR, which its Exists takes for existence and its Delete reports as an error).
// Everything else is FileStorage's own answer.
type reference struct{ fs *certmagic.FileStorage }

func (r reference) Store(ctx context.Context, key string, value []byte) error {
	err := r.fs.Store(ctx, key, value)
	r.prune()
	return err
}

func (r reference) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := r.fs.Load(ctx, key)
	return v, belowFile(err)
}

func (r reference) Delete(ctx context.Context, key string) error {
	err := r.fs.Delete(ctx, key)
	r.prune()
	if errors.Is(err, syscall.ENOTDIR) {
		return nil // not there: "it is not an error if the key does not exist"
	}
	return err
}

func (r reference) Exists(ctx context.Context, key string) bool {
	if _, err := os.Stat(r.fs.Filename(key)); errors.Is(err, syscall.ENOTDIR) {
		return false
	}
	return r.fs.Exists(ctx, key)
}

func (r reference) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	info, err := r.fs.Stat(ctx, key)
	return info, belowFile(err)
}

func (r reference) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	keys, err := r.fs.List(ctx, dir, recursive)
	return keys, belowFile(err)
}

func belowFile(err error) error {
	if errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w (%v)", fs.ErrNotExist, err)
	}
	return err
}

// prune removes empty directories below the root, deepest first.
func (r reference) prune() {
	var dirs []string
	filepath.WalkDir(r.fs.Path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != r.fs.Path {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // fails, as it should, when not empty
	}
}

// kv is the part of certmagic.Storage both sides are compared on.
type kv interface {
	Store(ctx context.Context, key string, value []byte) error
	Load(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error
	Exists(ctx context.Context, key string) bool
	Stat(ctx context.Context, key string) (certmagic.KeyInfo, error)
	List(ctx context.Context, dir string, recursive bool) ([]string, error)
}

type step struct {
	why   string
	op    string // store, load, delete, exists, stat, list, listr (recursive)
	key   string
	value string
}

// outcome is what one step returned, in comparable form.
type outcome struct {
	Err, NotExist bool
	Value         string
	Exists        bool
	Keys          []string
	Key           string
	IsTerminal    bool
	Size          int64 // files only: FileStorage reports the directory inode's size
	modified      time.Time
}

func apply(ctx context.Context, s kv, st step) outcome {
	var o outcome
	var err error
	switch st.op {
	case "store":
		err = s.Store(ctx, st.key, []byte(st.value))
	case "load":
		var v []byte
		v, err = s.Load(ctx, st.key)
		o.Value = string(v)
	case "delete":
		err = s.Delete(ctx, st.key)
	case "exists":
		o.Exists = s.Exists(ctx, st.key)
	case "stat":
		var info certmagic.KeyInfo
		info, err = s.Stat(ctx, st.key)
		o.Key, o.IsTerminal, o.modified = info.Key, info.IsTerminal, info.Modified
		if info.IsTerminal {
			o.Size = info.Size
		}
	case "list", "listr":
		o.Keys, err = s.List(ctx, st.key, st.op == "listr")
	default:
		panic("unknown op " + st.op)
	}
	o.Err, o.NotExist = err != nil, errors.Is(err, fs.ErrNotExist)
	return o
}

var bigValue = strings.Repeat("0123456789abcdef", 8192) + "\x00\xff" // 128 KiB, binary

// fileStorageSteps is a certmagic-shaped tree plus every edge FileStorage has an answer for.
var fileStorageSteps = []step{
	{"an empty root lists nothing", "list", "", ""},
	{"a missing directory cannot be listed", "list", "certificates", ""},
	{"a missing key does not load", "load", "certificates/acme/example.com/example.com.crt", ""},
	{"a missing key has no stat", "stat", "certificates", ""},
	{"a missing key does not exist", "exists", "certificates", ""},
	{"a cert", "store", "certificates/acme/example.com/example.com.crt", "crt1"},
	{"its key", "store", "certificates/acme/example.com/example.com.key", "key1"},
	{"its metadata", "store", "certificates/acme/example.com/example.com.json", "{}"},
	{"a second site", "store", "certificates/acme/example.org/example.org.crt", "crt-org"},
	{"a second issuer, a sibling whose name extends the first", "store", "certificates/acme-b/x/x.crt", "crt-x"},
	{"an account", "store", "acme/users/a@b.example/a.json", "reg-a"},
	{"its key", "store", "acme/users/a@b.example/a.key", "acct-key-a"},
	{"another account", "store", "acme/users/c@d.example/c.json", "reg-c"},
	{"an OCSP staple", "store", "ocsp/example.com-abc", "staple"},
	{"a binary value of 128 KiB", "store", "ocsp/big", bigValue},
	{"an empty value", "store", "ocsp/empty", ""},
	{"overwriting replaces the value", "store", "certificates/acme/example.com/example.com.crt", "crt2"},
	{"and Load returns the new one", "load", "certificates/acme/example.com/example.com.crt", ""},
	{"binary values come back intact", "load", "ocsp/big", ""},
	{"an empty value loads as empty", "load", "ocsp/empty", ""},
	{"a file's stat", "stat", "certificates/acme/example.com/example.com.crt", ""},
	{"an empty file's stat", "stat", "ocsp/empty", ""},
	{"a directory's stat", "stat", "certificates/acme", ""},
	{"the root's stat", "stat", "", ""},
	{"a directory exists", "exists", "certificates/acme", ""},
	{"a prefix that is not a whole component does not exist", "exists", "certificates/ac", ""},
	{"nor loads", "load", "certificates/ac", ""},
	{"the root exists", "exists", "", ""},
	{"a directory does not load, and not as missing", "load", "certificates/acme", ""},
	{"the root does not load", "load", "", ""},
	{"storing over a directory fails", "store", "certificates/acme", "x"},
	{"storing at the root fails", "store", "", "x"},
	{"storing below a file fails", "store", "ocsp/example.com-abc/child", "x"},
	{"storing deep below a file fails", "store", "ocsp/example.com-abc/child/grandchild", "x"},
	{"a key below a file does not load", "load", "ocsp/example.com-abc/child", ""},
	{"nor exist", "exists", "ocsp/example.com-abc/child", ""},
	{"nor stat", "stat", "ocsp/example.com-abc/child", ""},
	{"nor list", "list", "ocsp/example.com-abc/child", ""},
	{"listing a file returns nothing", "list", "ocsp/example.com-abc", ""},
	{"listing a file recursively returns nothing", "listr", "ocsp/example.com-abc", ""},
	{"a directory lists its direct children", "list", "certificates", ""},
	{"and recursively every key, directories first", "listr", "certificates", ""},
	{"the root lists its top level", "list", "", ""},
	{"the root lists everything recursively", "listr", "", ""},
	{"names order by component: b", "store", "o/b/x", "1"},
	{"names order by component: b-", "store", "o/b-", "2"},
	{"names order by component: b.c", "store", "o/b.c", "3"},
	{"names order by component: B", "store", "o/B", "4"},
	{"a walk visits b/x before b- and b.c", "listr", "o", ""},
	{"direct children in byte order", "list", "o", ""},
	{"unclean keys are cleaned when stored", "store", "u//v/", "uv"},
	{"and when loaded", "load", "/u/v/", ""},
	{"and when listed", "list", "u/", ""},
	{"stat keeps the key as given", "stat", "./u//v", ""},
	{"dot-dot is resolved", "store", "u/w/../z", "uz"},
	{"so u/z exists", "load", "u/z", ""},
	{"deleting a file", "delete", "certificates/acme/example.com/example.com.crt", ""},
	{"removes it", "load", "certificates/acme/example.com/example.com.crt", ""},
	{"but not its siblings", "list", "certificates/acme/example.com", ""},
	{"deleting a directory", "delete", "certificates/acme", ""},
	{"removes everything in it", "exists", "certificates/acme/example.org/example.org.crt", ""},
	{"and the directory", "exists", "certificates/acme", ""},
	{"but not a sibling whose name extends it", "list", "certificates", ""},
	{"deleting the last file", "delete", "certificates/acme-b/x/x.crt", ""},
	{"leaves no empty directories", "list", "certificates", ""},
	{"deleting a missing key is not an error", "delete", "nope/nothing", ""},
	{"nor is deleting below a file", "delete", "ocsp/example.com-abc/child", ""},
	{"deleting a whole top-level directory", "delete", "ocsp", ""},
	{"what remains", "listr", "", ""},
	{"a file may be stored where a directory was", "store", "certificates", "now a file"},
	{"and loads", "load", "certificates", ""},
}

// checkAgainstFileStorage runs fileStorageSteps on s and on a FileStorage, comparing every
// answer and, after every step, the whole tree.
func checkAgainstFileStorage(t *testing.T, s *Storage) {
	t.Helper()
	ctx := testCtx(t)
	ref := reference{&certmagic.FileStorage{Path: t.TempDir()}}
	for i, st := range fileStorageSteps {
		want, got := apply(ctx, ref, st), apply(ctx, s, st)
		if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(outcome{})); diff != "" {
			t.Errorf("step %d (%s: %s %q): -FileStorage +certstore:\n%s", i, st.why, st.op, st.key, diff)
		}
		if st.op == "stat" && got.IsTerminal {
			if d := got.modified.Sub(want.modified).Abs(); got.modified.IsZero() || d > 2*time.Second {
				t.Errorf("step %d (%s): Modified %v, FileStorage %v", i, st.why, got.modified, want.modified)
			}
		}
		compareTrees(t, ctx, fmt.Sprintf("after step %d (%s)", i, st.why), ref, s)
	}
}

// compareTrees compares the recursive listing of the root and every file's value.
func compareTrees(t *testing.T, ctx context.Context, when string, ref, s kv) {
	t.Helper()
	want, err := ref.List(ctx, "", true)
	if err != nil {
		t.Fatalf("%s: FileStorage List: %v", when, err)
	}
	got, err := s.List(ctx, "", true)
	if err != nil {
		t.Fatalf("%s: List: %v", when, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("%s: trees differ, -FileStorage +certstore:\n%s", when, diff)
	}
	for _, k := range got {
		info, err := ref.Stat(ctx, k)
		if err != nil || !info.IsTerminal {
			continue
		}
		wv, _ := ref.Load(ctx, k)
		gv, err := s.Load(ctx, k)
		if err != nil || !bytes.Equal(wv, gv) {
			t.Fatalf("%s: Load(%q) = %d bytes, %v; FileStorage has %d bytes", when, k, len(gv), err, len(wv))
		}
	}
}

func TestSemanticsMatchFileStorage(t *testing.T) {
	srv := redistest.Start(t)
	checkAgainstFileStorage(t, New(newClient(t, srv.URL()), prefix))
}

func TestEveryKeyUnderThePrefix(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.URL())
	ctx := testCtx(t)
	s := New(c, prefix)
	if err := s.Store(ctx, "certificates/a/a.crt", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, "issue_cert_a"); err != nil {
		t.Fatal(err)
	}
	defer s.Unlock(ctx, "issue_cert_a")
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 4 {
		t.Errorf("Redis holds %q; want the index, values, modified and one lock", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix+"certmagic:") {
			t.Errorf("key %q is outside %q", k, prefix+"certmagic:")
		}
	}
}

func TestDirectoryModifiedIsItsLatestFile(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)
	s := New(newClient(t, srv.URL()), prefix)
	for _, k := range []string{"d/a", "d/sub/b", "d/c"} {
		if err := s.Store(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Store(ctx, "d/sub/b", []byte("rewritten")); err != nil { // now the latest
		t.Fatal(err)
	}
	file, err := s.Stat(ctx, "d/sub/b")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"d", "d/sub", ""} {
		info, err := s.Stat(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		want := certmagic.KeyInfo{Key: dir, Modified: file.Modified}
		if diff := cmp.Diff(want, info); diff != "" {
			t.Errorf("Stat(%q) -want +got:\n%s", dir, diff)
		}
	}
	older, err := s.Stat(ctx, "d/a")
	if err != nil {
		t.Fatal(err)
	}
	if !older.Modified.Before(file.Modified) {
		t.Errorf("d/a modified %v, not before the rewrite of d/sub/b at %v", older.Modified, file.Modified)
	}
}

// The delete script removes hash fields in batches of 1000 (Lua's unpack limit is about 8000).
func TestDeleteLargeDirectory(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.URL())
	ctx := testCtx(t)
	s := New(c, prefix)
	const n = 2500
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			k := "many/" + strconv.Itoa(i)
			p.ZAdd(ctx, prefix+"certmagic:index", redis.Z{Member: k})
			p.HSet(ctx, prefix+"certmagic:values", k, "v")
			p.HSet(ctx, prefix+"certmagic:modified", k, "1")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "keep", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.List(ctx, "many", false); err != nil || len(keys) != n {
		t.Fatalf("List(many) = %d keys, %v; want %d", len(keys), err, n)
	}
	if err := s.Delete(ctx, "many"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "many") {
		t.Error("many still exists")
	}
	for _, h := range []string{"values", "modified"} {
		if got := c.HLen(ctx, prefix+"certmagic:"+h).Val(); got != 1 {
			t.Errorf("%s has %d fields after the delete, want 1 (keep)", h, got)
		}
	}
}
