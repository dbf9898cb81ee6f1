//go:build unix

package state

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCommandActionLeavesNothingRunning: a command that exits and leaves
// a child in its process group (a script that backgrounds the real work,
// with its output elsewhere) ended its attempt, but the child went on: past
// the attempt's timeout, beside the next attempt's command, past a stream's
// reopen and past sluice itself. What an attempt leaves in its group is
// killed when it ends. The child holds a FIFO the test reads: end of file
// says it is gone, without polling.
func TestCommandActionLeavesNothingRunning(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	for _, exit := range []int{0, 1} {
		fifo := filepath.Join(t.TempDir(), "child")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Skip("no FIFO:", err)
		}
		r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		script := `exec 3>"$0"; sleep 1000 >&3 2>&3 </dev/null & echo $! >&3; exit ` + strconv.Itoa(exit)
		spec := &ActionSpec{Kind: KindCommand, Argv: []string{sh, "-c", script, fifo}}
		a, _ := testRunner(time.Minute).attempt(context.Background(), spec, "j", "cleanup", 1)
		if a.ExitCode == nil || *a.ExitCode != exit {
			t.Fatalf("exit %d: %+v", exit, a)
		}
		_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, err := io.ReadAll(r)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Errorf("exit %d: the command's child (pid %s) still runs after its attempt ended", exit, strings.TrimSpace(string(out)))
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// TestCommandActionOutputHidesItsSecrets: a failed command's output is
// kept in its attempt, which the job view shows; a command that repeats
// its arguments (a usage error, "set -x") showed the credential of its
// "-u user:password" there, which the view of its argv hides.
func TestCommandActionOutputHidesItsSecrets(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	const secret = "elastic:S3cret-pw"
	spec := &ActionSpec{Kind: KindCommand, Argv: []string{sh, "-c", `echo "usage: cancel $*" >&2; exit 1`, "sh", "-u", secret, "--token=t0ken-123"}}
	a, ok := testRunner(time.Minute).attempt(context.Background(), spec, "j", "cancel", 1)
	if ok || a.Result != ResultError {
		t.Fatalf("%+v ok=%v, want a failed attempt", a, ok)
	}
	if strings.Contains(a.Error, "S3cret") || strings.Contains(a.Error, "t0ken-123") || !strings.Contains(a.Error, "usage: cancel -u <redacted> --token=<redacted>") {
		t.Errorf("attempt error %q", a.Error)
	}
}
