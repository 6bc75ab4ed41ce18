package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/scoregate/scoregate/admin"
)

// adminCommand parses the flags shared by admin API commands plus any of its own, and returns
// the client and the positional arguments.
func adminCommand(name string, args []string, stderr io.Writer, own func(*flag.FlagSet)) (*admin.Client, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var af adminFlags
	af.register(fs)
	if own != nil {
		own(fs)
	}
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return nil, nil, err
	}
	c, err := af.client()
	return c, pos, err
}

func cmdPrincipals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, pos, err := adminCommand("principals", args, stderr, nil)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 1 && pos[0] == "list":
		var out []admin.PrincipalInfo
		if err := c.Do(ctx, http.MethodGet, "/v1/principals", nil, &out); err != nil {
			return err
		}
		return printJSON(stdout, out)
	case len(pos) == 3 && pos[0] == "create":
		var out admin.NewPrincipal
		if err := c.Do(ctx, http.MethodPost, "/v1/principals", map[string]string{"name": pos[1], "role": pos[2]}, &out); err != nil {
			return err
		}
		return printJSON(stdout, out)
	case len(pos) == 2 && pos[0] == "delete":
		if err := c.Do(ctx, http.MethodDelete, "/v1/principals/"+url.PathEscape(pos[1]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s\n", pos[1])
		return nil
	}
	return usagef("usage: gateway principals list | create NAME ROLE | delete NAME")
}

func cmdToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, pos, err := adminCommand("token", args, stderr, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: gateway token SERVICE")
	}
	var out map[string]any
	if err := c.Do(ctx, http.MethodPost, "/v1/services/"+url.PathEscape(pos[0])+"/token", nil, &out); err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func cmdRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var req admin.RevokeRequest
	c, pos, err := adminCommand("revoke", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&req.Token, "token", "", "the `JWT` to revoke")
		fs.StringVar(&req.JTI, "jti", "", "the `id` of the token to revoke (with -exp)")
		fs.Int64Var(&req.Exp, "exp", 0, "the token's expiry, in unix `seconds` (with -jti)")
		fs.StringVar(&req.Iss, "iss", "", "the token's `issuer`, when it is not the gateway")
	})
	if err != nil {
		return err
	}
	if len(pos) != 0 || (req.Token == "") == (req.JTI == "") || (req.JTI != "" && req.Exp == 0) {
		return usagef("usage: gateway revoke -token JWT | -jti ID -exp UNIX_SECONDS [-iss ISSUER]")
	}
	var out map[string]string
	if err := c.Do(ctx, http.MethodPost, "/v1/tokens/revoke", req, &out); err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func cmdActivity(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	limit := 20
	c, pos, err := adminCommand("activity", args, stderr, func(fs *flag.FlagSet) {
		fs.IntVar(&limit, "limit", 20, "how many records, newest first (1 to 1000)")
	})
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("usage: gateway activity [-limit N]")
	}
	var out []map[string]any
	if err := c.Do(ctx, http.MethodGet, "/v1/activity?limit="+strconv.Itoa(limit), nil, &out); err != nil {
		return err
	}
	return printJSON(stdout, out)
}
