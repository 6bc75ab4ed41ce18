package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
)

// ExampleNew publishes a model as service "iris" behind a key, and calls it with and without
// the key.
func ExampleNew() {
	ctx := context.Background()

	// Keys live in the embedded store; the gateway only asks authn whether a key is good.
	dir, err := os.MkdirTemp("", "scoregate-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := authn.OpenBolt(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	keys, err := authn.NewKeyring(ctx, store, nil)
	if err != nil {
		log.Fatal(err)
	}
	key, err := keys.Regenerate(ctx, "iris", authn.SlotPrimary)
	if err != nil {
		log.Fatal(err)
	}

	// The model: it shows which path it was called at and whether it saw the credential.
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"path":%q,"authorization":%q}`, r.URL.RequestURI(), r.Header.Get("Authorization"))
	}))
	defer model.Close()

	cfg := &config.Config{Services: []config.Service{
		{Name: "iris", Auth: config.AuthKey, Upstreams: []string{model.URL}},
	}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		log.Fatal(err)
	}
	gw, err := proxy.New(cfg, authn.NewAuthenticator(keys), nil)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go gw.Serve(ln)
	defer gw.Shutdown(ctx)

	client := &http.Client{}
	defer client.CloseIdleConnections()
	call := func(credential string) {
		req, err := http.NewRequest("POST", "http://"+ln.Addr().String()+"/api/v1/service/iris/score?version=2",
			strings.NewReader(`{"data":[[5.1,3.5,1.4,0.2]]}`))
		if err != nil {
			log.Fatal(err)
		}
		if credential != "" {
			req.Header.Set("Authorization", "Bearer "+credential)
		}
		resp, err := client.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, string(body))
		if challenge := resp.Header.Get("WWW-Authenticate"); challenge != "" {
			fmt.Println("WWW-Authenticate:", challenge)
		}
	}
	call(key)
	call("")
	// Output:
	// 200 {"path":"/score?version=2","authorization":""}
	// 401 {"error":{"code":"Unauthorized","message":"a valid credential is required"}}
	// WWW-Authenticate: Bearer realm="scoregate"
}
