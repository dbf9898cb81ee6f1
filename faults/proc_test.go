package faults

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/freeport"

	"github.com/sluice-dev/sluice/internal/logbuf"
)

// proc is the sluice binary running as a subprocess of the test.
type proc struct {
	cmd    *exec.Cmd
	admin  string // base URL
	proxy  string // base URL
	stdout *logbuf.Buffer
	stderr *logbuf.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's error, set before done closes
}

// startProc runs `sluice run` with env (on top of a clean environment with
// fresh loopback ports and debug logs) and waits until it is ready.
func startProc(t *testing.T, env ...string) *proc {
	t.Helper()
	p := launch(t, "run", env...)
	waitReady(t, p.admin, func() string { return p.stderr.String() })
	return p
}

// launch starts the sluice binary with a command and env without waiting
// for readiness.
func launch(t *testing.T, command string, env ...string) *proc {
	t.Helper()
	addrs, err := freeport.Addrs(2)
	if err != nil {
		t.Fatal(err)
	}
	admin, proxy := addrs[0], addrs[1]
	p := &proc{admin: "http://" + admin, proxy: "http://" + proxy, stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(sluiceBinary(t), command)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"SLUICE_ADMIN_ADDR=" + admin, "SLUICE_LISTEN_ADDR=" + proxy, "SLUICE_LOG_LEVEL=debug"}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill(t) })
	return p
}

// kill sends SIGKILL (if still running) and waits for the exit.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("sluice pid %d did not die after SIGKILL", p.cmd.Process.Pid)
	}
}

// wait waits up to d for the process to exit by itself and returns its
// exit code (-1 if it did not exit).
func (p *proc) wait(d time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}
