package config

import (
	"net/url"
	"strings"
)

// weakeningRedisOptions are the Redis URL query options that weaken TLS to Redis. go-redis
// v9.23.0's ParseURL (and ParseFailoverURL) read exactly one, skip_verify, which turns off the
// verification of Redis's certificate; ParseClusterURL reads none, and no parser has an option
// for the TLS version or cipher suites. Any value is refused, false too: the option is a switch
// one edit away from off, and a private CA is given by store.redis_ca_file instead.
var weakeningRedisOptions = []string{"skip_verify"}

// redisURLProblem says what is wrong with a Redis URL (redis:// or rediss://), or "". The message
// never repeats the URL, which may hold a password.
func redisURLProblem(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return "must look like redis://[user:password@]host:port/db or rediss://…"
	}
	for name := range u.Query() {
		for _, weak := range weakeningRedisOptions {
			if strings.EqualFold(name, weak) {
				return name + " would turn off the verification of Redis's certificate, so that anyone on the path could read and change the gateway's secrets; remove it, and for a Redis behind a private CA give its roots in store.redis_ca_file"
			}
		}
	}
	return ""
}

// RedisUsesTLS reports whether the connection to the store's Redis uses TLS: a rediss:// URL, or
// redis_addrs with redis_tls.
func (s Store) RedisUsesTLS() bool {
	if s.RedisURL != "" {
		return strings.HasPrefix(strings.ToLower(s.RedisURL), "rediss://")
	}
	return len(s.RedisAddrs) > 0 && s.RedisTLS
}

// validateRedisTLS checks store.redis_url's options and the Redis TLS files.
func validateRedisTLS(st Store, add func(path, format string, args ...any)) {
	if st.RedisURL != "" {
		if p := redisURLProblem(st.RedisURL); p != "" {
			add("store.redis_url", "%s", p)
		}
	}
	if (st.RedisCertFile == "") != (st.RedisKeyFile == "") {
		add("store.redis_cert_file", "redis_cert_file and redis_key_file go together (the client certificate Redis asks for)")
	}
	if st.Shared() && !st.RedisUsesTLS() {
		for _, f := range []struct{ path, value string }{
			{"store.redis_ca_file", st.RedisCAFile},
			{"store.redis_cert_file", st.RedisCertFile},
		} {
			if f.value != "" {
				add(f.path, "set, but the Redis connection does not use TLS (use rediss://, or redis_tls with redis_addrs)")
			}
		}
	}
}
