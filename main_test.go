package main

import (
	"bytes"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sidecar"
)

// TestBadConfigExits2 runs `sluice run` and `sluice check-config` with
// configuration mistakes: both exit 2 naming the variable, run on one line.
func TestBadConfigExits2(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"SLUICE_UPSTREAM_URL": ""}, "SLUICE_UPSTREAM_URL"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "not a url"}, "SLUICE_UPSTREAM_URL"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_MIN_RATE": "-3"}, "SLUICE_MIN_RATE"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_MIN_RATE": "100", "SLUICE_MAX_RATE": "10", "SLUICE_INITIAL_RATE": "50"}, "SLUICE_MIN_RATE"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_QUEUE_TIMEOUT": "10 parsecs"}, "SLUICE_QUEUE_TIMEOUT"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_ADMIN_TOKEN": "REPLACE-ME-with-openssl-rand-hex-32"}, "SLUICE_ADMIN_TOKEN"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_AUTO_CANCEL_CAUSES": "store_throttling,loader_hung"}, "SLUICE_AUTO_CANCEL_CAUSES"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var stdout, stderr bytes.Buffer
		if code := run([]string{"run"}, &stdout, &stderr); code != 2 {
			t.Errorf("%v: run exit %d, want 2", tc.env, code)
		}
		if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); lines != 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: run said %q, want one line naming %s", tc.env, stderr.String(), tc.want)
		}
		stderr.Reset()
		if code := run([]string{"check-config"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: check-config exit %d, said %q", tc.env, code, stderr.String())
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
}

func TestCheckConfigPrintsEffective(t *testing.T) {
	t.Setenv("SLUICE_UPSTREAM_URL", "http://127.0.0.1:9200/?api_key=k3y-s3cret")
	t.Setenv("SLUICE_ADMIN_TOKEN", "s3cret-token-0a9f4c")
	t.Setenv("SLUICE_PROFILE", "elasticsearch")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check-config"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "SLUICE_PROFILE=elasticsearch\n") || !strings.Contains(out, "SLUICE_LISTEN_ADDR=127.0.0.1:8080\n") {
		t.Errorf("check-config output lacks settings:\n%s", out)
	}
	if strings.Contains(out, "s3cret-token-0a9f4c") || strings.Contains(out, "k3y-s3cret") {
		t.Errorf("check-config printed a secret:\n%s", out)
	}
}

func TestUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"frobnicate"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
}

// TestBadStateDirExits2: a state dir that cannot be opened stops sluice with
// exit 2 naming the variable, the path and the cause.
func TestBadStateDirExits2(t *testing.T) {
	file := t.TempDir() + "/not-a-dir"
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_UPSTREAM_URL", "http://127.0.0.1:1")
	t.Setenv("SLUICE_STATE_DIR", file)
	t.Setenv("SLUICE_ADMIN_ADDR", "127.0.0.1:0")
	t.Setenv("SLUICE_LISTEN_ADDR", "127.0.0.1:0")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"run"}, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2: %s", code, stderr.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "SLUICE_STATE_DIR") || !strings.Contains(msg, file) || !strings.Contains(msg, "not a directory") {
		t.Errorf("message %q does not name the variable, path and cause", msg)
	}
}

// TestHelp: every command answers --help and -h with its usage on stdout
// and exit 0, without starting anything: the environment here would make
// run and check-config exit 2, and status and jobs fail to connect.
func TestHelp(t *testing.T) {
	t.Setenv("SLUICE_UPSTREAM_URL", "")
	t.Setenv("SLUICE_ADMIN_URL", "127.0.0.1:1")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "usage: sluice [command]\n"},
		{[]string{"-h"}, "usage: sluice [command]\n"},
		{[]string{"help"}, "usage: sluice [command]\n"},
		{[]string{"help", "help"}, "usage: sluice [command]\n"},
		{[]string{"help", "--help"}, "usage: sluice [command]\n"},
		{[]string{"run", "--help"}, "usage: sluice run\n"},
		{[]string{"run", "-h"}, "usage: sluice run\n"},
		{[]string{"help", "run"}, "usage: sluice run\n"},
		{[]string{"check-config", "--help"}, "usage: sluice check-config\n"},
		{[]string{"version", "--help"}, "usage: sluice version\n"},
		{[]string{"demo", "--help"}, "usage: sluice demo [flags]\n"},
		{[]string{"demo", "--plain", "-h"}, "usage: sluice demo [flags]\n"},
		{[]string{"status", "--help"}, "usage: sluice status [--json]\n"},
		{[]string{"jobs", "--help"}, "usage: sluice jobs COMMAND [ID] [--json]\n"},
		{[]string{"help", "jobs"}, "usage: sluice jobs COMMAND [ID] [--json]\n"},
		{[]string{"jobs", "show", "--help"}, "usage: sluice jobs show ID [--json]\n"},
		{[]string{"jobs", "show", "-h"}, "usage: sluice jobs show ID [--json]\n"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != 0 || !strings.HasPrefix(stdout.String(), tc.want) || stderr.Len() != 0 {
			t.Errorf("sluice %s: exit %d, stdout %q, stderr %q; want 0 and %q",
				strings.Join(tc.args, " "), code, stdout.String(), stderr.String(), tc.want)
		}
	}
	// The demo's usage lists its own flags.
	var stdout bytes.Buffer
	run([]string{"demo", "--help"}, &stdout, io.Discard)
	for _, flag := range []string{"-duration", "-plain", "-admin-addr"} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("sluice demo --help does not list %s:\n%s", flag, stdout.String())
		}
	}
}

// TestUnexpectedArgument: a command that takes no arguments refuses one,
// with its usage, rather than ignore a setting given as a flag.
func TestUnexpectedArgument(t *testing.T) {
	t.Setenv("SLUICE_UPSTREAM_URL", "http://127.0.0.1:1")
	for _, args := range [][]string{
		{"run", "--upstream=http://127.0.0.1:8428"},
		{"check-config", "extra"},
		{"version", "--short"},
		{"help", "frobnicate"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 || stdout.Len() != 0 || !strings.Contains(stderr.String(), "usage: sluice") {
			t.Errorf("sluice %s: exit %d, stdout %q, stderr %q; want 2 and the usage on stderr",
				strings.Join(args, " "), code, stdout.String(), stderr.String())
		}
	}
}

func TestVersion(t *testing.T) {
	info := func(main string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/sluice-dev/sluice", Version: main}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	const rev = "35c69dae1c967e502ea66f2c73518044b32c4f04"
	for _, tc := range []struct {
		name, stamped string
		bi            *debug.BuildInfo
		want          string
	}{
		{"stamped release", "v1.4.0", info("v1.3.0", "vcs.revision", rev), "v1.4.0"},
		{"go install of a tag", "dev", info("v1.3.0"), "v1.3.0"},
		{"go build in a checkout", "dev", info("v0.0.0-20261204235047-35c69dae1c96+dirty", "vcs.revision", rev, "vcs.modified", "true"),
			"v0.0.0-20261204235047-35c69dae1c96+dirty"},
		{"devel with a commit", "dev", info("(devel)", "vcs.revision", rev, "vcs.modified", "false"), "dev (commit 35c69dae1c96)"},
		{"devel with a modified tree", "dev", info("(devel)", "vcs.revision", rev, "vcs.modified", "true"), "dev (commit 35c69dae1c96, modified)"},
		{"devel with a short revision", "dev", info("", "vcs.revision", "abc123"), "dev (commit abc123)"},
		{"devel, nothing recorded", "dev", info("(devel)"), "dev"},
		{"no build info", "dev", nil, "dev"},
	} {
		if got := version(tc.stamped, tc.bi); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	var stdout bytes.Buffer
	if code := run([]string{"version"}, &stdout, io.Discard); code != 0 || !strings.HasPrefix(stdout.String(), "sluice ") {
		t.Errorf("sluice version: exit %d, %q", code, stdout.String())
	}
}

// TestCheckConfigOneLinePerMistake: check-config lists each mistake once,
// and suggests the variable a misspelt one meant.
func TestCheckConfigOneLinePerMistake(t *testing.T) {
	t.Setenv("SLUICE_UPSTREAM_URL", "http://127.0.0.1:8428")
	t.Setenv("SLUICE_INITIAL_RATE", "abc")
	t.Setenv("SLUICE_PIPELINE", "maybe")
	t.Setenv("SLUICE_STALL_AFTR", "5m")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check-config"}, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2: %s", code, stderr.String())
	}
	want := `warning: unknown variable SLUICE_STALL_AFTR ignored; did you mean SLUICE_STALL_AFTER?
sluice: invalid configuration:
  SLUICE_INITIAL_RATE: invalid value "abc": not a number
  SLUICE_PIPELINE: invalid value "maybe": not a boolean: want true/false, 1/0 or yes/no
`
	if got := stderr.String(); got != want {
		t.Errorf("check-config said\n%s\nwant\n%s", got, want)
	}
}

// TestRunSetsGCPercent: `sluice run` collects at GOGC=200 and keeps the
// soft memory limit to the buffer budget, unless GOGC and GOMEMLIMIT say
// otherwise. (The run stops at a bad state dir, after both are set.)
func TestRunSetsGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv("SLUICE_UPSTREAM_URL", "http://127.0.0.1:1")
	t.Setenv("SLUICE_STATE_DIR", "/dev/null")
	for _, tc := range []struct {
		gogc, gomemlimit string
		wantGC           int
		wantLimit        int64
	}{
		{"", "", sidecar.GCPercent, 256<<20 + 128<<20},
		{"50", "1GiB", 100, 1 << 40}, // the values before run, untouched
	} {
		t.Setenv("GOGC", tc.gogc)
		t.Setenv("GOMEMLIMIT", tc.gomemlimit)
		debug.SetGCPercent(100)
		debug.SetMemoryLimit(1 << 40)
		if code := run([]string{"run"}, io.Discard, io.Discard); code != 2 {
			t.Fatalf("GOGC=%q: exit %d, want 2 (the state dir)", tc.gogc, code)
		}
		if got := debug.SetGCPercent(100); got != tc.wantGC {
			t.Errorf("GOGC=%q: ran with GC percent %d, want %d", tc.gogc, got, tc.wantGC)
		}
		if got := debug.SetMemoryLimit(-1); got != tc.wantLimit {
			t.Errorf("GOMEMLIMIT=%q: ran with memory limit %d, want %d", tc.gomemlimit, got, tc.wantLimit)
		}
	}
}
