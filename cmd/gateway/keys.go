package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/scoregate/scoregate/admin"
	"github.com/scoregate/scoregate/config"
)

// adminFlags are the flags every admin API client command takes.
type adminFlags struct {
	url     string
	keyFile string
}

func (f *adminFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("GATEWAY_ADMIN_URL")
	if def == "" {
		def = "http://" + config.DefaultAdminListen
	}
	fs.StringVar(&f.url, "admin", def, "admin API `URL` (or GATEWAY_ADMIN_URL)")
	fs.StringVar(&f.keyFile, "key-file", "", "read the admin key from this `file` when GATEWAY_ADMIN_KEY is not set (for example data/admin.key)")
}

func (f *adminFlags) client() (*admin.Client, error) {
	key := os.Getenv("GATEWAY_ADMIN_KEY")
	if key == "" && f.keyFile != "" {
		b, err := os.ReadFile(f.keyFile)
		if err != nil {
			return nil, fmt.Errorf("reading admin key: %w", err)
		}
		key = strings.TrimSpace(string(b))
	}
	if key == "" {
		return nil, usagef("set GATEWAY_ADMIN_KEY to an admin key (the Owner's is in <store.dir>/admin.key), or pass -key-file")
	}
	return admin.NewClient(f.url, key)
}

func cmdKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, pos, err := adminCommand("keys", args, stderr, nil)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("keys needs a subcommand: list SERVICE, or regenerate SERVICE primary|secondary")
	}
	switch pos[0] {
	case "list":
		if len(pos) != 2 {
			return usagef("usage: gateway keys list SERVICE")
		}
		var out admin.KeySet
		if err := c.Do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(pos[1])+"/keys", nil, &out); err != nil {
			return err
		}
		return printJSON(stdout, out)
	case "regenerate":
		if len(pos) != 3 || (pos[2] != "primary" && pos[2] != "secondary") {
			return usagef("usage: gateway keys regenerate SERVICE primary|secondary")
		}
		var out admin.NewKey
		path := "/v1/services/" + url.PathEscape(pos[1]) + "/keys/" + pos[2] + "/regenerate"
		if err := c.Do(ctx, http.MethodPost, path, nil, &out); err != nil {
			return err
		}
		return printJSON(stdout, out)
	default:
		return usagef("unknown keys subcommand %q (list, regenerate)", pos[0])
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
