package proxy

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/auth"
)

// A write that sluice cannot put its credentials on is never sent: its
// permit goes back with its rate units. Spent, they made a credential
// source that is down use up the store's rate on writes that never left
// (one unit of burst here: the next write was refused no_capacity, not
// told of the credentials), and the limiter counted them as sent, which
// its growth of the rate reads.
func TestWriteWithoutCredentialsSpendsNoRate(t *testing.T) {
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer tokens.Close()
	cfg := auth.DefaultConfig()
	cfg.Source, cfg.TokenURL = auth.SourceTokenURL, tokens.URL
	a, err := auth.New(cfg, auth.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	lim, err := limiter.New(limiter.Config{InitialRate: 0.001, MinRate: 0.001, MaxRate: 10, Burst: 1, MaxConcurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse("http://store.test")
	sent := 0
	p, err := New(Config{
		Upstream: up, Timeout: time.Second, QueueTimeout: time.Second, Reject: true, RetryBodyMax: 1 << 10,
		RetryBackoffMin: time.Millisecond, RetryBackoffMax: time.Millisecond, MaxRetryAfter: time.Second,
		MaxConcurrency: 4, MaxIdleConns: 4, DefaultJob: "default",
	}, Deps{Limiter: lim, Budget: NewBudget(1 << 20), Jobs: openJobs{}, Auth: a, Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			sent++
			return &http.Response{StatusCode: http.StatusNoContent, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/w", strings.NewReader("x")))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "upstream_credentials") {
			t.Errorf("write %d: %d %s, want 503 upstream_credentials", i, rec.Code, rec.Body)
		}
	}
	if s := lim.Snapshot(); sent != 0 || s.InFlight != 0 {
		t.Errorf("%d sent, %d in flight; want none", sent, s.InFlight)
	}
}
