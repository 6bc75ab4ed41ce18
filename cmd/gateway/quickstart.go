package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"syscall"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/chatmodel"
)

func cmdQuickstart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	listen := fs.String("listen", config.DefaultListen, "data-plane `address`")
	adminListen := fs.String("admin-listen", config.DefaultAdminListen, "admin API `address`")
	dir := fs.String("dir", "quickstart-data", "embedded store `folder`")
	modelKind := fs.String("model", "score", "sample `model` to serve: score (a scoring model, POST /score) or chat (an OpenAI-compatible language model)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("quickstart takes no arguments")
	}

	var (
		model   *sampleModel
		chat    *chatmodel.Model
		handler http.Handler
	)
	switch *modelKind {
	case "score":
		model = trainSampleModel()
		handler = model.handler()
	case "chat":
		chat = chatmodel.New(chatmodel.Options{TokenDelay: chatmodel.DefaultTokenDelay})
		handler = chat
	default:
		return usagef("quickstart -model must be score or chat, not %q", *modelKind)
	}
	modelLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("starting the sample model: %w", err)
	}
	modelSrv := newSampleServer(handler)
	go modelSrv.Serve(modelLn)
	defer modelSrv.Close()

	service := config.Service{
		Name:      "demo",
		Auth:      config.AuthKey,
		Upstreams: []string{"http://" + modelLn.Addr().String()},
	}
	if chat != nil {
		service.API = config.APIOpenAI // the gateway reads the token usage of its calls
	}
	cfg := &config.Config{
		Listen:      *listen,
		AdminListen: *adminListen,
		ComputeType: "quickstart",
		Store:       config.Store{Dir: *dir},
		Log:         config.Log{Level: "warn", Format: "text"},
		Services:    []config.Service{service},
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
		if chat != nil {
			printChatBanner(stdout, in, chat.Name(), modelLn.Addr(), key)
			return nil
		}
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

// chatExample is the question quickstart -model chat's curl line asks.
const chatExample = "Who is the White Rabbit?"

// printChatBanner says where quickstart -model chat's model answers and how to call it: with curl,
// and with an OpenAI client whose base_url is the service's URL and whose API key is the key.
func printChatBanner(w io.Writer, in *instance, modelName string, modelAddr net.Addr, key string) {
	baseURL := fmt.Sprintf("http://%s/api/v1/service/demo/v1", in.dataAddr)
	keyPath, _ := filepath.Abs(in.keyPath)
	body := fmt.Sprintf(`{"model": %q, "messages": [{"role": "user", "content": %q}]}`, modelName, chatExample)
	fmt.Fprintf(w, `scoregate quickstart is running.

  model        %s, a small OpenAI-compatible language model (a Markov chain over
               "Alice's Adventures in Wonderland"), at http://%s
  base_url     %s (OpenAI clients: the primary key is the API key)
  primary key  %s
  admin API    http://%s (Owner key in %s)
  status page  http://%s/ui/ (sign in with the Owner key)

Ask it something:

  curl -sS -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '%s' %s/chat/completions

Add "stream": true to the body for a streamed answer (and -N to curl). Without the key the gateway
answers 401. Ctrl-C stops everything.
`, modelName, modelAddr, baseURL, key, in.adminAddr, keyPath, in.adminAddr, key, body, baseURL)
}
