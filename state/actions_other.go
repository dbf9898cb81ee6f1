//go:build !unix

package state

import "os/exec"

// killGroup leaves the default: the process is killed when the context ends.
func killGroup(*exec.Cmd) {}
