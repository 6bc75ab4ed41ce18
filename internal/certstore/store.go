package certstore

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

// The data scripts take KEYS = index, values, modified (see Storage) and, where they look below a
// key, ARGV lo and hi: the ZRANGEBYLEX bounds of every key under it (see below).

// storeScript: ARGV key, value, modified, lo, hi, ancestors... Returns 0 when stored, i when the
// i-th ancestor is a file, -1 when key is a directory.
var storeScript = redis.NewScript(`
for i = 6, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then return i - 5 end
end
if #redis.call('ZRANGEBYLEX', KEYS[1], ARGV[4], ARGV[5], 'LIMIT', 0, 1) > 0 then return -1 end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 0`)

// loadScript: ARGV key, lo, hi. Returns {1, value} for a file, {2} for a directory, {0} otherwise.
var loadScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v then return {1, v} end
if #redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, 1) > 0 then return {2} end
return {0}`)

// existsScript: ARGV key, lo, hi. Returns 1 for a file or a directory, 0 otherwise.
var existsScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
return #redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, 1)`)

// statScript: ARGV key, lo, hi. Returns {1, size, modified} for a file, {2, latest modified} for
// a directory, {0} otherwise. Modification times are decimal strings, compared by length first.
var statScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {1, redis.call('HSTRLEN', KEYS[2], ARGV[1]), redis.call('HGET', KEYS[3], ARGV[1]) or '0'}
end
local keys = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3])
if #keys == 0 then return {0} end
local latest = '0'
for _, k in ipairs(keys) do
  local m = redis.call('HGET', KEYS[3], k) or '0'
  if #m > #latest or (#m == #latest and m > latest) then latest = m end
end
return {2, latest}`)

// listScript: ARGV key, lo, hi. Returns {1} for a file, else {0, every key below}.
var listScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {1} end
return {0, redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3])}`)

// deleteScript: ARGV key, lo, hi. Deletes the key and every key below it; returns how many.
var deleteScript = redis.NewScript(`
local n = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  n = 1
end
local keys = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3])
for i = 1, #keys, 1000 do
  local j = math.min(i + 999, #keys)
  redis.call('HDEL', KEYS[2], unpack(keys, i, j))
  redis.call('HDEL', KEYS[3], unpack(keys, i, j))
end
if #keys > 0 then redis.call('ZREMRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3]) end
return n + #keys`)

// clean turns a certmagic key into its stored form, like FileStorage's filepath.Join: "a//b/",
// "/a/b" and "a/./b" are all "a/b", and "" (or "/", ".") is the root directory. ".." cannot climb
// above the root.
func clean(key string) string {
	return strings.TrimPrefix(path.Clean("/"+key), "/")
}

// below returns the ZRANGEBYLEX bounds of every key under the directory k: from "k/" inclusive to
// "k0" exclusive ('0' follows '/'), which is exactly the keys starting with "k/"; the whole index
// for the root.
func below(k string) (lo, hi string) {
	if k == "" {
		return "-", "+"
	}
	return "[" + k + "/", "(" + k + "0"
}

// ancestors returns the directories above k, outermost first: "a", "a/b" for "a/b/c".
func ancestors(k string) []any {
	var out []any
	for i := range len(k) {
		if k[i] == '/' {
			out = append(out, k[:i])
		}
	}
	return out
}

func (s *Storage) run(ctx context.Context, script *redis.Script, k string, extra ...any) *redis.Cmd {
	ctx, cancel := s.call(ctx)
	defer cancel()
	lo, hi := below(k)
	return script.Run(ctx, s.client, s.dataKeys(), append([]any{k, lo, hi}, extra...)...)
}

// Store implements certmagic.Storage. It fails when key is a directory or lies below a file.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	k := clean(key)
	if k == "" {
		return fmt.Errorf("certstore: storing %q: the root is a directory", key)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	lo, hi := below(k)
	args := append([]any{k, value, strconv.FormatInt(time.Now().UnixNano(), 10), lo, hi}, ancestors(k)...)
	res, err := storeScript.Run(ctx, s.client, s.dataKeys(), args...).Int()
	switch {
	case err != nil:
		return fmt.Errorf("certstore: storing %q: %w", key, err)
	case res == -1:
		return fmt.Errorf("certstore: storing %q: it is a directory", key)
	case res > 0:
		return fmt.Errorf("certstore: storing %q: %q is a file, not a directory", key, args[5+res-1])
	}
	return nil
}

// Load implements certmagic.Storage. A missing key is an error wrapping fs.ErrNotExist; loading a
// directory is a different error, as with FileStorage.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	k := clean(key)
	if k == "" {
		return nil, fmt.Errorf("certstore: loading %q: it is a directory", key)
	}
	res, err := s.run(ctx, loadScript, k).Slice()
	if err != nil {
		return nil, fmt.Errorf("certstore: loading %q: %w", key, err)
	}
	switch kind(res) {
	case 1:
		v, _ := res[1].(string)
		return []byte(v), nil
	case 2:
		return nil, fmt.Errorf("certstore: loading %q: it is a directory", key)
	}
	return nil, fmt.Errorf("certstore: loading %q: %w", key, fs.ErrNotExist)
}

// Delete implements certmagic.Storage: it deletes key and, when key is a directory, every key
// below it, in one step. A missing key is not an error. Delete("") is refused.
func (s *Storage) Delete(ctx context.Context, key string) error {
	k := clean(key)
	if k == "" {
		return fmt.Errorf("certstore: deleting %q: refusing to delete the root", key)
	}
	if err := s.run(ctx, deleteScript, k).Err(); err != nil {
		return fmt.Errorf("certstore: deleting %q: %w", key, err)
	}
	return nil
}

// Exists implements certmagic.Storage: it reports whether key is a file or a directory. It
// reports false when Redis cannot be asked.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	k := clean(key)
	if k == "" {
		return true
	}
	n, err := s.run(ctx, existsScript, k).Int()
	if err != nil {
		s.log.Debug("certstore: checking whether a key exists", "key", key, "error", err)
		return false
	}
	return n == 1
}

// Stat implements certmagic.Storage. Key is reported as given. A directory has Size 0 and, as
// Modified, the latest modification of a file in it.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	k := clean(key)
	res, err := s.run(ctx, statScript, k).Slice()
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", key, err)
	}
	switch kind(res) {
	case 1:
		size, _ := res[1].(int64)
		return certmagic.KeyInfo{Key: key, Modified: unixNano(res[2]), Size: size, IsTerminal: true}, nil
	case 2:
		return certmagic.KeyInfo{Key: key, Modified: unixNano(res[1])}, nil
	}
	if k == "" {
		return certmagic.KeyInfo{Key: key}, nil // the root always exists
	}
	return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", key, fs.ErrNotExist)
}

// List implements certmagic.Storage the way FileStorage walks a directory: the keys directly in
// dir, files and directories alike, or with recursive every key below it, each directory followed
// by its contents; names in byte order within a directory. Listing a file returns nothing;
// listing a missing directory is an error wrapping fs.ErrNotExist.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	k := clean(dir)
	res, err := s.run(ctx, listScript, k).Slice()
	if err != nil {
		return nil, fmt.Errorf("certstore: listing %q: %w", dir, err)
	}
	if kind(res) == 1 || len(res) < 2 {
		return nil, nil
	}
	files, _ := res[1].([]any)
	if len(files) == 0 {
		if k == "" {
			return nil, nil
		}
		return nil, fmt.Errorf("certstore: listing %q: %w", dir, fs.ErrNotExist)
	}
	seen := map[string]bool{}
	var out []string
	add := func(rel string) {
		key := path.Join(k, rel)
		if !seen[key] {
			seen[key] = true
			out = append(out, key)
		}
	}
	for _, f := range files {
		rel, _ := f.(string)
		if k != "" {
			rel = rel[len(k)+1:]
		}
		for i := range len(rel) {
			if rel[i] == '/' {
				add(rel[:i]) // a directory on the way
				if !recursive {
					break
				}
			}
		}
		if recursive || !strings.Contains(rel, "/") {
			add(rel)
		}
	}
	slices.SortFunc(out, walkOrder)
	return out, nil
}

// walkOrder orders keys as a depth-first walk with sorted names visits them: component by
// component, so "a/b", "a/b/c", "a/b.c" (where plain byte order puts "a/b.c" before "a/b/c").
func walkOrder(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		switch {
		case a[i] == b[i]:
		case a[i] == '/':
			return -1
		case b[i] == '/':
			return 1
		default:
			return cmp.Compare(a[i], b[i])
		}
	}
	return cmp.Compare(len(a), len(b))
}

// kind returns the leading number of a script's array reply.
func kind(res []any) int64 {
	if len(res) == 0 {
		return 0
	}
	n, _ := res[0].(int64)
	return n
}

func unixNano(v any) time.Time {
	str, _ := v.(string)
	n, err := strconv.ParseInt(str, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
