package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

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

func cmdUsage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var service, principal, key, since, until string
	var asJSON bool
	c, pos, err := adminCommand("usage", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&service, "service", "", "only this `service`")
		fs.StringVar(&principal, "principal", "", "only the calls made with tokens of this principal (its `name`)")
		fs.StringVar(&key, "key", "", "only the calls made with this service key (its `id`, as gateway keys list shows it)")
		fs.StringVar(&since, "since", "24h", "from this `time` (RFC 3339) or this long ago (90m, 24h, 7d); usage is kept 31 days")
		fs.StringVar(&until, "until", "", "up to this `time` (RFC 3339) or this long ago; default now")
		fs.BoolVar(&asJSON, "json", false, "print the admin API's JSON answer instead of a table")
	})
	if err != nil {
		return err
	}
	if len(pos) != 0 || (principal != "" && key != "") {
		return usagef("usage: gateway usage [-service S] [-principal NAME | -key KEY_ID] [-since 24h] [-until TIME] [-json]")
	}
	q := url.Values{}
	for name, v := range map[string]string{"service": service, "principal": principal, "key": key, "since": since, "until": until} {
		if v != "" {
			q.Set(name, v)
		}
	}
	var out admin.UsageAnswer
	if err := c.Do(ctx, http.MethodGet, "/v1/usage?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, out)
	}
	printUsage(stdout, out)
	return nil
}

// printUsage prints a usage answer as a table: a row per hour, service, caller and model, then
// the totals.
func printUsage(w io.Writer, u admin.UsageAnswer) {
	const stamp = "2006-01-02 15:04"
	fmt.Fprintf(w, "Token usage from %s to %s UTC\n", u.Since.UTC().Format(stamp), u.Until.UTC().Format(stamp))
	if len(u.Rows) == 0 {
		fmt.Fprintln(w, "none recorded")
		return
	}
	table := [][]string{{"HOUR (UTC)", "SERVICE", "CALLER", "MODEL", "INPUT", "OUTPUT", "CALLS"}}
	for _, r := range u.Rows {
		table = append(table, []string{r.Hour.UTC().Format(stamp), r.Service, r.Caller, r.Model,
			strconv.FormatInt(r.InputTokens, 10), strconv.FormatInt(r.OutputTokens, 10), strconv.FormatInt(r.Calls, 10)})
	}
	table = append(table, []string{"TOTAL", "", "", "", strconv.FormatInt(u.Totals.InputTokens, 10),
		strconv.FormatInt(u.Totals.OutputTokens, 10), strconv.FormatInt(u.Totals.Calls, 10)})
	width := make([]int, len(table[0]))
	for _, row := range table {
		for i, cell := range row {
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	for _, row := range table {
		var line strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			switch {
			case i >= 4: // numbers, aligned right
				line.WriteString("  " + pad + cell)
			case i == 0:
				line.WriteString(cell + pad)
			default:
				line.WriteString("  " + cell + pad)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(line.String(), " "))
	}
	if u.Truncated {
		fmt.Fprintf(w, "(only the first %d rows and their totals: narrow the query with -service, -principal, -key, -since or -until)\n", len(u.Rows))
	}
}
