package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPortsAreDistinctAndFree(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		for _, p := range Get(t, 4) {
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				t.Fatalf("port %d is not free: %v", p, err)
			}
			ln.Close()
		}
	}
}

func TestAddrs(t *testing.T) {
	addrs, err := Addrs(2)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 2 || addrs[0] == addrs[1] {
		t.Fatalf("Addrs(2) = %v", addrs)
	}
	for _, a := range addrs {
		if host, _, err := net.SplitHostPort(a); err != nil || host != "127.0.0.1" {
			t.Errorf("%q is not a loopback host:port (%v)", a, err)
		}
	}
}
