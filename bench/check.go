package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

var checkClient = &http.Client{Timeout: 10 * time.Second}

// checkPeer makes sure p does the job before anything is measured on it: without a credential
// and with a wrong one it answers 401, with its credentials (the first and the last of a pool) it
// answers 200 with the model's answer, for every profile. A peer without auth must answer 200.
func checkPeer(ctx context.Context, p *peer, profs []profile) (string, error) {
	first := profs[0]
	if !p.auth {
		for _, prof := range profs {
			if err := expect(ctx, p.target(prof), "", http.StatusOK, prof.wantInBody); err != nil {
				return "", err
			}
		}
		return "200 without a credential (no auth)", nil
	}
	// Refusals are checked with a small body: a gateway may answer 401 and close the connection
	// before a large body is sent, which the client sees as a reset.
	refused := p.target(first)
	refused.body, refused.contentType = fastBody, "application/json"
	if err := expect(ctx, refused, "", http.StatusUnauthorized, ""); err != nil {
		return "", fmt.Errorf("without a credential: %w", err)
	}
	if err := expect(ctx, refused, p.wrong, http.StatusUnauthorized, ""); err != nil {
		return "", fmt.Errorf("with a wrong credential: %w", err)
	}
	for _, prof := range profs {
		for _, cred := range []string{p.creds[0], p.creds[len(p.creds)-1]} {
			if err := expect(ctx, p.target(prof), cred, http.StatusOK, prof.wantInBody); err != nil {
				return "", fmt.Errorf("with its credential, %s profile: %w", prof.name, err)
			}
		}
	}
	return "401 without and with a wrong credential, 200 with its own", nil
}

// expect sends one request of t with the Authorization value auth ("" for none) and checks the
// status and, if want is set, that the body contains it.
func expect(ctx context.Context, t target, auth string, status int, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", t.contentType)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := checkClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != status {
		return fmt.Errorf("POST %s: status %d, want %d (%s)", t.url, resp.StatusCode, status, clip(body))
	}
	if want != "" && !bytes.Contains(body, []byte(want)) {
		return fmt.Errorf("POST %s: the answer lacks %q (%s)", t.url, want, clip(body))
	}
	return nil
}

// clip shortens a body for an error message.
func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
