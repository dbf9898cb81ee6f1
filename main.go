// Command sluice is an adaptive rate limiter and backpressure sidecar for
// bulk writers. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/sluice-dev/sluice/cli"
	"github.com/sluice-dev/sluice/demo"
	"github.com/sluice-dev/sluice/sidecar"
)

const usage = `usage: sluice [command]

commands:
  run            run the sidecar (the default)
  check-config   print the effective configuration, or every invalid variable (exit 2)
  status         show the running sidecar's status (SLUICE_ADMIN_URL)
  jobs list|show ID|cancel ID [--force]|complete ID|reopen ID|delete ID
                 list, inspect, cancel, complete, reopen or delete jobs
  top            a live view of the running sidecar, refreshed every second (--once, --plain)
  demo           run the built-in demo: a simulated store, a loader, and sluice between them
  version        print the version

sluice COMMAND --help (or sluice help COMMAND) says more about each.
status and jobs take --json. Configuration is SLUICE_* environment variables (README.md).
`

// usages are the usage texts of the commands this file runs; status and
// jobs have theirs in package cli, demo its flags in package demo.
var usages = map[string]string{
	"run": `usage: sluice run

Runs the sidecar: the proxy on SLUICE_LISTEN_ADDR in front of the store at
SLUICE_UPSTREAM_URL, and the admin API on SLUICE_ADMIN_ADDR, until SIGTERM,
SIGINT or POST /quitquitquit on the admin API. It is what sluice does with
no command.

It takes no arguments: every setting is a SLUICE_* environment variable
(README.md). A bad configuration exits 2 naming the variable;
sluice check-config checks one without starting anything.
`,
	"check-config": `usage: sluice check-config

Reads the SLUICE_* environment variables as sluice run would, and prints
the effective configuration, one VARIABLE=value a line, secrets redacted;
or every invalid variable, once each, and exits 2. Unknown SLUICE_*
variables are warned about, with the closest known name. Nothing is
started.
`,
	"version": `usage: sluice version

Prints the version: the release it was built as, or else the module
version or the commit (and whether it had uncommitted changes) that
the Go toolchain recorded in the binary.
`,
	"demo": `usage: sluice demo [flags]

Runs the built-in demo: a simulated store whose capacity changes, a loader
that writes as fast as it may, and sluice between them, with a live view of
the rate limit following the capacity. Needs no configuration.

flags:
`,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "help", "-h", "-help", "--help":
		// sluice help COMMAND is sluice COMMAND --help.
		if len(args) > 0 && args[0] != "help" && !isHelpFlag(args[0]) {
			return run([]string{args[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	case "status", "jobs":
		return cli.Run(append([]string{cmd}, args...), os.Getenv, stdout, stderr)
	case "top":
		return cli.Top(args, os.Getenv, stdout, stderr)
	case "demo":
		if wantsHelp(args) {
			return demoHelp(stdout)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return demo.Run(ctx, args, stdout, stderr)
	case "--version":
		cmd = "version"
	}
	u, ok := usages[cmd]
	if !ok {
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if wantsHelp(args) {
		fmt.Fprint(stdout, u)
		return 0
	}
	if len(args) > 0 {
		// An argument would be ignored, and a setting given as a flag
		// (--upstream=…) silently lost: say so before starting anything.
		fmt.Fprintf(stderr, "sluice %s: unexpected argument %q\n\n%s", cmd, args[0], u)
		return 2
	}
	switch cmd {
	case "run":
		return runSidecar(stderr)
	case "check-config":
		return checkConfig(stdout, stderr)
	case "version":
		bi, _ := debug.ReadBuildInfo()
		fmt.Fprintln(stdout, "sluice", version(sidecar.Version, bi))
		return 0
	}
	panic("BUG: sluice " + cmd + " has a usage and no command")
}

// isHelpFlag reports whether arg asks for help, as the flag package
// would take it.
func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

func wantsHelp(args []string) bool { return slices.ContainsFunc(args, isHelpFlag) }

// demoHelp prints the demo's usage and its flags. The flags are the demo's
// own: asked for -h, its flag set prints them and returns before anything
// starts, and the exit status of that is not this command's.
func demoHelp(stdout io.Writer) int {
	var flags strings.Builder
	demo.Run(context.Background(), []string{"-h"}, io.Discard, &flags)
	_, defaults, _ := strings.Cut(flags.String(), "\n") // "Usage of sluice demo:"
	fmt.Fprint(stdout, usages["demo"]+defaults)
	return 0
}

// version is the stamped release (-X …sidecar.Version=v1.2.3), or, in a
// build without one (go install, go build), what the toolchain recorded:
// the main module's version, or else the commit, marked when the tree had
// uncommitted changes.
func version(stamped string, bi *debug.BuildInfo) string {
	if stamped != "dev" || bi == nil {
		return stamped
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return stamped
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		return "dev (commit " + rev + ", modified)"
	}
	return "dev (commit " + rev + ")"
}

func runSidecar(stderr io.Writer) int {
	cfg, warnings, err := sidecar.LoadConfig(os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, "sluice: invalid configuration:", err)
		return 2
	}
	log := sidecar.NewLogger(cfg, stderr)
	for _, w := range warnings {
		log.Warn(w)
	}
	sidecar.SetRuntimeLimits(cfg)
	srv, err := sidecar.NewServer(cfg, sidecar.Options{Logger: log})
	if err != nil {
		return startupFailed(stderr, err)
	}
	ctx, stop := stopOnSignal()
	defer stop()
	if err := srv.Run(ctx); err != nil {
		return startupFailed(stderr, err)
	}
	return 0
}

// stopOnSignal returns a context that ends at the first SIGTERM or
// SIGINT, which starts the graceful shutdown. The signals are then no
// longer caught, before the context ends: a second one, from an operator
// who will not wait out a drain of SLUICE_SHUTDOWN_TIMEOUT, ends the
// process at once instead of being swallowed.
func stopOnSignal() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
		}
		signal.Stop(sigs)
		cancel()
	}()
	return ctx, cancel
}

func startupFailed(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "sluice:", err)
	var se *sidecar.StartupError
	if errors.As(err, &se) {
		return 2
	}
	return 1
}

func checkConfig(stdout, stderr io.Writer) int {
	cfg, warnings, err := sidecar.LoadConfig(os.Environ())
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	var ce *sidecar.ConfigError
	if errors.As(err, &ce) {
		fmt.Fprintln(stderr, "sluice: invalid configuration:")
		for _, p := range ce.Problems {
			fmt.Fprintln(stderr, "  "+p)
		}
		return 2
	}
	for _, kv := range cfg.Effective() {
		fmt.Fprintf(stdout, "%s=%s\n", kv[0], kv[1])
	}
	return 0
}
