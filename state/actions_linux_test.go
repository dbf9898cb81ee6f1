//go:build linux

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

// dieWithFIFO names, in the environment of this test binary run again as
// a helper, the FIFO the helper's command holds open.
const dieWithFIFO = "SLUICE_TEST_DIE_WITH_SLUICE_FIFO"

// TestCommandActionDiesWithSluice: a sluice killed with SIGKILL while a
// command action ran left the command running, past sluice and beside
// the same action run again at the next start. The test binary, run again
// as a helper, starts an action whose command holds a FIFO the test reads,
// and is killed: end of file says the command is gone, without polling.
func TestCommandActionDiesWithSluice(t *testing.T) {
	if fifo := os.Getenv(dieWithFIFO); fifo != "" {
		// The helper: the command writes its pid to the FIFO and waits
		// for ever; the test kills this process.
		spec := &ActionSpec{Kind: KindCommand, Argv: []string{"sh", "-c", `exec 3>"$0"; echo $$ >&3; exec sleep 1000 >&3`, fifo}}
		a, _ := testRunner(time.Hour).attempt(context.Background(), spec, "j", "cancel", 1)
		t.Fatalf("the action ended: %+v", a)
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh:", err)
	}
	fifo := filepath.Join(t.TempDir(), "command")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFO:", err)
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestCommandActionDiesWithSluice$", "-test.count=1")
	helper.Env = append(os.Environ(), dieWithFIFO+"="+fifo)
	var out strings.Builder
	helper.Stdout, helper.Stderr = &out, &out
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- helper.Wait() }()
	// Opened once the command opens its end: then it runs.
	opened := make(chan *os.File, 1)
	go func() {
		r, err := os.OpenFile(fifo, os.O_RDONLY, 0)
		if err != nil {
			t.Error(err)
		}
		opened <- r
	}()
	var r *os.File
	select {
	case r = <-opened:
		if r == nil {
			return
		}
		defer r.Close()
	case err := <-exited:
		t.Fatalf("helper exited before its command ran: %v\n%s", err, out.String())
	}
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil {
		t.Fatalf("helper: exit 0, want killed\n%s", out.String())
	}
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(r)
	pid := strings.TrimSpace(string(got))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if n, err := strconv.Atoi(pid); err == nil {
			_ = syscall.Kill(n, syscall.SIGKILL)
		}
		t.Fatalf("the command (pid %s) still runs after sluice was killed", pid)
	}
	if err != nil {
		t.Fatal(err)
	}
}
