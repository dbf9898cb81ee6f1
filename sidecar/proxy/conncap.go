package proxy

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// idleCap bounds the proxy's idle keep-alive connections. Each idle
// connection holds a goroutine and about 11.5 KiB until IdleTimeout, so a
// loader that leaks connections would otherwise grow sluice's memory with
// them. Once max connections are idle, every answer is sent with
// "Connection: close", so its connection ends with it instead of joining
// them; the loader's client opens a new one for its next request. Nothing
// is closed under a request: a connection counts as idle until the server
// has read a whole request header from it, so closing an idle one could
// drop a write the store would still receive (and Go's client does not
// retry a POST on such a connection). Busy connections are bounded by the
// queue, silent new ones by ReadHeaderTimeout.
type idleCap struct {
	max     int
	refused prometheus.Counter // answers sent with Connection: close

	mu   sync.Mutex
	idle map[net.Conn]struct{}
	n    atomic.Int64 // len(idle), read by every request without the lock
}

func newIdleCap(max int, refused prometheus.Counter) *idleCap {
	return &idleCap{max: max, refused: refused, idle: make(map[net.Conn]struct{})}
}

// connState is the http.Server's ConnState hook.
func (c *idleCap) connState(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st == http.StateIdle {
		c.idle[conn] = struct{}{}
	} else {
		delete(c.idle, conn)
	}
	c.n.Store(int64(len(c.idle)))
}

// idleCount is how many connections are idle.
func (c *idleCap) idleCount() int { return int(c.n.Load()) }

// wrap asks for the connection to close after its answer when max others
// are idle already.
func (c *idleCap) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoAtLeast(1, 1) && c.idleCount() >= c.max {
			w.Header().Set("Connection", "close")
			c.refused.Inc()
		}
		h.ServeHTTP(w, r)
	})
}
