package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Configuration reload through the binary, under steady load on a key-mode service: SIGHUP with a
// valid file (a service added, the key-mode service's upstream changed, the log level raised), with
// an invalid one (an unknown key, a bad upstream), then POST /v1/reload with a valid and an
// invalid file and from a reader. No request to the loaded service fails; a rejected file leaves
// the running configuration serving, is logged at error level naming the fields, and every reload
// is in the activity log.
func TestReloadUnderLoad(t *testing.T) {
	a, b, c := startModelReplica(t, "A"), startModelReplica(t, "B"), startModelReplica(t, "C")
	dir := t.TempDir()
	top := fmt.Sprintf("store:\n  dir: %q\n", filepath.Join(dir, "data"))
	iris := func(upstream string) string {
		return fmt.Sprintf("  - name: iris\n    auth: key\n    upstreams: [%q]\n", upstream)
	}
	added := fmt.Sprintf("  - name: added\n    auth: none\n    upstreams: [%q]\n", c.url())
	cfgPath := writeTrafficConfig(t, dir, top, iris(a.url()))
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfgPath)
	key := newPrimaryKey(t, p)
	irisURL, addedURL := p.dataURL+"/api/v1/service/iris/score", p.dataURL+"/api/v1/service/added/score"

	// Steady load on iris: four clients, each sending its next request as soon as the last is
	// answered.
	var (
		mu       sync.Mutex
		failures []string
		total    atomic.Int64
	)
	client := loadClient(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := post(client, irisURL, key)
				total.Add(1)
				if err != nil || resp.StatusCode != 200 {
					mu.Lock()
					failures = append(failures, fmt.Sprint(resp, err))
					mu.Unlock()
				}
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	time.Sleep(300 * time.Millisecond)

	// 1. SIGHUP with a valid file: a service added, iris moved from A to B, debug logging.
	writeTrafficConfig(t, dir, top+"log:\n  level: debug\n", iris(b.url())+added)
	p.cmd.Process.Signal(syscall.SIGHUP)
	rec := waitForReload(t, p, 1)
	if rec.Initiator != "SIGHUP" || rec.Result != "success" || rec.Target != cfgPath {
		t.Errorf("activity record of the SIGHUP reload = %+v, want success by SIGHUP on %s", rec, cfgPath)
	}
	if s := status(t, addedURL, ""); s != 200 {
		t.Errorf("the added service: %d, want 200", s)
	}
	bBefore := b.scored.Load()
	time.Sleep(300 * time.Millisecond)
	if b.scored.Load() == bBefore {
		t.Error("iris's new upstream got no request after the reload")
	}
	aBefore := a.scored.Load()
	time.Sleep(300 * time.Millisecond)
	if n := a.scored.Load() - aBefore; n != 0 {
		t.Errorf("iris's old upstream still got %d requests after the reload", n)
	}
	waitForLog(t, p, "replaced replicas stopped") // a debug line: the new log level is applied

	// 2. SIGHUP with an invalid file: the running configuration keeps serving.
	writeTrafficConfig(t, dir, top+"bogus_key: 1\n", iris("ftp://127.0.0.1:1"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	rec = waitForReload(t, p, 2)
	if rec.Initiator != "SIGHUP" || rec.Result != "failed" || !strings.Contains(rec.Target, "bogus_key: unknown field") ||
		!strings.Contains(rec.Target, "services[0].upstreams[0]") {
		t.Errorf("activity record of the rejected reload = %+v, want failed, with the reasons", rec)
	}
	line := waitForLog(t, p, "configuration reload rejected")
	var logged struct {
		Level    string
		Problems []string
	}
	if err := json.Unmarshal([]byte(line), &logged); err != nil || logged.Level != "ERROR" || len(logged.Problems) != 2 ||
		!strings.HasPrefix(logged.Problems[0], "bogus_key: unknown field") || !strings.HasPrefix(logged.Problems[1], "services[0].upstreams[0]: ") {
		t.Errorf("the rejection was logged as %s (%v), want an error naming bogus_key and services[0].upstreams[0]", line, err)
	}
	if s := status(t, addedURL, ""); s != 200 {
		t.Errorf("the added service after the rejected reload: %d, want 200", s)
	}

	// 3. POST /v1/reload: a valid file (added removed, iris back on A), an invalid one (a restart-
	// only setting changed), and a reader, who may not.
	writeTrafficConfig(t, dir, top, iris(a.url()))
	var sum struct{ Added, Removed, Changed []string }
	if s := adminCall(t, p, "POST", "/v1/reload", "", &sum); s != 200 {
		t.Fatalf("POST /v1/reload: %d", s)
	}
	if d := cmp.Diff(struct{ Added, Removed, Changed []string }{[]string{}, []string{"added"}, []string{"iris"}}, sum); d != "" {
		t.Errorf("POST /v1/reload summary (-want +got):\n%s", d)
	}
	if rec := waitForReload(t, p, 3); rec.Initiator != "owner" || rec.Result != "success" {
		t.Errorf("activity record of the POST = %+v, want success by owner", rec)
	}
	if s := status(t, addedURL, ""); s != 404 {
		t.Errorf("the removed service: %d, want 404", s)
	}

	os.WriteFile(cfgPath, []byte(strings.Replace(string(mustRead(t, cfgPath)), `listen: "127.0.0.1:0"`, `listen: "127.0.0.1:1"`, 1)), 0o600)
	var rejected struct{ Problems []string }
	if s := adminCall(t, p, "POST", "/v1/reload", "", &rejected); s != 400 {
		t.Fatalf("POST /v1/reload with listen changed: %d, want 400", s)
	}
	if d := cmp.Diff([]string{"listen: changed: restart the gateway to apply it"}, rejected.Problems); d != "" {
		t.Errorf("POST /v1/reload problems (-want +got):\n%s", d)
	}
	if rec := waitForReload(t, p, 4); rec.Result != "failed" || !strings.Contains(rec.Target, "listen: changed") {
		t.Errorf("activity record of the rejected POST = %+v", rec)
	}

	var reader struct{ Key string }
	if s := adminCall(t, p, "POST", "/v1/principals", `{"name": "rita", "role": "reader"}`, &reader); s != 201 {
		t.Fatalf("creating a reader: %d", s)
	}
	req, _ := http.NewRequest(http.MethodPost, p.adminURL+"/v1/reload", nil)
	req.Header.Set("Authorization", "Bearer "+reader.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("POST /v1/reload by a reader: %d, want 403", resp.StatusCode)
	}
	if rec := waitForReload(t, p, 5); rec.Initiator != "rita" || rec.Result != "denied" {
		t.Errorf("activity record of the reader's POST = %+v, want denied for rita", rec)
	}

	time.Sleep(300 * time.Millisecond)
	stopLoad()
	t.Logf("%d requests to iris across five reloads", total.Load())
	if len(failures) > 0 {
		t.Errorf("%d of %d requests to iris failed across the reloads, want 0; first: %s", len(failures), total.Load(), failures[0])
	}
	if total.Load() < 100 {
		t.Errorf("only %d requests under load", total.Load())
	}
}

type activityRecord struct {
	Operation, Initiator, Target, Result string
}

// waitForReload waits until the activity log, read with the CLI, holds n config.reload records,
// and returns the newest.
func waitForReload(t *testing.T, p *proc, n int) activityRecord {
	t.Helper()
	var reloads []activityRecord
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, code := runAdmin(t, p, sharedOwnerKey, "activity", "-limit", "100")
		var recs []activityRecord
		if code != 0 || json.Unmarshal([]byte(out), &recs) != nil {
			t.Fatalf("gateway activity: exit %d: %s", code, out)
		}
		reloads = slices.DeleteFunc(recs, func(r activityRecord) bool { return r.Operation != "config.reload" })
		if len(reloads) >= n {
			return reloads[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d config.reload records in the activity log after 10s, want %d\n%s", len(reloads), n, p.stderr)
		}
	}
}

// waitForLog waits for a log line containing msg and returns it.
func waitForLog(t *testing.T, p *proc, msg string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for line := range strings.SplitSeq(p.stderr.String(), "\n") {
			if strings.Contains(line, msg) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q after 10s\n%s", msg, p.stderr)
		}
	}
}
