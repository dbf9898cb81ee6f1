package sidecar

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/proxy"
)

// TestHistoryFollowsTheStore: the running sidecar samples its history once
// a second; against a store whose quota is below what the loader offers,
// GET /v1/history shows acknowledged writes at about the quota, the
// store's throttles, and the limits.
func TestHistoryFollowsTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newQuotaStore(50)
		s := newTestServer(t, store, "INITIAL_RATE=200", "RETRY_MAX=0")
		end := time.Now().Add(20 * time.Second)
		var loaders sync.WaitGroup
		for range 8 {
			loaders.Go(func() {
				for time.Now().Before(end) {
					if rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/w", "row", proxy.HeaderJob, "load"); rec.Code != http.StatusOK {
						time.Sleep(100 * time.Millisecond)
					}
				}
			})
		}
		loaders.Wait()

		rec := adminCall(s.AdminHandler(), "GET", "/v1/history", "", "RemoteAddr", "10.0.0.8:5000")
		var feed admin.HistoryFeed
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &feed) != nil {
			t.Fatalf("GET /v1/history from a remote caller without a token: %d %s", rec.Code, rec.Body)
		}
		if n := len(feed.Points); n < 18 || n > 21 {
			t.Fatalf("%d points after 20s, want one a second", n)
		}
		var acked, throttled float64
		for _, p := range feed.Points {
			acked += p.Acknowledged
			throttled += p.Throttled
			if p.RateLimit <= 0 || p.Concurrency < 1 {
				t.Errorf("point without limits: %+v", p)
			}
		}
		accepted, refused, _ := store.counts(time.Time{})
		// The first second is the baseline, so the points cover a little less.
		if acked < 0.8*float64(accepted) || acked > float64(accepted) || throttled == 0 || throttled > float64(refused) {
			t.Errorf("points add up to %.0f acknowledged and %.0f throttled; the store accepted %d and throttled %d",
				acked, throttled, accepted, refused)
		}
		last := feed.Points[len(feed.Points)-1].T
		rec = adminCall(s.AdminHandler(), "GET", "/v1/history?after="+strconv.FormatInt(last, 10), "")
		if json.Unmarshal(rec.Body.Bytes(), &feed) != nil || len(feed.Points) != 0 {
			t.Errorf("after the newest point: %s, want no points", rec.Body)
		}
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/history", ""); rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("POST /v1/history: %d, want 405 (the feed is read-only)", rec.Code)
		}
	})
}
