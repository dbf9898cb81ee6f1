package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
)

// openJobs admits every write.
type openJobs struct{}

func (openJobs) Admit(ctx context.Context, _ string, _ time.Duration) (context.Context, func(), error) {
	return ctx, func() {}, nil
}
func (openJobs) Observe(string, Observation) {}

// Writes whose buffers come from the pool reach the store as the loader
// sent them, each whole and only its own, while the store answers a share
// of them before it reads their bodies: refused (the write is sent again),
// or acknowledged at once and read afterwards, after the write's exchange
// has ended, while the transport is still sending its body. A buffer must
// not be lent to another write until the transport is done with it.
func TestPooledBodiesNeverMix(t *testing.T) {
	const (
		size    = 512 << 10 // pooled, and more than the sockets take at once
		loaders = 8
		writes  = 6
	)
	var corrupt, checked atomic.Int64
	var firstBad sync.Once
	var refused sync.Map // the writes refused once
	store := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(r.Header.Get("X-Write"))
		switch {
		case r.Header.Get("X-Refuse") != "":
			if _, again := refused.LoadOrStore(r.Header.Get("X-Refuse"), true); !again {
				// Refused unread the first time; its retry is read.
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		case r.Header.Get("X-Early") != "":
			// Acknowledged first, read once the loader has its answer
			// and sluice has moved on to other writes.
			rc := http.NewResponseController(w)
			if err := rc.EnableFullDuplex(); err != nil {
				t.Error(err)
			}
			// With a body: net/http's transport hands an answer
			// without one to its caller only once the request is
			// written (or 50 ms have passed).
			_, _ = io.WriteString(w, "ok")
			_ = rc.Flush()
			time.Sleep(20 * time.Millisecond)
		}
		b, err := io.ReadAll(r.Body)
		if err == nil && (len(b) != size || !bytes.Equal(b, bytes.Repeat([]byte{byte(id)}, size))) {
			corrupt.Add(1)
			firstBad.Do(func() { t.Errorf("write %d reached the store as %d bytes, not its own", id, len(b)) })
		}
		checked.Add(1)
		if r.Header.Get("X-Early") == "" {
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	// Socket buffers smaller than a body, on both sides, keep the
	// transport sending a body the store has not read yet.
	store.Listener = smallBuffers{store.Listener}
	store.Start()
	defer store.Close()
	up, _ := url.Parse(store.URL)

	lim, err := limiter.New(limiter.Config{InitialRate: 1e6, MinRate: 1, MaxRate: 1e6, InitialConcurrency: loaders, MaxConcurrency: loaders})
	if err != nil {
		t.Fatal(err)
	}
	// The deadlines are generous: under -race on a loaded 2-core machine
	// a write of this test takes seconds, and a write that outwaits the
	// queue is answered 429, which is no mixed body but fails the test.
	p, err := New(Config{
		Upstream: up, Timeout: time.Minute, QueueTimeout: time.Minute,
		RetryMax: 3, RetryBodyMax: 1 << 20, RetryBackoffMin: time.Millisecond, RetryBackoffMax: 2 * time.Millisecond,
		MaxRetryAfter: time.Second, RetryBudget: 10, MaxConcurrency: loaders, MaxIdleConns: 64, DefaultJob: "default",
	}, Deps{Limiter: lim, Budget: NewBudget(64 << 20), Jobs: openJobs{}, Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetWriteBuffer(64 << 10)
			}
			return c, err
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewUnstartedServer(p.Handler())
	front.Config.ConnState = p.ConnState
	front.Start()
	defer front.Close()

	var wg sync.WaitGroup
	for l := range loaders {
		wg.Go(func() {
			c := &http.Client{}
			defer c.CloseIdleConnections()
			for i := range writes {
				id := (l*writes + i) % 251
				req, _ := http.NewRequest(http.MethodPut, front.URL+"/w", bytes.NewReader(bytes.Repeat([]byte{byte(id)}, size)))
				req.Header.Set("X-Write", strconv.Itoa(id))
				switch i % 3 {
				case 0:
					req.Header.Set("X-Refuse", fmt.Sprint(l, "-", i))
				case 1:
					req.Header.Set("X-Early", "1")
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Errorf("write %d: %v", id, err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					t.Errorf("write %d: %d %s", id, resp.StatusCode, b)
				}
			}
		})
	}
	wg.Wait()
	store.Close() // waits for the bodies still being read
	if corrupt.Load() > 0 || checked.Load() != loaders*writes {
		t.Errorf("%d of %d bodies read were not the loader's (%d writes)", corrupt.Load(), checked.Load(), loaders*writes)
	}
	if p.budget.InUse() != 0 {
		t.Errorf("budget holds %d bytes after every write ended", p.budget.InUse())
	}
}

// smallBuffers accepts connections with receive buffers smaller than a
// body (and larger than loopback's segments, which a smaller one would
// stall).
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(128 << 10)
	}
	return c, err
}
