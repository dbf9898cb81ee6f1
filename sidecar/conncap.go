package sidecar

import (
	"container/list"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// idleCap bounds the proxy's idle keep-alive connections: past max, the
// one idle longest is closed. Each idle connection holds a goroutine and
// about 11.5 KiB until IdleTimeout, so a loader that leaks connections
// would otherwise grow sluice's memory with them. Closing an idle
// connection is ordinary HTTP/1.1: clients open a new one for their next
// request. Connections busy with a request are bounded by the queue, and
// silent new ones by ReadHeaderTimeout.
type idleCap struct {
	max    int
	closed prometheus.Counter

	mu    sync.Mutex
	idle  map[net.Conn]*list.Element
	order *list.List // of net.Conn, longest idle first
}

func newIdleCap(max int, closed prometheus.Counter) *idleCap {
	return &idleCap{max: max, closed: closed, idle: make(map[net.Conn]*list.Element), order: list.New()}
}

// connState is the http.Server's ConnState hook.
func (c *idleCap) connState(conn net.Conn, st http.ConnState) {
	var evict []net.Conn
	c.mu.Lock()
	if e, ok := c.idle[conn]; ok {
		c.order.Remove(e)
		delete(c.idle, conn)
	}
	if st == http.StateIdle {
		c.idle[conn] = c.order.PushBack(conn)
		for c.order.Len() > c.max {
			old := c.order.Remove(c.order.Front()).(net.Conn)
			delete(c.idle, old)
			evict = append(evict, old)
		}
	}
	c.mu.Unlock()
	for _, old := range evict {
		_ = old.Close() // its server goroutine sees the close and reports StateClosed
		c.closed.Inc()
	}
}

// idleCount is how many idle connections are tracked.
func (c *idleCap) idleCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
