package auth

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/sluice-dev/sluice/internal/logbuf"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig returns a valid configuration for src with the defaults.
func testConfig(src string) Config {
	c := DefaultConfig()
	c.Source = src
	switch src {
	case SourceBearerFile:
		c.TokenFile = "/nonexistent/token"
	case SourceTokenURL:
		c.TokenURL = "http://metadata.test/token"
	case SourceAWSSigV4:
		c.AWSService, c.AWSRegion = "es", "us-east-1"
	}
	return c
}

type harness struct {
	a    *Authenticator
	logs *logbuf.Buffer
	reg  *prometheus.Registry
}

// newHarness builds an Authenticator with a debug JSON logger and a fresh
// pedantic registry; opts may be changed by mod.
func newHarness(t *testing.T, c Config, rt http.RoundTripper, mod func(*Options)) *harness {
	t.Helper()
	h := &harness{logs: &logbuf.Buffer{}, reg: prometheus.NewPedanticRegistry()}
	opts := Options{
		Logger:     slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: h.reg,
	}
	if rt != nil {
		opts.HTTPClient = &http.Client{Transport: rt, Timeout: time.Minute}
	}
	if mod != nil {
		mod(&opts)
	}
	a, err := New(c, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.a = a
	return h
}

// start runs the refresh loop until the test ends.
func (h *harness) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.a.Start(ctx)
	t.Cleanup(func() {
		cancel()
		<-h.a.Done()
	})
}

// tokenServer is an in-memory token endpoint (metadata-server style) for
// tests under testing/synctest: its clock is the bubble's.
type tokenServer struct {
	mu       sync.Mutex
	lifetime time.Duration
	// mintBelow: the current token is handed out again while more than
	// this is left of it (GCP metadata: 5 minutes). 0 mints on every call.
	mintBelow time.Duration
	latency   time.Duration // added to every answer
	mode      string        // "ok" (default), "hang", "500"
	minted    int
	token     string
	expires   time.Time
	calls     []time.Time // arrival times of all requests
	tokens    []string    // token handed out per successful call
	lastReq   *http.Request
}

func (s *tokenServer) setMode(m string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

func (s *tokenServer) callTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.calls...)
}

func (s *tokenServer) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.calls = append(s.calls, time.Now())
	s.lastReq = req
	mode, latency := s.mode, s.latency
	s.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	switch mode {
	case "hang":
		<-req.Context().Done()
		return nil, req.Context().Err()
	case "500":
		return response(req, http.StatusInternalServerError, `{"error":"backend_unavailable"}`), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.token == "" || s.expires.Sub(now) < s.mintBelow || s.mintBelow == 0 {
		s.minted++
		s.token = fmt.Sprintf("tok-%d", s.minted)
		s.expires = now.Add(s.lifetime)
	}
	s.tokens = append(s.tokens, s.token)
	// Like the GCP metadata server, expires_in is whole seconds, rounded down.
	body := fmt.Sprintf(`{"access_token":%q,"expires_in":%d,"token_type":"Bearer"}`, s.token, int64(s.expires.Sub(now)/time.Second))
	return response(req, http.StatusOK, body), nil
}

func response(req *http.Request, code int, body string) *http.Response {
	return &http.Response{
		StatusCode: code,
		Status:     fmt.Sprintf("%d %s", code, http.StatusText(code)),
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(body)),
		Request:    req,
	}
}

func newRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// The helpers below stand in for prometheus/testutil, whose dependency
// github.com/kylelemons/godebug is not in go.sum; promlint is what
// testutil.CollectAndLint runs.

// metricValue returns the value of the counter or gauge series name with
// the given label pairs, gathered from reg.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// seriesCount returns how many series of name reg exposes.
func seriesCount(t *testing.T, reg prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// lintMetrics fails the test for every promlint problem in reg.
func lintMetrics(t *testing.T, reg prometheus.Gatherer) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

// metricsText renders everything reg exposes in the text format.
func metricsText(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
