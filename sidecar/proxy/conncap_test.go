package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestIdleCapCount: only idle connections count; once max are idle an
// answer asks for its connection to close.
func TestIdleCapCount(t *testing.T) {
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	c := newIdleCap(2, refused)
	conns := make([]net.Conn, 3)
	for i := range conns {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		conns[i] = a
		c.connState(a, http.StateNew)
	}
	answer := func() string {
		rec := httptest.NewRecorder()
		c.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(rec, httptest.NewRequest("PUT", "/", nil))
		return rec.Header().Get("Connection")
	}
	c.connState(conns[0], http.StateActive)
	c.connState(conns[1], http.StateIdle)
	c.connState(conns[2], http.StateIdle)
	c.connState(conns[1], http.StateActive) // a request arrived: busy, not idle
	if n := c.idleCount(); n != 1 || answer() != "" {
		t.Fatalf("%d idle, Connection %q: want 1 and kept alive", n, answer())
	}
	c.connState(conns[0], http.StateIdle)
	if n := c.idleCount(); n != 2 || answer() != "close" {
		t.Fatalf("%d idle, Connection %q: want 2 and close", n, answer())
	}
	c.connState(conns[2], http.StateClosed) // the loader closed one
	if n := c.idleCount(); n != 1 || answer() != "" {
		t.Fatalf("%d idle, Connection %q: want 1 and kept alive", n, answer())
	}
	if got := testutil.ToFloat64(refused); got != 1 {
		t.Errorf("counter %v, want 1", got)
	}
}
