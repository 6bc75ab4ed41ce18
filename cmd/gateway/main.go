// Command gateway is scoregate: a reverse proxy that guards machine-learning scoring endpoints.
// This package holds the flags, the subcommands and the wiring; request handling lives in proxy,
// credentials in authn, the admin API in admin.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// errUsage marks a command-line mistake: exit status 2.
var errUsage = errors.New("usage")

// usageError is a command-line mistake with its explanation.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }
func (e usageError) Is(target error) bool {
	return target == errUsage
}

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

const usage = `gateway: scoregate, a gateway for model scoring endpoints

Usage:
  gateway quickstart [-model score|chat] [-listen ADDR] [-admin-listen ADDR] [-dir DIR]
  gateway serve -config FILE           (or GATEWAY_CONFIG=FILE)
  gateway check-config -config FILE
  gateway store copy -config FILE      (copy the embedded store into the Redis store)
  gateway store reinit -config FILE    (make a new Redis store after Redis lost the gateway's data)
  gateway store seal-certificates -config FILE (encrypt the certificate storage with tls.storage_key)
  gateway keys list SERVICE            (admin API client; -admin URL, GATEWAY_ADMIN_KEY)
  gateway keys regenerate SERVICE primary|secondary
  gateway principals list | create NAME ROLE | delete NAME
  gateway token SERVICE
  gateway revoke -token JWT | -jti ID -exp UNIX_SECONDS
  gateway activity [-limit N]
  gateway usage [-service S] [-principal NAME | -key KEY_ID] [-since 24h] [-until TIME] [-json]
  gateway version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	stopProfile := func() {}
	if len(os.Args) > 1 && (os.Args[1] == "serve" || os.Args[1] == "quickstart") {
		// Only a serving process: a CLI command run beside it must not overwrite its profile.
		stopProfile = startCPUProfile(os.Getenv("GATEWAY_CPUPROFILE"))
	}
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "gateway: %v\n", err)
		fmt.Fprint(os.Stderr, "run 'gateway help' for usage\n")
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "gateway: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "quickstart":
		return cmdQuickstart(ctx, args, stdout, stderr)
	case "serve":
		return cmdServe(ctx, args, stderr)
	case "check-config":
		return cmdCheckConfig(args, stdout, stderr)
	case "keys":
		return cmdKeys(ctx, args, stdout, stderr)
	case "principals":
		return cmdPrincipals(ctx, args, stdout, stderr)
	case "token":
		return cmdToken(ctx, args, stdout, stderr)
	case "revoke":
		return cmdRevoke(ctx, args, stdout, stderr)
	case "activity":
		return cmdActivity(ctx, args, stdout, stderr)
	case "usage":
		return cmdUsage(ctx, args, stdout, stderr)
	case "store":
		return cmdStore(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return usagef("unknown command %q", cmd)
	}
}

func versionString() string {
	commit := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	return fmt.Sprintf("scoregate %s (commit %s, %s)", version, commit, runtime.Version())
}

// parseFlags parses fs from args, allowing flags after positional arguments, and returns the
// positional ones.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	fs.SetOutput(stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// startCPUProfile writes a pprof CPU profile of the whole run to path (GATEWAY_CPUPROFILE), for
// finding where a request's time goes under real load; "" does nothing.
func startCPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gateway: GATEWAY_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
