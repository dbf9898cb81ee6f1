//go:build linux

package state

import (
	"os/exec"
	"runtime"
	"syscall"
)

// dieWithSluice has the kernel kill the command if sluice dies first.
// Without it a sluice that dies without its shutdown (SIGKILL from the
// OOM killer or from kubelet past the grace period, a crash) leaves the
// command running, and the next start runs the same action again beside
// it.
//
// Only the command itself: the setting is not inherited across fork, so
// what the command starts (in its process group) outlives a killed sluice
// unless something else ends it, as the kernel does for every process of
// a PID namespace whose first process dies (sluice as the entrypoint of a
// container with a PID namespace of its own). While sluice lives,
// killLeftovers ends them.
func dieWithSluice(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// runCommand runs cmd with its goroutine locked to its OS thread from
// Start until Wait returns. The kernel sends the parent-death signal when
// the thread that forked the child ends, not the process, and the Go
// runtime ends a thread whose goroutine exits while locked to it: forked
// from a thread that a goroutine later locks and exits on, the command
// would be killed in mid-attempt. A thread locked here serves this
// goroutine alone until the command is gone, and is unlocked, not ended,
// after.
func runCommand(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Run()
}
