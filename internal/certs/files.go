package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/scoregate/scoregate/config"
)

// fileCert is one user-supplied certificate and key pair, reloaded when either file changes.
type fileCert struct {
	files config.CertFiles
	cert  atomic.Pointer[tls.Certificate] // with Leaf set
	stamp string                          // modification times and sizes of the loaded files
}

// fileSet is the user-supplied certificates, in configuration order.
type fileSet struct {
	certs []*fileCert
	log   *slog.Logger
}

// loadFiles reads every configured pair; any unreadable pair is an error at start.
func loadFiles(files []config.CertFiles, log *slog.Logger) (*fileSet, error) {
	s := &fileSet{log: log}
	for i, f := range files {
		fc := &fileCert{files: f}
		cert, stamp, err := loadPair(f)
		if err != nil {
			return nil, fmt.Errorf("tls.certificates[%d]: %w", i, err)
		}
		fc.cert.Store(cert)
		fc.stamp = stamp
		s.certs = append(s.certs, fc)
	}
	return s, nil
}

func loadPair(f config.CertFiles) (*tls.Certificate, string, error) {
	stamp, err := fileStamp(f)
	if err != nil {
		return nil, "", err
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, "", err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, "", err
		}
	}
	return &cert, stamp, nil
}

// fileStamp identifies the current content of a pair's files without reading them.
func fileStamp(f config.CertFiles) (string, error) {
	var stamp string
	for _, name := range []string{f.CertFile, f.KeyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

// run checks the files every interval and swaps in a changed pair once it loads; a pair that
// does not load (a half-written file, a key that does not match) is logged and the old one kept.
func (s *fileSet) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, fc := range s.certs {
			s.reload(fc)
		}
	}
}

func (s *fileSet) reload(fc *fileCert) {
	stamp, err := fileStamp(fc.files)
	if err != nil || stamp == fc.stamp {
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("checking certificate files", "cert_file", fc.files.CertFile, "err", err)
		}
		return
	}
	cert, stamp, err := loadPair(fc.files)
	if err != nil {
		s.log.Error("certificate files changed but do not load; still serving the previous certificate",
			"cert_file", fc.files.CertFile, "key_file", fc.files.KeyFile, "err", err)
		return
	}
	fc.cert.Store(cert)
	fc.stamp = stamp
	s.log.Info("certificate files reloaded", "cert_file", fc.files.CertFile, "names", cert.Leaf.DNSNames,
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

// match returns the first certificate valid for name, or nil.
func (s *fileSet) match(name string) *tls.Certificate {
	if name == "" {
		return nil
	}
	for _, fc := range s.certs {
		c := fc.cert.Load()
		if c.Leaf.VerifyHostname(name) == nil {
			return c
		}
	}
	return nil
}

// first is the certificate served when nothing else matches.
func (s *fileSet) first() *tls.Certificate {
	if len(s.certs) == 0 {
		return nil
	}
	return s.certs[0].cert.Load()
}
