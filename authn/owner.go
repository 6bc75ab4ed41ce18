package authn

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// AdminKeyFile is the file, in the store folder, that holds the generated Owner key.
const AdminKeyFile = "admin.key"

// OwnerKey returns the Owner's admin key: fromEnv when it is set (GATEWAY_ADMIN_KEY), otherwise
// the key in dir/admin.key, generated and written with mode 0600 on first use. path is the file
// the key was read from or written to ("" for fromEnv) and created says whether it was written now.
func OwnerKey(dir, fromEnv string) (key, path string, created bool, err error) {
	if fromEnv != "" {
		if len(fromEnv) < MinAdminKeyLen {
			return "", "", false, fmt.Errorf("GATEWAY_ADMIN_KEY must be at least %d characters", MinAdminKeyLen)
		}
		return fromEnv, "", false, nil
	}
	path = filepath.Join(dir, AdminKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		key = strings.TrimSpace(string(b))
		if len(key) < MinAdminKeyLen {
			return "", path, false, fmt.Errorf("%s holds no usable admin key (at least %d characters)", path, MinAdminKeyLen)
		}
		return key, path, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", path, false, fmt.Errorf("reading admin key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", path, false, fmt.Errorf("creating store folder: %w", err)
	}
	key, _ = NewKey(PrincipalKeyPrefix)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", path, false, fmt.Errorf("writing admin key: %w", err)
	}
	if _, err := f.WriteString(key + "\n"); err != nil {
		f.Close()
		return "", path, false, fmt.Errorf("writing admin key: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", path, false, fmt.Errorf("writing admin key: %w", err)
	}
	return key, path, true, nil
}
