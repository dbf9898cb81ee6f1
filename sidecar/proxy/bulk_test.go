package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// A _bulk is sent again only when SLUICE_RETRY_POST says the store
// deduplicates it, whatever its method: elasticsearch-py sends its bulks
// with PUT, and a bulk of actions without an _id that a gateway answered
// 504 while the cluster indexed it, or that timed out, is indexed twice if
// sent twice. Other PUTs are repeated as before.
func TestBulkIsRepeatedOnlyWithRetryPost(t *testing.T) {
	const bulk = "{\"index\":{\"_index\":\"logs\"}}\n{\"msg\":\"hello\"}\n"
	const took = `{"took":3,"errors":false,"items":[{"index":{"_index":"logs","_id":"x","status":201}}]}`
	for _, tc := range []struct {
		name         string
		method, path string
		retryPost    bool
		hold         bool
		first        func(r *http.Request) (*http.Response, error) // the first attempt's answer
		wantSends    int
		wantStatus   int
	}{
		{"PUT /_bulk, gateway 504", http.MethodPut, "/_bulk", false, false, gateway504, 1, http.StatusGatewayTimeout},
		{"PUT /logs/_bulk?refresh=true, gateway 504", http.MethodPut, "/logs/_bulk?refresh=true", false, false, gateway504, 1, http.StatusGatewayTimeout},
		{"POST /_bulk, gateway 504", http.MethodPost, "/_bulk", false, false, gateway504, 1, http.StatusGatewayTimeout},
		{"PUT /_bulk with SLUICE_RETRY_POST, gateway 504", http.MethodPut, "/_bulk", true, false, gateway504, 2, http.StatusOK},
		{"PUT /logs/_doc/1, gateway 504", http.MethodPut, "/logs/_doc/1", false, false, gateway504, 2, http.StatusOK},
		{"PUT /_bulk held, timed out", http.MethodPut, "/_bulk", false, true, hang, 1, http.StatusGatewayTimeout},
		{"PUT /_bulk held with SLUICE_RETRY_POST, timed out", http.MethodPut, "/_bulk", true, true, hang, 2, http.StatusOK},
		{"PUT /logs/_doc/1 held, timed out", http.MethodPut, "/logs/_doc/1", false, true, hang, 2, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sends atomic.Int32
			p := bulkProxy(t, tc.retryPost, tc.hold, func(r *http.Request) (*http.Response, error) {
				if b, _ := io.ReadAll(r.Body); string(b) != bulk {
					t.Errorf("the store got %q, want the loader's body", b)
				}
				if sends.Add(1) == 1 {
					return tc.first(r)
				}
				return bulkAnswer(r, http.StatusOK, took), nil
			})
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(bulk)))
			if n := sends.Load(); n != int32(tc.wantSends) || rec.Code != tc.wantStatus {
				t.Errorf("sent %d times, the loader got %d; want %d times, %d", n, rec.Code, tc.wantSends, tc.wantStatus)
			}
		})
	}
}

func gateway504(r *http.Request) (*http.Response, error) {
	return bulkAnswer(r, http.StatusGatewayTimeout, "<html>504 Gateway Time-out</html>"), nil
}

// hang is a store still indexing when the attempt's deadline ends it.
func hang(r *http.Request) (*http.Response, error) {
	<-r.Context().Done()
	return nil, r.Context().Err()
}

func bulkAnswer(r *http.Request, status int, body string) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r}
}

func bulkProxy(t *testing.T, retryPost, hold bool, store roundTripFunc) *Proxy {
	t.Helper()
	return storeProxy(t, classify.Elasticsearch, retryPost, hold, openJobs{}, store)
}

// storeProxy is a Proxy of profile to store (a fake transport), its limits
// wide open, its attempts 100 ms at most, its jobs' observations going to
// jobs.
func storeProxy(t *testing.T, profile classify.Profile, retryPost, hold bool, jobs Jobs, store roundTripFunc) *Proxy {
	t.Helper()
	lim, err := limiter.New(limiter.Config{InitialRate: 100, MinRate: 1, MaxRate: 1000, MaxConcurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse("http://store.test")
	cfg := Config{
		Upstream: up, Profile: profile, Timeout: 100 * time.Millisecond, QueueTimeout: time.Second,
		RetryMax: 2, RetryPost: retryPost, RetryBodyMax: 1 << 20,
		RetryBackoffMin: time.Millisecond, RetryBackoffMax: time.Millisecond, MaxRetryAfter: time.Second,
		MaxConcurrency: 4, MaxIdleConns: 4, DefaultJob: "default",
	}
	if hold {
		cfg.HoldMax = 5 * time.Second
	}
	p, err := New(cfg, Deps{Limiter: lim, Budget: NewBudget(8 << 20), Jobs: jobs, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler), Transport: store})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A _bulk answer that lists its failed items without their status and
// leaves the others out does not say how many the store took: the write is
// progress of a count not known, not a bulk whose every item failed (a
// client error, no progress), which is how a load whose bulks each carry
// one bad document looked stalled while the store took nearly all of it.
func TestFilteredBulkFailureIsProgress(t *testing.T) {
	const body = "{\"index\":{\"_index\":\"logs\"}}\n{\"n\":1}\n{\"index\":{\"_index\":\"logs\"}}\n{\"n\":\"x\"}\n"
	for query, answer := range map[string]string{
		"filter_path=items.index.error":         `{"items":[{"index":{"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}}]}`,
		"filter_path=items.*.error,items.*._id": `{"items":[{"index":{"_id":"a"}},{"index":{"_id":"b","error":{"type":"mapper_parsing_exception"}}}]}`,
	} {
		t.Run(query, func(t *testing.T) {
			jobs := &observedJobs{}
			p := storeProxy(t, classify.Elasticsearch, false, false, jobs, func(r *http.Request) (*http.Response, error) {
				_, _ = io.Copy(io.Discard, r.Body)
				return bulkAnswer(r, http.StatusOK, answer), nil
			})
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/_bulk?"+query, strings.NewReader(body)))
			if rec.Code != http.StatusOK || rec.Body.String() != answer {
				t.Errorf("the loader got %d %q, want the store's answer", rec.Code, rec.Body)
			}
			jobs.mu.Lock()
			defer jobs.mu.Unlock()
			if len(jobs.obs) != 1 || jobs.obs[0].Kind != classify.OK || jobs.obs[0].Bytes != int64(len(body)) || jobs.obs[0].Items != -1 {
				t.Errorf("observed %+v, want one OK of %d bytes, its items not counted", jobs.obs, len(body))
			}
		})
	}
}
