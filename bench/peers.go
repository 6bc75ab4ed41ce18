package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/scoregate/scoregate/authn"
)

// peer is one row of the comparison: something that answers the scoring route of the service
// "bench" by forwarding to the shared model.
type peer struct {
	name   string     // row name, matched by -only
	kind   string     // ceiling, floor, scoregate, haproxy or nginx
	note   string     // what it is, for the report
	base   string     // URL a profile's path is appended to
	auth   bool       // whether it demands a credential
	creds  []string   // Authorization values, sent in turn
	wrong  string     // an Authorization value it must refuse
	proc   *process   // the process whose CPU is the proxy's; nil for the model alone
	aux    []*process // helpers of its own (Redis), stopped with it
	status string     // statusOK, statusAbsent or statusFailed
	detail string     // why it is absent or failed, or what its check saw
}

// Peer states.
const (
	statusOK     = "ok"
	statusAbsent = "absent"
	statusFailed = "failed"
)

// stop ends the peer's processes.
func (p *peer) stop() {
	if p.proc != nil {
		p.proc.stop()
	}
	for _, a := range p.aux {
		a.stop()
	}
}

// target is what a load generator sends to p for one profile.
func (p *peer) target(prof profile) target {
	return target{url: p.base + prof.path, contentType: prof.contentType, body: prof.body, creds: p.creds}
}

// absent describes a peer that cannot run here.
func absent(name, kind, why string) *peer {
	return &peer{name: name, kind: kind, status: statusAbsent, detail: why}
}

// failed marks p as failed with err, stopping whatever it started.
func failed(p *peer, err error) *peer {
	p.stop()
	p.status, p.detail = statusFailed, err.Error()
	return p
}

// lookBinary finds a peer's program on PATH or in /usr/sbin, where Debian puts nginx and haproxy.
func lookBinary(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err == nil {
		return p, true
	}
	return "", false
}

// ceilingPeer is the model reached directly: no proxy, the best any peer can do.
func (h *harness) ceilingPeer() *peer {
	return &peer{name: "upstream alone", kind: "ceiling", status: statusOK,
		note: "the model reached directly: the ceiling", base: "http://" + h.upstreamAddr}
}

// floorPeer starts the featureless fasthttp proxy with one scheduler thread.
func (h *harness) floorPeer(ctx context.Context) *peer {
	p := &peer{name: "floor (fasthttp)", kind: "floor", note: "a fasthttp proxy with no features, GOMAXPROCS=1"}
	proc, addrs, err := startOnFreePorts(ctx, 1, 10*time.Second, func(a []string) (*process, error) {
		return h.startSelf("floor", roleFloor, a[0], "GOMAXPROCS=1", upstreamEnv+"="+h.upstreamAddr)
	})
	if err != nil {
		return failed(p, err)
	}
	p.proc, p.base = proc, "http://"+addrs[0]+servicePrefix
	p.status = statusOK
	return p
}

// peerKey is a credential in scoregate's key shape for the peers that check a static list.
func peerKey() string {
	key, _ := authn.NewKey(authn.ServiceKeyPrefix)
	return key
}

// wrongKey is a well-formed key that no peer knows.
func wrongKey() string { return "Bearer " + peerKey() }

// haproxyConfig does scoregate's job for one key-mode service: 404 off the route, 401 unless the
// Authorization header is in the key list (an ACL over a pattern file), the credential removed,
// the prefix stripped, keep-alive connections to the model reused.
var haproxyConfig = template.Must(template.New("haproxy").Parse(`global
    nbthread 1
    maxconn {{.MaxConn}}
    log stderr format raw local0 err

defaults
    mode http
    maxconn {{.MaxConn}}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout http-request 10s

frontend bench
    bind {{.Listen}}
    http-request return status 404 content-type application/json string "{\"error\": {\"code\": \"NotFound\", \"message\": \"no such service\"}}" unless { path_beg {{.Prefix}}/ }
    http-request return status 401 content-type application/json hdr WWW-Authenticate "Bearer realm=\"bench\"" string "{\"error\": {\"code\": \"Unauthorized\", \"message\": \"missing or invalid credential\"}}" unless { req.hdr(authorization) -m str -f {{.Keys}} }
    http-request del-header authorization
    http-request set-path %[path,regsub(^{{.Prefix}},)]
    default_backend model

backend model
    http-reuse always
    server model {{.Upstream}} maxconn 512
`))

// haproxyMaxConn is as many connections as HAProxy can take under the open-file limit (it needs
// two descriptors a connection and refuses to start when maxconn would need more).
func haproxyMaxConn() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur < 4096 {
		return 1000
	}
	return min(40000, (l.Cur-1000)/2)
}

// haproxyPeer starts HAProxy in the foreground with one thread, its configuration and log in
// the scratch folder's name folder.
func (h *harness) haproxyPeer(ctx context.Context, name string) *peer {
	p := &peer{name: "haproxy", kind: "haproxy", auth: true,
		note: "HAProxy, nbthread 1: ACL on a key list file, del-header, set-path, http-reuse always"}
	bin, ok := lookBinary("haproxy")
	if !ok {
		return absent(p.name, p.kind, "haproxy is not installed (apt-get install -y haproxy)")
	}
	key := "Bearer " + peerKey()
	proc, addr, err := h.startHAProxy(ctx, bin, name, []string{key})
	if err != nil {
		return failed(p, err)
	}
	p.proc, p.base, p.creds, p.wrong, p.status = proc, "http://"+addr+servicePrefix, []string{key}, wrongKey(), statusOK
	return p
}

// startHAProxy writes the configuration and key list for keys and starts HAProxy on a free port.
func (h *harness) startHAProxy(ctx context.Context, bin, name string, keys []string) (*process, string, error) {
	dir := filepath.Join(h.tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	keysPath := filepath.Join(dir, "keys.lst")
	if err := os.WriteFile(keysPath, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		return nil, "", err
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	proc, addrs, err := startOnFreePorts(ctx, 1, 10*time.Second, func(a []string) (*process, error) {
		if err := writeTemplate(cfgPath, haproxyConfig, map[string]any{
			"Listen": a[0], "Prefix": servicePrefix, "Keys": keysPath, "Upstream": h.upstreamAddr, "MaxConn": haproxyMaxConn()}); err != nil {
			return nil, err
		}
		return h.start(name, nil, bin, "-f", cfgPath, "-db")
	})
	if err != nil {
		return nil, "", err
	}
	return proc, addrs[0], nil
}

// nginxConfig does the same job as haproxyConfig: a map from the Authorization header to
// "allowed", upstream keepalive with HTTP/1.1, the prefix stripped by proxy_pass. Buffers are sized
// so that the large profile's 64 KB bodies stay in memory, as they do in the other peers.
var nginxConfig = template.Must(template.New("nginx").Parse(`worker_processes 1;
worker_rlimit_nofile 40000;
user root;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;

events {
    worker_connections 16000;
}

http {
    access_log off;
    client_body_temp_path {{.Dir}}/client_body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_max_body_size 16m;
    client_body_buffer_size 128k;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    proxy_busy_buffers_size 64k;
    map_hash_bucket_size 128;
    map_hash_max_size 2097152;

    map $http_authorization $key_ok {
        default 0;
        include {{.Keys}};
    }

    upstream model {
        server {{.Upstream}};
        keepalive 512;
        keepalive_requests 1000000;
    }

    server {
        listen {{.Listen}} backlog=4096;
        default_type application/json;

        location {{.Prefix}}/ {
            if ($key_ok = 0) {
                add_header WWW-Authenticate 'Bearer realm="bench"' always;
                return 401 '{"error": {"code": "Unauthorized", "message": "missing or invalid credential"}}';
            }
            proxy_pass http://model/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
        }

        location / {
            return 404 '{"error": {"code": "NotFound", "message": "no such service"}}';
        }
    }
}
`))

// nginxPeer starts nginx in the foreground: a master and one worker.
func (h *harness) nginxPeer(ctx context.Context) *peer {
	p := &peer{name: "nginx", kind: "nginx", auth: true,
		note: "nginx, worker_processes 1: map on the Authorization header, upstream keepalive, proxy_http_version 1.1"}
	bin, ok := lookBinary("nginx")
	if !ok {
		return absent(p.name, p.kind, "nginx is not installed (apt-get install -y nginx)")
	}
	key := "Bearer " + peerKey()
	dir := filepath.Join(h.tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return failed(p, err)
	}
	keysPath := filepath.Join(dir, "keys.map")
	if err := os.WriteFile(keysPath, []byte(fmt.Sprintf("%q 1;\n", key)), 0o600); err != nil {
		return failed(p, err)
	}
	cfgPath := filepath.Join(dir, "nginx.conf")
	proc, addrs, err := startOnFreePorts(ctx, 1, 10*time.Second, func(a []string) (*process, error) {
		if err := writeTemplate(cfgPath, nginxConfig, map[string]string{
			"Dir": dir, "Listen": a[0], "Prefix": servicePrefix, "Keys": keysPath, "Upstream": h.upstreamAddr}); err != nil {
			return nil, err
		}
		return h.start("nginx", nil, bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", cfgPath, "-g", "daemon off;")
	})
	if err != nil {
		return failed(p, err)
	}
	p.proc, p.base, p.creds, p.wrong, p.status = proc, "http://"+addrs[0]+servicePrefix, []string{key}, wrongKey(), statusOK
	return p
}

func writeTemplate(path string, t *template.Template, data any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := t.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}
