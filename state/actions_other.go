//go:build !unix

package state

import "os/exec"

// killGroup leaves the default: the process is killed when the context ends.
func killGroup(*exec.Cmd) {}

// killLeftovers has no process group to kill.
func killLeftovers(*exec.Cmd) {}
