//go:build !linux

package state

import "os/exec"

// dieWithSluice does nothing: no parent-death signal outside Linux. A
// command outlives a sluice that is killed.
func dieWithSluice(*exec.Cmd) {}

// runCommand runs cmd.
func runCommand(cmd *exec.Cmd) error { return cmd.Run() }
