// Package freeport hands out loopback ports for the servers that tests and
// benchmarks start as separate processes (sluice, Redis, VictoriaMetrics,
// nginx), which must be told their port before they bind it.
//
// A port the kernel offered a moment ago is free only until someone binds
// it, and asking for one port at a time can be answered with the same port
// twice while the first process has yet to bind it: two sidecars then share
// an address, one of them exits, and the other one answers for both. So the
// ports of one call are held open together, and a port this process has
// handed out is never handed out again.
package freeport

import (
	"fmt"
	"net"
	"sync"
	"testing"
)

var handed struct {
	sync.Mutex
	ports map[int]bool
}

// Loopback returns n distinct ports on 127.0.0.1 that were free a moment
// ago and that no earlier call in this process returned.
func Loopback(n int) ([]int, error) {
	handed.Lock()
	defer handed.Unlock()
	if handed.ports == nil {
		handed.ports = map[int]bool{}
	}
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	var ports []int
	// Ports already handed out stay bound by this loop until it ends, so
	// the kernel offers each at most once; the bound on attempts only
	// stops a loop on a host whose ephemeral range is nearly used up.
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100+10*n {
			return nil, fmt.Errorf("freeport: %d of %d ports found on 127.0.0.1 after %d tries", len(ports), n, tries)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("freeport: %w", err)
		}
		held = append(held, ln)
		p := ln.Addr().(*net.TCPAddr).Port
		if !handed.ports[p] {
			handed.ports[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// Get is Loopback for a test: an error fails tb.
func Get(tb testing.TB, n int) []int {
	tb.Helper()
	ports, err := Loopback(n)
	if err != nil {
		tb.Fatal(err)
	}
	return ports
}

// Addrs is Loopback as host:port addresses.
func Addrs(n int) ([]string, error) {
	ports, err := Loopback(n)
	if err != nil {
		return nil, err
	}
	addrs := make([]string, n)
	for i, p := range ports {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return addrs, nil
}
