package sidecar

import (
	"context"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/sluice-dev/sluice/sidecar/proxy"
)

// TestRefusedShareCountsWork drives writes through the proxy against stores
// that refuse all or part of them, and reads sluice_upstream_refused_share_total:
// a bulk with a few of its items refused adds their share, not a whole
// write, so that the alert on throttling measures the work the store
// refused, where sluice_upstream_attempts_total{kind="throttled"} counts the
// bulk as throttled whole. Items that failed on their own merits (a mapping
// error) are not refused work, and neither is a server error.
func TestRefusedShareCountsWork(t *testing.T) {
	// esBulk answers a _bulk of n items of which the first rejected got a
	// 429 and the next failed a 400.
	esBulk := func(n, rejected, failed int) string {
		var b strings.Builder
		b.WriteString(`{"took":30,"errors":true,"items":[`)
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			status := 201
			switch {
			case i < rejected:
				status = 429
			case i < rejected+failed:
				status = 400
			}
			b.WriteString(`{"index":{"_index":"logs","_id":"` + strconv.Itoa(i) + `","status":` + strconv.Itoa(status) + `}}`)
		}
		b.WriteString(`]}`)
		return b.String()
	}
	var esRequest strings.Builder
	for i := range 1000 {
		esRequest.WriteString(`{"index":{"_index":"logs","_id":"` + strconv.Itoa(i) + "\"}}\n{\"msg\":\"hello\"}\n")
	}
	const ddbRequest = `{"RequestItems":{"Forum":[` +
		`{"PutRequest":{"Item":{"Name":{"S":"a"}}}},{"PutRequest":{"Item":{"Name":{"S":"b"}}}},{"PutRequest":{"Item":{"Name":{"S":"c"}}}}],` +
		`"Thread":[{"DeleteRequest":{"Key":{"Subject":{"S":"d"}}}},{"PutRequest":{"Item":{"Subject":{"S":"e"}}}}]}}`
	const ddbPartial = `{"UnprocessedItems":{"Forum":[{"PutRequest":{"Item":{"Name":{"S":"c"}}}}],` +
		`"Thread":[{"PutRequest":{"Item":{"Subject":{"S":"e"}}}}]},"ConsumedCapacity":[]}`
	ddbHeaders := []string{"X-Amz-Target", "DynamoDB_20120810.BatchWriteItem", "Content-Type", "application/x-amz-json-1.0"}

	for _, tc := range []struct {
		name    string
		profile string
		path    string
		request string
		header  []string // loader request headers
		status  int      // the store's answer
		answer  string
		writes  int
		kind    string  // the attempts' kind
		perKind float64 // refused share per write
	}{
		{"es 3 of 1000 items rejected", "elasticsearch", "/logs/_bulk", esRequest.String(), nil,
			http.StatusOK, esBulk(1000, 3, 0), 5, "throttled", 0.003},
		{"es 3 rejected, 10 failed", "elasticsearch", "/logs/_bulk", esRequest.String(), nil,
			http.StatusOK, esBulk(1000, 3, 10), 5, "throttled", 0.003},
		{"es 900 of 1000 items rejected", "elasticsearch", "/logs/_bulk", esRequest.String(), nil,
			http.StatusOK, esBulk(1000, 900, 0), 5, "throttled", 0.9},
		{"dynamodb 2 of 5 unprocessed", "dynamodb", "/", ddbRequest, ddbHeaders,
			http.StatusOK, ddbPartial, 5, "throttled", 0.4},
		{"generic 429", "generic", "/w", "x", nil,
			http.StatusTooManyRequests, "slow down\n", 1, "throttled", 1},
		{"generic 503", "generic", "/w", "x", nil,
			http.StatusServiceUnavailable, "busy\n", 1, "overloaded", 1},
		{"victoriametrics insert cap", "victoriametrics", "/api/v1/import", "x", nil,
			http.StatusServiceUnavailable, "cannot handle more than 4 concurrent inserts during 1m0s", 1, "throttled", 1},
		{"generic 500", "generic", "/w", "x", nil,
			http.StatusInternalServerError, "oops\n", 1, "server_error", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, tc.answer)
				})
				s := newTestServer(t, store, "PROFILE="+tc.profile, "RETRY_MAX=0")
				for range tc.writes {
					header := append([]string{proxy.HeaderJob, "load"}, tc.header...)
					if rec := send(s.ProxyHandler(), context.Background(), http.MethodPost, tc.path, tc.request, header...); rec.Code != tc.status {
						t.Fatalf("loader got %d %q, want the store's %d", rec.Code, rec.Body, tc.status)
					}
				}
				if got, _ := series(t, s, "sluice_upstream_attempts_total", "kind", tc.kind); got != float64(tc.writes) {
					t.Fatalf("%v attempts of kind %s, want %d", got, tc.kind, tc.writes)
				}
				for _, kind := range []string{"throttled", "overloaded"} {
					want := 0.0
					if kind == tc.kind {
						want = tc.perKind * float64(tc.writes)
					}
					got, ok := series(t, s, "sluice_upstream_refused_share_total", "kind", kind)
					if !ok {
						t.Fatalf("sluice_upstream_refused_share_total{kind=%q} not exported", kind)
					}
					if math.Abs(got-want) > 1e-9 {
						t.Errorf("sluice_upstream_refused_share_total{kind=%q} = %v, want %v (%d writes of %v refused)", kind, got, want, tc.writes, tc.perKind)
					}
				}
			})
		})
	}
}
