package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"syscall"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
)

func cmdQuickstart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	listen := fs.String("listen", config.DefaultListen, "data-plane `address`")
	adminListen := fs.String("admin-listen", config.DefaultAdminListen, "admin API `address`")
	dir := fs.String("dir", "quickstart-data", "embedded store `folder`")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("quickstart takes no arguments")
	}

	model := trainSampleModel()
	modelLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("starting the sample model: %w", err)
	}
	modelSrv := newSampleServer(model)
	go modelSrv.Serve(modelLn)
	defer modelSrv.Close()

	cfg := &config.Config{
		Listen:      *listen,
		AdminListen: *adminListen,
		ComputeType: "quickstart",
		Store:       config.Store{Dir: *dir},
		Log:         config.Log{Level: "warn", Format: "text"},
		Services: []config.Service{{
			Name:      "demo",
			Auth:      config.AuthKey,
			Upstreams: []string{"http://" + modelLn.Addr().String()},
		}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, _ := newLogger(cfg.Log, stderr)

	// Only hashes are stored, so a key cannot be shown twice: quickstart makes a new primary key
	// at every start and prints it.
	var key string
	prepare := func(keys *authn.Keyring) error {
		key, err = keys.Regenerate(ctx, "demo", authn.SlotPrimary)
		return err
	}
	err = serve(ctx, cfg, configSource{}, log, hooks{prepare: prepare, ready: func(in *instance) error {
		scoreURL := fmt.Sprintf("http://%s/api/v1/service/demo/score", in.dataAddr)
		keyPath, _ := filepath.Abs(in.keyPath)
		fmt.Fprintf(stdout, `scoregate quickstart is running.

  model        logistic regression over 4 features (training accuracy %.1f%%), at http://%s
  scoring URL  %s
  primary key  %s
  admin API    http://%s (Owner key in %s)
  status page  http://%s/ui/ (sign in with the Owner key)

Score two rows:

  curl -sS -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '%s' %s

Without the key the gateway answers 401. Ctrl-C stops everything.
`, model.accuracy*100, modelLn.Addr(), scoreURL, key, in.adminAddr, keyPath, in.adminAddr, key, sampleExample, scoreURL)
		return nil
	}})
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w (choose free ports with -listen and -admin-listen)", err)
	}
	return err
}
