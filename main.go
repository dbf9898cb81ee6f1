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
  jobs list|show ID|cancel ID [--force]|complete ID
                 list, inspect, cancel or complete jobs
  top            a live view of the running sidecar, refreshed every second (--once, --plain)
  demo           run the built-in demo: a simulated store, a loader, and sluice between them
  version        print the version

status and jobs take --json. Configuration is SLUICE_* environment variables (README.md).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runSidecar(stderr)
	case "check-config":
		return checkConfig(stdout, stderr)
	case "status", "jobs":
		return cli.Run(append([]string{cmd}, args...), os.Getenv, stdout, stderr)
	case "top":
		return cli.Top(args, os.Getenv, stdout, stderr)
	case "demo":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return demo.Run(ctx, args, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "sluice", sidecar.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
	return 2
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
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(sidecar.MemoryLimit(cfg))
	}
	srv, err := sidecar.NewServer(cfg, sidecar.Options{Logger: log})
	if err != nil {
		return startupFailed(stderr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx); err != nil {
		return startupFailed(stderr, err)
	}
	return 0
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
