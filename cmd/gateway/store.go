package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/certstore"
)

// cmdStore is "gateway store copy|reinit|seal-certificates -config FILE". copy copies the
// embedded store in store.dir into the Redis store the same file names, for a deployment
// outgrowing one node; the gateway using store.dir must be stopped (the embedded store allows one
// process). reinit makes a new Redis store after Redis lost the gateway's data (see storeReinit).
// seal-certificates encrypts the certificate storage (see sealCertificates).
func cmdStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("store", flag.ContinueOnError)
	path := fs.String("config", os.Getenv("GATEWAY_CONFIG"), "configuration `file` naming both store.dir and the Redis store")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (pos[0] != "copy" && pos[0] != "reinit" && pos[0] != "seal-certificates") || *path == "" {
		return usagef("usage: gateway store copy|reinit|seal-certificates -config FILE")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("configuration %s: %w", *path, err)
	}
	if pos[0] == "seal-certificates" {
		return sealCertificates(ctx, cfg, stdout)
	}
	if !cfg.Store.Shared() {
		return fmt.Errorf("%s names no Redis store (store.redis_url or store.redis_addrs) to %s", *path, pos[0])
	}
	if pos[0] == "reinit" {
		return storeReinit(ctx, cfg, stdout)
	}
	bolt, err := authn.OpenBolt(cfg.Store.Dir)
	if err != nil {
		return err
	}
	defer bolt.Close()
	snap, err := authn.Export(ctx, bolt)
	if err != nil {
		return fmt.Errorf("reading %s: %w", cfg.Store.Dir, err)
	}
	rs, err := authn.OpenRedis(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer rs.Close()
	if err := rs.Import(ctx, snap); err != nil {
		return fmt.Errorf("copying into Redis: %w", err)
	}
	fmt.Fprintf(stdout, "copied %d keys, %d principals, %d signing keys, %d revocations and %d activity records from %s into Redis\n",
		len(snap.Keys), len(snap.Principals), len(snap.SigningKeys), len(snap.Revocations), len(snap.Activity), cfg.Store.Dir)
	return nil
}

// sealCertificates encrypts, with tls.storage_key, every value of the certificate storage the
// configuration names that is still stored in clear: the one step that turns on encryption for a
// storage in use. Running it again seals nothing more. Instances without the key must be stopped
// first, or they write values in clear again.
func sealCertificates(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	key, err := storageKey(cfg.TLS)
	if err != nil {
		return err
	}
	if key == nil {
		return errors.New("seal-certificates needs tls.storage_key, tls.storage_key_file or GATEWAY_TLS_STORAGE_KEY")
	}
	var redis *authn.RedisStore
	if cfg.Store.Shared() && cfg.TLS.StorageRedisURL == "" {
		if redis, err = authn.OpenRedis(ctx, cfg.Store); err != nil {
			return err
		}
		defer redis.Close()
	}
	st, _, closer, err := plainCertStorage(cfg, redis, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer closer()
	n, err := certstore.SealStored(ctx, st, key)
	if err != nil {
		return fmt.Errorf("sealing the certificate storage (%d values sealed before the error): %w", n, err)
	}
	fmt.Fprintf(stdout, "sealed %d values of the certificate storage (%v)\n", n, st)
	return nil
}

// storeReinit is the recovery step for a Redis that lost the gateway's data when no backup is
// restored: a new store, with a new hashing secret. It refuses a store that lost nothing.
func storeReinit(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	id, err := authn.ReinitRedis(ctx, cfg.Store)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `re-initialised the Redis store: new store id %s.
Every service key, principal and token made before is void. Now:
  1. restart every gateway instance (running ones keep answering 503 until then);
  2. regenerate each service's keys (gateway keys regenerate SERVICE primary|secondary) and hand them out;
  3. create the principals again (gateway principals create NAME ROLE);
  4. revoke again the tokens of external issuers that were revoked (the activity log lists them).
`, id)
	return nil
}
