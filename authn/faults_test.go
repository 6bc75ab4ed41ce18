package authn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// Store faults: the embedded store's disk fills up or turns read-only under a running gateway,
// and Redis answers slowly. Writes fail with an error that says what could not be saved and why,
// nothing already saved is lost or corrupted, the keys handed out before keep working, and the
// store works again once the fault clears.
//
// A full or read-only disk needs a file system of its own: the tests run as root, so permission
// bits stop nothing. They mount one (a 1 MiB tmpfs to fill up; an ext4 image on a loop device,
// mounted errors=remount-ro, whose /sys/fs/ext4/<dev>/trigger_fs_error makes the kernel turn it
// read-only with the store open, as a failing disk does). Without root and mount(8) they skip,
// loudly; under CI=true they fail instead.

// unavailable skips the test, or fails it under CI=true.
func unavailable(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (required under CI=true: run the tests as root with mount(8), mkfs.ext4 and loop devices)", why)
	}
	t.Skip("SKIPPING: " + why + " (run as root with mount(8), mkfs.ext4 and loop devices)")
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// mountTmpfs mounts a tmpfs of size ("1m") on a fresh folder, unmounted by t.Cleanup (register
// cleanups that close files on it after calling this).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Getuid() != 0 {
		unavailable(t, "mounting a small file system needs root")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := run("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "scoregate-test", dir); err != nil {
		unavailable(t, err.Error())
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

func unmount(t *testing.T, dir string) {
	if err := run("umount", dir); err != nil {
		t.Errorf("%v (detaching it lazily)", err)
		run("umount", "-l", dir)
	}
}

// ext4 is an ext4 image mounted on a loop device with errors=remount-ro.
type ext4 struct {
	image, dir string
}

func mountExt4(t *testing.T) *ext4 {
	t.Helper()
	if os.Getuid() != 0 {
		unavailable(t, "mounting a file system image needs root")
	}
	base := t.TempDir()
	fs := &ext4{image: filepath.Join(base, "disk.img"), dir: filepath.Join(base, "mnt")}
	if err := os.Mkdir(fs.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fs.image, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(fs.image, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := run("mkfs.ext4", "-q", "-F", fs.image); err != nil {
		unavailable(t, err.Error())
	}
	if err := fs.mount(); err != nil {
		unavailable(t, err.Error())
	}
	t.Cleanup(func() {
		if fs.mounted() {
			unmount(t, fs.dir)
		}
	})
	return fs
}

func (fs *ext4) mount() error {
	return run("mount", "-o", "loop,errors=remount-ro", fs.image, fs.dir)
}

func (fs *ext4) mounted() bool {
	return exec.Command("mountpoint", "-q", fs.dir).Run() == nil
}

// turnReadOnly makes the kernel see an error on the file system, which errors=remount-ro turns
// into a read-only file system under every open file.
func (fs *ext4) turnReadOnly(t *testing.T) {
	t.Helper()
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", fs.dir).Output()
	if err != nil {
		unavailable(t, "findmnt: "+err.Error())
	}
	trigger := filepath.Join("/sys/fs/ext4", filepath.Base(strings.TrimSpace(string(out))), "trigger_fs_error")
	if err := os.WriteFile(trigger, []byte("scoregate fault test\n"), 0o200); err != nil {
		unavailable(t, "cannot trigger an ext4 error: "+err.Error())
	}
	probe := filepath.Join(fs.dir, "probe")
	if err := os.WriteFile(probe, nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("the file system did not turn read-only: writing a file gave %v", err)
	}
}

// repair unmounts the file system, checks and repairs it, and mounts it again read-write: the
// operator's fix.
func (fs *ext4) repair(t *testing.T) {
	t.Helper()
	if err := run("umount", fs.dir); err != nil {
		t.Fatal(err)
	}
	// e2fsck exits 1 when it corrected errors: the error the test triggered.
	if err := exec.Command("e2fsck", "-f", "-y", fs.image).Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() > 1 {
			t.Fatalf("e2fsck: %v", err)
		}
	}
	if err := fs.mount(); err != nil {
		t.Fatal(err)
	}
}

// fill writes a file into dir until the file system has no space left, and returns a func that
// removes it.
func fill(t *testing.T, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err = f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling %s: %v", dir, err)
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// checkBolt runs bbolt's consistency check over the whole file.
func checkBolt(t *testing.T, s *BoltStore) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("the store file is inconsistent: %v", err)
	}
}

// issued tracks the keys handed out, by service and slot: the ones that must keep working.
type issued map[string]string

func (is issued) regenerate(ctx context.Context, k *Keyring, service, slot string) error {
	key, err := k.Regenerate(ctx, service, slot)
	if err == nil {
		is[service+"/"+slot] = key
	}
	return err
}

// verifyAll checks that every issued key verifies, and that the keyring holds exactly those.
func (is issued) verifyAll(t *testing.T, k *Keyring, when string) {
	t.Helper()
	for ss, key := range is {
		service, slot, _ := strings.Cut(ss, "/")
		if got, ok := k.Verify(service, []byte(key)); !ok || got != slot {
			t.Errorf("%s: the %s key does not verify", when, ss)
		}
	}
	n := 0
	for range k.snapshot() {
		n++
	}
	if n != len(is) {
		t.Errorf("%s: the keyring holds %d keys, want the %d handed out", when, n, len(is))
	}
}

// checkSaved checks that the store holds exactly the keys of the keyring: a failed write left
// nothing half done on either side.
func checkSaved(t *testing.T, s *BoltStore, k *Keyring) {
	t.Helper()
	recs, err := s.Keys(context.Background())
	if err != nil {
		t.Fatalf("reading the keys back: %v", err)
	}
	mem := k.snapshot()
	if len(recs) != len(mem) {
		t.Errorf("the store holds %d keys, the keyring %d", len(recs), len(mem))
	}
	for _, r := range recs {
		if e := mem[r.ID]; e == nil || e.rec.Service != r.Service || e.rec.Slot != r.Slot {
			t.Errorf("the store holds key %s (%s/%s), which the keyring does not", r.ID, r.Service, r.Slot)
		}
	}
}

// checkStoreError checks that a failed write says what was being saved, where, and why.
func checkStoreError(t *testing.T, err error, errno syscall.Errno, what string) {
	t.Helper()
	if !errors.Is(err, errno) {
		t.Fatalf("error %v, want %v", err, errno)
	}
	for _, want := range []string{what, StoreFile, errno.Error()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestBoltStoreDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	ctx := context.Background()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	k, err := NewKeyring(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	is := issued{}
	for _, slot := range []string{SlotPrimary, SlotSecondary} {
		if err := is.regenerate(ctx, k, "iris", slot); err != nil {
			t.Fatal(err)
		}
	}
	free := fill(t, dir)

	// New keys need new pages: with no space left, one of them fails, and leaves no trace.
	var failed error
	for i := 0; i < 1000 && failed == nil; i++ {
		failed = is.regenerate(ctx, k, fmt.Sprintf("svc%d", i), SlotPrimary)
	}
	if failed == nil {
		t.Fatal("1000 new keys were saved on a full disk")
	}
	checkStoreError(t, failed, syscall.ENOSPC, "saving key svc")
	t.Logf("on a full disk: %v", failed)
	is.verifyAll(t, k, "after the failed write")

	// Regenerating a key in place may find room among pages freed by earlier writes; either it
	// fails and the old key stays, or it succeeds and the new one replaces it.
	old := is["iris/primary"]
	for range 20 {
		if err := is.regenerate(ctx, k, "iris", SlotPrimary); err != nil {
			checkStoreError(t, err, syscall.ENOSPC, "saving key iris/primary")
		}
	}
	if is["iris/primary"] != old {
		if _, ok := k.Verify("iris", []byte(old)); ok {
			t.Error("the replaced primary key still verifies")
		}
	}
	is.verifyAll(t, k, "after regenerating on a full disk")
	checkSaved(t, s, k)

	// Still full: the store reopens (the gateway restarts) without writing, with every key.
	checkBolt(t, s)
	s.Close()
	s2, err := OpenBolt(dir)
	if err != nil {
		t.Fatalf("reopening the store on a full disk: %v", err)
	}
	t.Cleanup(func() { s2.Close() })
	k2, err := NewKeyring(ctx, s2, nil)
	if err != nil {
		t.Fatalf("loading the keys from a full disk: %v", err)
	}
	is.verifyAll(t, k2, "after reopening on a full disk")

	// The fault clears: writes work again, in the same process.
	free()
	for _, svc := range []string{"iris", "after"} {
		if err := is.regenerate(ctx, k2, svc, SlotPrimary); err != nil {
			t.Fatalf("regenerating %s after space was freed: %v", svc, err)
		}
	}
	is.verifyAll(t, k2, "after space was freed")
	checkBolt(t, s2)
}

func TestBoltStoreDiskTurnsReadOnly(t *testing.T) {
	fs := mountExt4(t)
	ctx := context.Background()
	s, err := OpenBolt(fs.dir)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	k, err := NewKeyring(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	roles := NewRoles(&config.Config{})
	ps, err := NewPrincipals(ctx, s, k, roles, testOwnerKey)
	if err != nil {
		t.Fatal(err)
	}
	is := issued{}
	for _, slot := range []string{SlotPrimary, SlotSecondary} {
		if err := is.regenerate(ctx, k, "iris", slot); err != nil {
			t.Fatal(err)
		}
	}
	_, ritaKey, err := ps.Create(ctx, "rita", "reader")
	if err != nil {
		t.Fatal(err)
	}
	k.Verify("iris", []byte(is["iris/primary"])) // a use, for Flush to record
	live := Revocation{Issuer: "iss", JTI: "live", Expires: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
	for _, r := range []Revocation{live, {Issuer: "iss", JTI: "expired", Expires: time.Now().Add(-time.Hour)}} {
		if err := s.PutRevocation(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	fs.turnReadOnly(t)
	err = is.regenerate(ctx, k, "iris", SlotPrimary)
	checkStoreError(t, err, syscall.EROFS, "saving key iris/primary")
	t.Logf("on a read-only disk: %v", err)
	err = is.regenerate(ctx, k, "new", SlotPrimary)
	checkStoreError(t, err, syscall.EROFS, "saving key new/primary")
	_, _, err = ps.Create(ctx, "carl", "contributor")
	checkStoreError(t, err, syscall.EROFS, "saving principal carl")
	if err := k.Flush(ctx); !errors.Is(err, syscall.EROFS) {
		t.Errorf("recording key use on a read-only disk: %v, want EROFS", err)
	}
	is.verifyAll(t, k, "on the read-only disk")
	checkSaved(t, s, k)
	// Reading revocations drops expired ones from the file; that cannot be written now, and must
	// not stop the live ones from being read.
	if revs, err := s.Revocations(ctx); err != nil || len(revs) != 1 || revs[0].JTI != live.JTI {
		t.Errorf("revocations on a read-only disk: %v, %v; want the live one", revs, err)
	}
	if _, ok := ps.Lookup("carl"); ok {
		t.Error("a principal that could not be saved exists")
	}
	if _, err := ps.Authenticate([][]byte{[]byte("Bearer " + ritaKey)}); err != nil {
		t.Errorf("a principal saved before the fault: %v", err)
	}

	// The operator stops the gateway, repairs the file system and starts it again.
	s.Close()
	closed = true
	fs.repair(t)
	s2, err := OpenBolt(fs.dir)
	if err != nil {
		t.Fatalf("reopening the store after the repair: %v", err)
	}
	t.Cleanup(func() { s2.Close() })
	checkBolt(t, s2)
	k2, err := NewKeyring(ctx, s2, nil)
	if err != nil {
		t.Fatal(err)
	}
	is.verifyAll(t, k2, "after the repair")
	ps2, err := NewPrincipals(ctx, s2, k2, roles, testOwnerKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps2.Authenticate([][]byte{[]byte("Bearer " + ritaKey)}); err != nil {
		t.Errorf("a principal saved before the fault, after the repair: %v", err)
	}
	if _, ok := ps2.Lookup("carl"); ok {
		t.Error("a principal that could not be saved exists after the repair")
	}
	if err := is.regenerate(ctx, k2, "iris", SlotPrimary); err != nil {
		t.Fatalf("regenerating after the repair: %v", err)
	}
	is.verifyAll(t, k2, "after regenerating once repaired")
}

// Starting on a read-only disk fails with an error naming the store file and the cause; once the
// disk is writable again the store opens with every key.
func TestBoltStoreOpenOnReadOnlyDisk(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	ctx := context.Background()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKeyring(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	is := issued{}
	if err := is.regenerate(ctx, k, "iris", SlotPrimary); err != nil {
		t.Fatal(err)
	}
	s.Close()

	if err := run("mount", "-o", "remount,ro", dir); err != nil {
		t.Fatal(err)
	}
	_, err = OpenBolt(dir)
	checkStoreError(t, err, syscall.EROFS, "opening the embedded store "+filepath.Join(dir, StoreFile)+": read-only file system")
	t.Logf("opening on a read-only disk: %v", err)

	if err := run("mount", "-o", "remount,rw", dir); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	k2, err := NewKeyring(ctx, s2, nil)
	if err != nil {
		t.Fatal(err)
	}
	is.verifyAll(t, k2, "once the disk is writable")
	checkBolt(t, s2)
}

// ---------------------------------------------------------------------------------------------
// Redis answering slowly.

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h } // not used by authn
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}

// mark returns a position in the log, for find.
func (h *logRecorder) mark() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.recs)
}

// find returns the first record from the mark on with msg at level or above, rendered, or "".
func (h *logRecorder) find(from int, level slog.Level, msg string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs[from:] {
		if r.Level < level || r.Message != msg {
			continue
		}
		var b strings.Builder
		b.WriteString(r.Level.String() + " " + r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
			return true
		})
		return b.String()
	}
	return ""
}

// Redis slower than store.redis_timeout is Redis that does not answer: past the staleness bound
// the instance refuses to decide (ErrUnavailable, the gateway's 503), never accepts a token
// revoked meanwhile, and says so in its log; Redis slow but within the timeout changes nothing.
// Instance a talks to Redis directly; instance b through a proxy that delays Redis's answers.
func TestSlowRedis(t *testing.T) {
	srv := redistest.Start(t)
	px := redistest.NewProxy(t, srv.Addr)
	cfgA := redisConfig(t, config.Store{RedisURL: srv.URL()})
	cfgB := redisConfig(t, config.Store{RedisURL: px.URL()})
	// redisConfig's generous 1s timeout (the machine is shared), a bound of twice that.
	cfgB.Store.StalenessBound = 2 * time.Second
	timeout := cfgB.Store.RedisTimeout
	a := startInstance(t, cfgA)
	logs := &logRecorder{}
	b := startLoggedInstance(t, cfgB, slog.New(logs))
	ctx := context.Background()

	var key string
	var p Principal
	var revokedEarly, revokedLate TokenResponse
	retry := func(what string, f func() error) {
		t.Helper()
		var err error
		for range 5 {
			if err = f(); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: %v", what, err)
	}
	retry("regenerating the key", func() (err error) { key, err = a.keys.Regenerate(ctx, "iris", SlotPrimary); return })
	retry("creating the principal", func() (err error) { p, _, err = a.principals.Create(ctx, "rita", "reader"); return })
	retry("minting", func() (err error) { revokedEarly, err = a.tokens.Mint(ctx, p, "scoring"); return })
	retry("minting", func() (err error) { revokedLate, err = a.tokens.Mint(ctx, p, "scoring"); return })
	eventually(t, 5*time.Second, "b knows the key and the principal's tokens", func() bool {
		return b.checkKey(key) == nil && b.checkToken(revokedLate.AccessToken) == nil
	})

	t.Run("latency under redis_timeout changes nothing", func(t *testing.T) {
		px.SetDelay(timeout / 5)
		retry("revoking", func() error { _, err := a.tokens.RevokeToken(ctx, revokedEarly.AccessToken); return err })
		eventually(t, 5*time.Second, "b refuses the token revoked through a", func() bool {
			return errors.Is(b.checkToken(revokedEarly.AccessToken), ErrInvalidCredential)
		})
		// Longer than the staleness bound: b keeps deciding the whole time.
		for end := time.Now().Add(cfgB.Store.StalenessBound + time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if err := b.checkKey(key); err != nil {
				t.Fatalf("a good key with Redis %s slow: %v", timeout/5, err)
			}
			if err := b.checkToken(revokedEarly.AccessToken); !errors.Is(err, ErrInvalidCredential) {
				t.Fatalf("the revoked token with Redis %s slow: %v", timeout/5, err)
			}
		}
		if m := logs.find(0, slog.LevelWarn, "shared state is not current"); m != "" {
			t.Logf("a check ran over its timeout on this busy machine (b kept deciding): %s", m)
		}
	})

	t.Run("latency over redis_timeout stops decisions after the bound", func(t *testing.T) {
		from := logs.mark()
		px.SetDelay(timeout + timeout/2)
		slowSince := time.Now()
		// Revoked while b cannot hear of it: within the bound b may still accept it (its copy is
		// allowed to be that old), after it never.
		retry("revoking", func() error { _, err := a.tokens.RevokeToken(ctx, revokedLate.AccessToken); return err })
		pastBound := slowSince.Add(cfgB.Store.StalenessBound + 2*timeout) // the last good check may end late
		sawUnavailable := false
		for time.Now().Before(pastBound.Add(2 * time.Second)) {
			past := time.Now().After(pastBound)
			keyErr := b.checkKey(key)
			early := b.checkToken(revokedEarly.AccessToken)
			late := b.checkToken(revokedLate.AccessToken)
			switch {
			case errors.Is(keyErr, ErrInvalidCredential):
				t.Fatal("a good key was refused as invalid while Redis was slow (401 instead of 503)")
			case keyErr == nil && past:
				t.Fatalf("b still decides %s after Redis turned slow (bound %s)", time.Since(slowSince).Round(time.Millisecond), cfgB.Store.StalenessBound)
			case errors.Is(keyErr, ErrUnavailable):
				sawUnavailable = true
			}
			if early == nil {
				t.Fatal("a token revoked before Redis turned slow was accepted")
			}
			if late == nil && past {
				t.Fatal("a token revoked while Redis was slow was accepted past the staleness bound")
			}
			if past && !errors.Is(late, ErrUnavailable) && !errors.Is(late, ErrInvalidCredential) {
				t.Fatalf("the token revoked while Redis was slow: %v", late)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !sawUnavailable {
			t.Fatal("b never refused to decide")
		}
		m := logs.find(from, slog.LevelWarn, "shared state is not current")
		if m == "" {
			t.Fatal("no warning that the shared state is not current")
		}
		if !strings.Contains(m, "timeout") && !strings.Contains(m, "deadline") {
			t.Errorf("the warning does not say Redis timed out: %s", m)
		}
		t.Logf("log: %s", m)
		if m := logs.find(from, slog.LevelError, "shared state is older than the staleness bound; answering 503 until the store answers"); m == "" {
			t.Error("no error line when the copy passed the staleness bound and requests began to get 503")
		}
	})

	t.Run("latency back under redis_timeout resumes decisions", func(t *testing.T) {
		from := logs.mark()
		px.SetDelay(timeout / 5)
		eventually(t, 10*time.Second, "b decides again", func() bool { return b.checkKey(key) == nil })
		eventually(t, 5*time.Second, "b refuses the token revoked while Redis was slow", func() bool {
			return errors.Is(b.checkToken(revokedLate.AccessToken), ErrInvalidCredential)
		})
		if err := b.checkToken(revokedEarly.AccessToken); !errors.Is(err, ErrInvalidCredential) {
			t.Errorf("the token revoked before: %v", err)
		}
		eventually(t, 5*time.Second, "the recovery is logged", func() bool {
			return logs.find(from, slog.LevelInfo, "shared state is current again") != ""
		})
	})
}
