package authn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/config"
)

// errRedisSkipVerify refuses a Redis URL that turns off certificate verification; validation
// refuses it first, this guards callers that skip validation.
var errRedisSkipVerify = errors.New("store.redis_url: skip_verify is refused: Redis's certificate is always verified (give a private CA in store.redis_ca_file)")

// secureRedisTLS completes the TLS configuration of a connection to Redis (nil: no TLS) from
// store.redis_ca_file and the client certificate, and refuses one that skips verification.
func secureRedisTLS(conf *tls.Config, cfg config.Store) error {
	if conf == nil {
		return nil
	}
	if conf.InsecureSkipVerify {
		return errRedisSkipVerify
	}
	conf.MinVersion = max(conf.MinVersion, tls.VersionTLS12)
	if cfg.RedisCAFile != "" {
		pem, err := os.ReadFile(cfg.RedisCAFile)
		if err != nil {
			return fmt.Errorf("store.redis_ca_file: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("store.redis_ca_file %s: no PEM certificate in it", cfg.RedisCAFile)
		}
	}
	if cfg.RedisCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.RedisCertFile, cfg.RedisKeyFile)
		if err != nil {
			return fmt.Errorf("store.redis_cert_file and store.redis_key_file: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// OpenRedisClient returns a client of the Redis at url (redis:// or rediss://) for another use
// than the store, such as tls.storage_redis_url: TLS verified as the store's (store.redis_ca_file
// and the client certificate), calls bounded by store.redis_timeout and never retried. It does
// not connect until first used. The error never repeats the URL, which may hold a password.
func OpenRedisClient(field, url string, cfg config.Store) (redis.UniversalClient, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("%s is not a valid Redis URL", field)
	}
	if err := secureRedisTLS(opts.TLSConfig, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	tune(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.PoolTimeout, &opts.MaxRetries, cfg.RedisTimeout)
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts), nil
}
