package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets a test run main itself, in a child process (see runMain).
func TestMain(m *testing.M) {
	if os.Getenv("OUTOFPROCESS_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs main with args in a child process and returns its exit
// code and standard error.
func runMain(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "OUTOFPROCESS_RUN_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stderr.String()
	}
	t.Fatalf("running main: %v", err)
	return 0, ""
}

func TestSizeName(t *testing.T) {
	for n, want := range map[int]string{256: "256 B", 64 << 10: "64 KiB", 4 << 20: "4 MiB", 1500: "1500 B"} {
		if got := sizeName(n); got != want {
			t.Errorf("sizeName(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestBadFlagsExit2(t *testing.T) {
	// Each is refused before anything is built or started.
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"-retry-body-max", "lots"}, "-retry-body-max"},
		{[]string{"-retry-body-max", "-1MiB"}, "-retry-body-max"},
		{[]string{"-sizes", "256,big"}, "-sizes"},
		{[]string{"-sizes", "0"}, "-sizes"},
		{[]string{"-sizes", "64KiB,1GiB"}, "-sizes"},
		{[]string{"-pairs", "1"}, "-pairs"},
		{[]string{"-writers", "0"}, "-writers"},
		{[]string{"-rounds", "0"}, "-rounds"},
		{[]string{"-round", "0s"}, "-round"},
		{[]string{"-warmup", "-1s"}, "-warmup"},
	} {
		code, stderr := runMain(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.flag) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming %s", tc.args, code, stderr, tc.flag)
		}
	}
}
