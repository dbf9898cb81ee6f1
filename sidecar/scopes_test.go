package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/limiter"
)

// scopedStore is a store with a quota per path prefix, like S3's per
// prefix or DynamoDB's per table: /a/… and /b/… each have their own.
type scopedStore struct{ a, b *quotaStore }

func (s scopedStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/a/") {
		s.a.ServeHTTP(w, r)
		return
	}
	s.b.ServeHTTP(w, r)
}

// twoJobsRun is one run of scenario (a): job B writes to scope b at 500
// writes/s, which the store takes in full; with withA, job A writes to
// scope a at 500 writes/s too, of which the store takes 50 (10% of its
// demand). It returns B's and A's goodput, in writes/s, over the last
// 8 s of a 12 s run (after the limiters found their level).
func twoJobsRun(t *testing.T, withA bool, env ...string) (goodB, goodA float64) {
	store := scopedStore{a: newQuotaStore(50), b: newQuotaStore(2000)}
	s := newTestServer(t, store, append([]string{"QUEUE_TIMEOUT=1s", "SCOPE_GENERIC=path"}, env...)...)
	h := s.ProxyHandler()
	start := time.Now()
	const run, measureFrom = 12 * time.Second, 4 * time.Second
	var wg sync.WaitGroup
	loader := func(job, path string) {
		// Open loop, 500 writes/s: a loader that keeps its pace whatever
		// the answers, each write in its own goroutine.
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for time.Since(start) < run {
			<-tick.C
			wg.Go(func() {
				send(h, context.Background(), http.MethodPost, path, `{"v":1}`, "X-Sluice-Job", job)
			})
		}
	}
	wg.Go(func() { loader("job-b", "/b/write") })
	if withA {
		wg.Go(func() { loader("job-a", "/a/write") })
	}
	wg.Wait()
	// Only while both loaders run: the writes still queued when they stop
	// drain afterwards, and would count beyond the window.
	b := store.b.acceptedBetween(start.Add(measureFrom), start.Add(run))
	a := store.a.acceptedBetween(start.Add(measureFrom), start.Add(run))
	secs := (run - measureFrom).Seconds()
	return float64(b) / secs, float64(a) / secs
}

// TestTwoJobsTwoScopes is scenario (a) of scopes: two jobs on two scopes,
// one scope throttled to 10% of its demand; the other keeps at least 95%
// of the goodput it has alone. With scopes off (one limiter, the old
// behaviour), it does not.
func TestTwoJobsTwoScopes(t *testing.T) {
	var alone, together, off, aTogether float64
	synctest.Test(t, func(t *testing.T) { alone, _ = twoJobsRun(t, false) })
	synctest.Test(t, func(t *testing.T) { together, aTogether = twoJobsRun(t, true) })
	synctest.Test(t, func(t *testing.T) { off, _ = twoJobsRun(t, true, "SCOPES_MAX=0") })
	t.Logf("job B goodput: alone %.1f/s, beside throttled job A %.1f/s (%.0f%%; A %.1f/s of its 50), scopes off %.1f/s (%.0f%%)",
		alone, together, 100*together/alone, aTogether, off, 100*off/alone)
	if alone < 450 {
		t.Fatalf("job B alone: %.1f writes/s of its 500", alone)
	}
	if together < 0.95*alone {
		t.Errorf("job B beside a throttled scope: %.1f writes/s, below 95%% of its %.1f alone", together, alone)
	}
	if aTogether < 0.5*50 || aTogether > 50*1.1 {
		t.Errorf("job A: %.1f writes/s, want most of its scope's 50", aTogether)
	}
	if off >= 0.95*alone {
		t.Errorf("with scopes off, job B kept %.1f of %.1f writes/s: the scenario does not show what scopes fix", off, alone)
	}
}

// TestScopesInStatus checks that a throttled scope shows in /v1/status
// with its limits and last throttle, and in the scope metrics.
func TestScopesInStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := scopedStore{a: newQuotaStore(5), b: newQuotaStore(2000)}
		s := newTestServer(t, store, "QUEUE_TIMEOUT=100ms", "SCOPE_GENERIC=path")
		h := s.ProxyHandler()
		for range 200 {
			send(h, context.Background(), http.MethodPost, "/a/write", `{}`, "X-Sluice-Job", "job-a")
			send(h, context.Background(), http.MethodPost, "/b/write", `{}`, "X-Sluice-Job", "job-b")
		}
		rec := send(s.AdminHandler(), context.Background(), http.MethodGet, "/v1/status", "")
		var st struct {
			Scopes struct {
				Max       int    `json:"max"`
				Evictions uint64 `json:"evictions"`
				Active    []struct {
					Scope        string    `json:"scope"`
					Rate         float64   `json:"rate_limit"`
					Concurrency  int       `json:"concurrency_limit"`
					LastThrottle time.Time `json:"last_throttle"`
					LastReason   string    `json:"last_reason"`
				} `json:"active"`
			} `json:"scopes"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatalf("status: %v\n%s", err, rec.Body)
		}
		if st.Scopes.Max != 64 || len(st.Scopes.Active) != 1 {
			t.Fatalf("scopes in status: %+v\n%s", st.Scopes, rec.Body)
		}
		a := st.Scopes.Active[0]
		if a.Scope != "a" || a.Rate <= 0 || a.Concurrency < 1 || a.LastThrottle.IsZero() || a.LastReason != "status_429" {
			t.Errorf("scope a in status: %+v", a)
		}
		if v := metricValue(t, s, "sluice_scope_rate_limit"); v != a.Rate {
			t.Errorf("sluice_scope_rate_limit %v, status %v", v, a.Rate)
		}
		if v := metricValue(t, s, "sluice_scope_active"); v != 1 {
			t.Errorf("sluice_scope_active %v, want 1", v)
		}
		// The per-scope series pass Prometheus' linter too.
		problems, err := testutil.GatherAndLint(s.reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "sluice_scope") {
				t.Errorf("%s: %s", p.Metric, p.Text)
			}
		}
	})
}

// lastSignal is the reason of the latest throttle any of s's limiters
// took: the store's, or a scope's (a scoped throttle goes to the scope's
// only).
func lastSignal(s *Server) string {
	snap := s.lim.Snapshot()
	at, reason := snap.LastThrottle, snap.LastReason
	if s.scopes != nil {
		scopes, _ := s.scopes.Status()
		for _, sc := range scopes {
			if sc.LastThrottle.After(at) {
				at, reason = sc.LastThrottle, sc.LastReason
			}
		}
	}
	return reason
}

// TestScopedThrottleSparesTheStore: under the DynamoDB profile a
// ProvisionedThroughputExceeded of a BatchWriteItem over two tables gives
// each table a limiter, the store's limiter does not count it, and a
// write to another table is not held by either; a store-wide throttle
// (RequestLimitExceeded, the account's) goes to the store's limiter and
// makes no scope.
func TestScopedThrottleSparesTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		answer := map[string]string{} // table → error type
		var mu sync.Mutex
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			defer mu.Unlock()
			for table, typ := range answer {
				if strings.Contains(string(body), `"`+table+`"`) {
					w.Header().Set("Content-Type", "application/x-amz-json-1.0")
					w.WriteHeader(http.StatusBadRequest)
					_, _ = io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#`+typ+`","message":"slow down"}`)
					return
				}
			}
			_, _ = io.WriteString(w, `{}`)
		})
		s := newTestServer(t, store, "PROFILE=dynamodb", "RETRY_MAX=0")
		write := func(target, body string) int {
			return send(s.ProxyHandler(), context.Background(), http.MethodPost, "/", body,
				"X-Amz-Target", "DynamoDB_20120810."+target, "X-Sluice-Job", "ddb").Code
		}
		const batch = `{"RequestItems":{"orders":[{"PutRequest":{"Item":{"id":{"S":"1"}}}}],"customers":[{"PutRequest":{"Item":{"id":{"S":"2"}}}}]}}`
		mu.Lock()
		answer["orders"] = "ProvisionedThroughputExceededException"
		mu.Unlock()
		if code := write("BatchWriteItem", batch); code != http.StatusBadRequest {
			t.Fatalf("throttled batch: loader got %d, want the store's 400", code)
		}
		if got := s.scopes.Names(); len(got) != 2 || got[0] != "customers" || got[1] != "orders" {
			t.Fatalf("scopes after a batch over two tables: %q, want [customers orders]", got)
		}
		if snap := s.lim.Snapshot(); !snap.LastThrottle.IsZero() || snap.Decreases != 0 {
			t.Errorf("the store's limiter took a scoped throttle: %+v", snap)
		}
		// Another table is held by neither scope's limiter.
		if code := write("PutItem", `{"TableName":"events","Item":{}}`); code != http.StatusOK {
			t.Errorf("write to another table: %d", code)
		}
		// A store-wide throttle cuts the store's limiter and makes no scope.
		mu.Lock()
		answer = map[string]string{"events": "RequestLimitExceeded"}
		mu.Unlock()
		write("PutItem", `{"TableName":"events","Item":{}}`)
		if snap := s.lim.Snapshot(); snap.LastReason != "dynamodb_request_limit_exceeded" {
			t.Errorf("store's limiter last reason %q, want dynamodb_request_limit_exceeded", snap.LastReason)
		}
		if got := s.scopes.Names(); len(got) != 2 {
			t.Errorf("a store-wide throttle made a scope: %q", got)
		}
	})
}

// TestScopesOff: with SLUICE_SCOPES_MAX=0 there is no scope, a scoped
// throttle is the store's, and /v1/status has no "scopes".
func TestScopesOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := scopedStore{a: newQuotaStore(1), b: newQuotaStore(2000)}
		s := newTestServer(t, store, "SCOPES_MAX=0")
		for range 20 {
			send(s.ProxyHandler(), context.Background(), http.MethodPost, "/a/write", `{}`)
		}
		if s.scopes != nil {
			t.Fatal("scopes made with SLUICE_SCOPES_MAX=0")
		}
		if snap := s.lim.Snapshot(); snap.LastReason != "status_429" {
			t.Errorf("store's limiter last reason %q, want status_429", snap.LastReason)
		}
		rec := send(s.AdminHandler(), context.Background(), http.MethodGet, "/v1/status", "")
		if strings.Contains(rec.Body.String(), `"scopes"`) {
			t.Errorf("status shows scopes when off: %s", rec.Body)
		}
	})
}

// TestScopeConfigErrorsNameTheVariable: each bad SLUICE_SCOPE* value is
// an error naming its variable; the defaults give generic writes a scope
// by their path's first segment.
func TestScopeConfigErrorsNameTheVariable(t *testing.T) {
	f := func(kv, name string) {
		t.Helper()
		_, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", kv})
		if err == nil || !strings.Contains(err.Error(), name+": ") {
			t.Errorf("%s: error %v, want one naming %s", kv, err, name)
		}
	}
	f("SLUICE_SCOPES_MAX=-1", "SLUICE_SCOPES_MAX")
	f("SLUICE_SCOPES_MAX=100000", "SLUICE_SCOPES_MAX")
	f("SLUICE_SCOPE_KEY_DEPTH=-1", "SLUICE_SCOPE_KEY_DEPTH")
	f("SLUICE_SCOPE_KEY_DEPTH=33", "SLUICE_SCOPE_KEY_DEPTH")
	f("SLUICE_SCOPE_PATH_DEPTH=0", "SLUICE_SCOPE_PATH_DEPTH")
	f("SLUICE_SCOPE_GENERIC=table", "SLUICE_SCOPE_GENERIC")
	cfg, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s"})
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.scopeRules(); cfg.ScopesMax != 64 || r.PathDepth != 0 || r.KeyDepth != 1 || r.ByJob {
		t.Errorf("defaults: max %d, rules %+v", cfg.ScopesMax, r)
	}
	cfg, _, _ = LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_SCOPE_GENERIC=job"})
	if r := cfg.scopeRules(); !r.ByJob || r.PathDepth != 0 {
		t.Errorf("SLUICE_SCOPE_GENERIC=job: rules %+v", r)
	}
}

// flatKeysRun is one run of an S3 loader that writes every object once,
// at path(i) for its i-th write, open loop at 500 writes/s, to a bucket
// that takes 100/s and refuses the rest with SlowDown, through sluice
// whose upstream is upstreamURL. It returns the store's throttle ratio
// over the last 6 s of 10 s, and the scopes.
func flatKeysRun(t *testing.T, upstreamURL string, path func(i int) string) (throttled float64, scopes []string) {
	store := newQuotaStore(100)
	store.slowDown = true
	s := newTestServer(t, store, "PROFILE=s3", "UPSTREAM_URL="+upstreamURL, "QUEUE_TIMEOUT=100ms", "RETRY_MAX=0")
	h := s.ProxyHandler()
	start := time.Now()
	const run, measureFrom = 10 * time.Second, 4 * time.Second
	var wg sync.WaitGroup
	var before [2]int
	tick := time.NewTicker(2 * time.Millisecond)
	for i := 0; time.Since(start) < run; i++ {
		<-tick.C
		if before == [2]int{} && time.Since(start) >= measureFrom {
			store.mu.Lock()
			before = [2]int{store.accepted, store.throttled}
			store.mu.Unlock()
		}
		wg.Go(func() {
			send(h, context.Background(), http.MethodPut, path(i), `{"v":1}`, "X-Sluice-Job", "backfill")
		})
	}
	tick.Stop()
	store.mu.Lock()
	accepted, refused := store.accepted-before[0], store.throttled-before[1]
	store.mu.Unlock()
	wg.Wait()
	return float64(refused) / float64(max(accepted+refused, 1)), s.scopes.Names()
}

// TestVirtualHostedBucketIsOneScope: with the upstream the deploy guide
// gives for S3 ("https://BUCKET.s3.REGION.amazonaws.com"), the bucket is
// in the host and the path is the key. Read as path-style, each flat key
// was a scope of its own, made by its SlowDown and never written again,
// and the store's limiter took the scoped SlowDown as neutral: sluice
// slowed nothing and the store refused most writes. The bucket's root is
// now one scope, whose limiter the SlowDowns cut.
func TestVirtualHostedBucketIsOneScope(t *testing.T) {
	var virtual, pathStyle float64
	var virtualScopes, pathScopes []string
	flat := func(i int) string { return fmt.Sprintf("/part-%05d.parquet", i) }
	synctest.Test(t, func(t *testing.T) {
		virtual, virtualScopes = flatKeysRun(t, "https://events.s3.eu-west-1.amazonaws.com", flat)
	})
	synctest.Test(t, func(t *testing.T) {
		pathStyle, pathScopes = flatKeysRun(t, "https://s3.eu-west-1.amazonaws.com/", flat)
	})
	t.Logf("store throttle ratio over the last 6 s: virtual-hosted upstream %.1f%% (scopes %q), path-style upstream read for the same paths %.1f%% (%d scopes)",
		100*virtual, virtualScopes, 100*pathStyle, len(pathScopes))
	if len(virtualScopes) != 1 || virtualScopes[0] != "events/" {
		t.Errorf("virtual-hosted bucket: scopes %q, want [events/]", virtualScopes)
	}
	if virtual > 0.05 {
		t.Errorf("virtual-hosted bucket: the store refused %.1f%% of the writes, want at most 5%%", 100*virtual)
	}
	// The same paths read path-style: the case the fix is for, kept so
	// that the test shows what it guards.
	if len(pathScopes) != 64 {
		t.Errorf("path-style reading of flat keys: %d scopes; the scenario no longer shows the per-object scopes", len(pathScopes))
	}
}

// TestScopesTooFineCountStoreWide: when every write is a scope of its own
// (keys under hashed prefixes, "/bucket/3f2a/part.parquet", with
// SLUICE_SCOPE_KEY_DEPTH 1), each SlowDown made a limiter for a scope no
// later write took from, and the store's limiter took the scoped throttle
// as neutral: sluice slowed nothing and the store refused 80% of the
// writes. Once more scopes are throttled than sluice keeps limiters for
// (an eviction within the retirement span), a scoped throttle of a write
// that no scope's limiter paced counts store-wide as well.
func TestScopesTooFineCountStoreWide(t *testing.T) {
	hashed := func(i int) string { return fmt.Sprintf("/events/%04x/part.parquet", (i*7919)%65536) }
	synctest.Test(t, func(t *testing.T) {
		refused, scopes := flatKeysRun(t, "https://s3.eu-west-1.amazonaws.com/", hashed)
		t.Logf("hashed prefixes: the store refused %.1f%% of the writes over the last 6 s; %d scopes", 100*refused, len(scopes))
		if refused > 0.05 {
			t.Errorf("the store refused %.1f%% of the writes, want at most 5%%", 100*refused)
		}
	})
}

// TestScopeBucket: SLUICE_SCOPE_BUCKET names the bucket of a
// virtual-hosted upstream whose host does not say it (MinIO, Ceph), and
// wins over the host; a bad one exits naming the variable.
func TestScopeBucket(t *testing.T) {
	f := func(want string, env ...string) {
		t.Helper()
		cfg := testConfig(t, env...)
		if got := cfg.scopeRules().Bucket; got != want {
			t.Errorf("%q: bucket %q, want %q", env, got, want)
		}
	}
	f("", "PROFILE=s3")
	f("", "PROFILE=s3", "UPSTREAM_URL=https://s3.eu-west-1.amazonaws.com")
	f("logs", "PROFILE=s3", "UPSTREAM_URL=https://logs.s3.eu-west-1.amazonaws.com")
	f("logs", "PROFILE=gcs", "UPSTREAM_URL=https://logs.storage.googleapis.com")
	f("", "PROFILE=dynamodb", "UPSTREAM_URL=https://logs.s3.eu-west-1.amazonaws.com")
	f("logs", "PROFILE=s3", "UPSTREAM_URL=http://logs.minio:9000", "SCOPE_BUCKET=logs")
	f("other", "PROFILE=s3", "UPSTREAM_URL=https://logs.s3.eu-west-1.amazonaws.com", "SCOPE_BUCKET=other")
	for _, bad := range []string{"a/b", "a b", "a\n"} {
		_, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_PROFILE=s3", "SLUICE_SCOPE_BUCKET=" + bad})
		if err == nil || !strings.Contains(err.Error(), "SLUICE_SCOPE_BUCKET: ") {
			t.Errorf("SLUICE_SCOPE_BUCKET=%q: error %v, want one naming it", bad, err)
		}
	}
	_, warnings, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_PROFILE=dynamodb", "SLUICE_SCOPE_BUCKET=logs"})
	if err != nil || len(warnings) != 1 || warnings[0] != "SLUICE_SCOPE_BUCKET ignored: it applies to SLUICE_PROFILE=s3 or gcs, not dynamodb" {
		t.Errorf("SLUICE_SCOPE_BUCKET with dynamodb: warnings %q, err %v", warnings, err)
	}
}

// TestMultiScopeWritesDoNotDeadlock: writes that each take from two
// throttled tables, named in either order, all get through one slot per
// table: the scopes are taken in one order (sorted), so no write holds
// one table's slot while waiting for the other's that another write
// holds. Under synctest a deadlock would fail the test (every goroutine
// blocked).
func TestMultiScopeWritesDoNotDeadlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		throttled := map[string]bool{}
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			for _, table := range []string{"table_a", "table_b"} {
				if strings.Contains(string(body), table) && !throttled[table] {
					throttled[table] = true
					w.WriteHeader(http.StatusBadRequest)
					_, _ = io.WriteString(w, `{"__type":"#ProvisionedThroughputExceededException"}`)
					return
				}
			}
			_, _ = io.WriteString(w, `{}`)
		})
		s := newTestServer(t, store, "PROFILE=dynamodb", "RETRY_MAX=0", "INITIAL_CONCURRENCY=1", "MAX_CONCURRENCY=1")
		put := func(table string) string {
			return `{"RequestItems":{"` + table + `":[{"PutRequest":{"Item":{}}}]}}`
		}
		send(s.ProxyHandler(), context.Background(), http.MethodPost, "/", put("table_a"), "X-Amz-Target", "DynamoDB_20120810.BatchWriteItem")
		send(s.ProxyHandler(), context.Background(), http.MethodPost, "/", put("table_b"), "X-Amz-Target", "DynamoDB_20120810.BatchWriteItem")
		if got := s.scopes.Names(); len(got) != 2 {
			t.Fatalf("scopes %q, want both tables", got)
		}
		orders := []string{
			`{"RequestItems":{"table_a":[{"PutRequest":{"Item":{}}}],"table_b":[{"PutRequest":{"Item":{}}}]}}`,
			`{"RequestItems":{"table_b":[{"PutRequest":{"Item":{}}}],"table_a":[{"PutRequest":{"Item":{}}}]}}`,
		}
		var wg sync.WaitGroup
		codes := make([]int, 40)
		for i := range codes {
			wg.Go(func() {
				codes[i] = send(s.ProxyHandler(), context.Background(), http.MethodPost, "/", orders[i%2], "X-Amz-Target", "DynamoDB_20120810.BatchWriteItem").Code
			})
		}
		wg.Wait()
		for i, c := range codes {
			if c != http.StatusOK {
				t.Errorf("write %d: %d", i, c)
			}
		}
	})
}

// TestMultiScopeWriteHoldsNothingWhileWaiting: a batch over two tables,
// one of them paused by the store, waits for it without keeping a slot of
// the other: writes to the other table alone still use all of its slots.
func TestMultiScopeWriteHoldsNothingWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		throttle := map[string]bool{"orders": true, "returns": true}
		release := make(chan struct{})
		inOrders := 0
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			for table, on := range throttle {
				if on && strings.Contains(string(body), `"`+table+`"`) {
					mu.Unlock()
					w.Header().Set("Retry-After", "60") // long: the scope's limiter pauses
					w.WriteHeader(http.StatusBadRequest)
					_, _ = io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}`)
					return
				}
			}
			if strings.Contains(string(body), `"TableName":"orders"`) {
				inOrders++
				mu.Unlock()
				<-release
			} else {
				mu.Unlock()
			}
			_, _ = io.WriteString(w, `{}`)
		})
		s := newTestServer(t, store, "PROFILE=dynamodb", "RETRY_MAX=0", "INITIAL_RATE=1000", "INITIAL_CONCURRENCY=4",
			"MAX_CONCURRENCY=4", "QUEUE_TIMEOUT=20s")
		// Each its own job: a throttled job's own writes wait out its
		// backoff (state), which is not what this test is about.
		write := func(job, target, body string) int {
			return send(s.ProxyHandler(), context.Background(), http.MethodPost, "/", body,
				"X-Amz-Target", "DynamoDB_20120810."+target, "X-Sluice-Job", job).Code
		}
		const batch = `{"RequestItems":{"orders":[{"PutRequest":{"Item":{"id":{"S":"1"}}}}],"returns":[{"PutRequest":{"Item":{"id":{"S":"2"}}}}]}}`
		// The store has answered (its limiter is past its cold start);
		// both tables get a limiter: orders' is cut by a short throttle,
		// returns' paused for a minute.
		write("seed", "PutItem", `{"TableName":"events","Item":{}}`)
		write("seed", "PutItem", `{"TableName":"returns","Item":{}}`)
		mu.Lock()
		throttle["orders"], throttle["returns"] = false, false
		mu.Unlock()
		// "orders" sorts first: the batch takes it before it finds
		// "returns" paused.
		if got := s.scopes.Names(); len(got) != 1 || got[0] != "returns" {
			t.Fatalf("scopes %q, want [returns]", got)
		}
		s.scopes.Throttle("orders", 1000, 4, limiter.Sample{Outcome: limiter.Congested, Reason: "test"})
		codes := make(chan int, 5)
		go func() { codes <- write("batch", "BatchWriteItem", batch) }()
		synctest.Wait()
		for range 4 {
			go func() { codes <- write("orders", "PutItem", `{"TableName":"orders","Item":{}}`) }()
		}
		time.Sleep(100 * time.Millisecond) // the orders limiter's rate lets 4 through in a few ms
		synctest.Wait()
		mu.Lock()
		got := inOrders
		mu.Unlock()
		if got != 4 {
			t.Errorf("%d of 4 writes to orders reached the store while a batch waited on returns, want all: the batch holds an orders slot", got)
		}
		close(release)
		for range 4 {
			if c := <-codes; c != http.StatusOK {
				t.Errorf("write to orders: %d", c)
			}
		}
		time.Sleep(time.Minute)
		if c := <-codes; c != http.StatusOK && c != http.StatusTooManyRequests {
			t.Errorf("the batch: %d, want 200 after the pause, or sluice's pushback", c)
		}
	})
}

// TestNoScopesWhereNoneCanBeNamed: a generic store without
// SLUICE_SCOPE_GENERIC, or VictoriaMetrics, names no scope, so sluice
// makes no set of scope limiters and /v1/status and the page show none.
func TestNoScopesWhereNoneCanBeNamed(t *testing.T) {
	f := func(want bool, env ...string) {
		t.Helper()
		s := newTestServer(t, &pegasusStore{}, env...)
		if got := s.scopes != nil; got != want {
			t.Errorf("%q: scopes made %v, want %v", env, got, want)
		}
		rec := send(s.AdminHandler(), context.Background(), http.MethodGet, "/v1/status", "")
		if got := strings.Contains(rec.Body.String(), `"scopes"`); got != want {
			t.Errorf("%q: /v1/status has scopes %v, want %v", env, got, want)
		}
	}
	f(false)
	f(false, "PROFILE=victoriametrics")
	f(true, "SCOPE_GENERIC=path")
	f(true, "SCOPE_GENERIC=job")
	f(true, "PROFILE=s3")
	f(false, "PROFILE=s3", "SCOPES_MAX=0")
}

// TestScopedThrottleEndsTheStoresColdStart: a scoped throttle is an
// answer of the store, so the store's limiter leaves its cold start (two
// writes in flight, a burst of two) though it learns nothing else from it.
func TestScopedThrottleEndsTheStoresColdStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}`)
		})
		s := newTestServer(t, store, "PROFILE=dynamodb", "RETRY_MAX=0", "INITIAL_RATE=1000")
		if b := s.lim.Snapshot().Burst; b > 2 {
			t.Fatalf("burst %v before any answer, want the cold start's 2", b)
		}
		send(s.ProxyHandler(), context.Background(), http.MethodPost, "/", `{"TableName":"orders","Item":{}}`,
			"X-Amz-Target", "DynamoDB_20120810.PutItem")
		snap := s.lim.Snapshot()
		if snap.Burst <= 2 {
			t.Errorf("burst %v after the store answered (a scoped throttle), want past the cold start", snap.Burst)
		}
		if snap.Decreases != 0 || !snap.LastThrottle.IsZero() {
			t.Errorf("the store's limiter took the scoped throttle: %+v", snap)
		}
	})
}

// TestScopesReadTheLoadersPath: with a path in SLUICE_UPSTREAM_URL (a
// gateway's prefix), a write's scope is still read from the path the
// loader wrote to, not from the prefix every write shares: a 429 of
// /a/write throttles scope "a", and writes to /b/write pass no limiter
// of it.
func TestScopesReadTheLoadersPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if strings.HasPrefix(r.URL.Path, "/ingest/a/") {
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			_, _ = io.WriteString(w, `{}`)
		})
		s := newTestServer(t, store, "UPSTREAM_URL=http://store.test/ingest", "SCOPE_GENERIC=path", "RETRY_MAX=0")
		send(s.ProxyHandler(), context.Background(), http.MethodPost, "/a/write", `{}`)
		if got := s.scopes.Names(); len(got) != 1 || got[0] != "a" {
			t.Errorf("scopes after a 429 of /a/write behind /ingest: %q, want [a]", got)
		}
	})
}

// scopeRatesAfterBurst throttles tables tabA and tabB once each (which
// gives each a limiter), then sends 100 BatchWriteItem writes at once,
// over both tables or over tabA alone, and returns the scopes' rates
// after them.
func scopeRatesAfterBurst(t *testing.T, both bool) map[string]float64 {
	var throttledA, throttledB atomic.Bool
	store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		if strings.Contains(string(b), "tabA") && throttledA.CompareAndSwap(false, true) ||
			strings.Contains(string(b), "tabB") && throttledB.CompareAndSwap(false, true) {
			w.Header().Set("X-Amzn-ErrorType", "ProvisionedThroughputExceededException")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}`)
			return
		}
		_, _ = io.WriteString(w, `{"UnprocessedItems":{}}`)
	})
	s := newTestServer(t, store, "PROFILE=dynamodb", "QUEUE_TIMEOUT=10s", "RETRY_MAX=0", "INITIAL_RATE=20", "QUEUE_MAX=1000")
	h := s.ProxyHandler()
	hdr := []string{"X-Amz-Target", "DynamoDB_20120810.BatchWriteItem", "Content-Type", "application/x-amz-json-1.0"}
	item := `[{"PutRequest":{"Item":{"k":{"S":"x"}}}}]`
	for _, table := range []string{"tabA", "tabB"} {
		send(h, context.Background(), http.MethodPost, "/", `{"RequestItems":{"`+table+`":`+item+`}}`, hdr...)
	}
	body := `{"RequestItems":{"tabA":` + item + `}}`
	if both {
		body = `{"RequestItems":{"tabA":` + item + `,"tabB":` + item + `}}`
	}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if code := send(h, context.Background(), http.MethodPost, "/", body, hdr...).Code; code != http.StatusOK {
				t.Errorf("write: %d", code)
			}
		})
	}
	wg.Wait()
	rates := map[string]float64{}
	scopes, _ := s.scopes.Status()
	for _, sc := range scopes {
		rates[sc.Scope] = sc.Rate
	}
	return rates
}

// TestTwoThrottledTablesKeepTheirRates: writes over two throttled tables
// take a permit of each table's limiter, and give back the one they hold
// when the other has none free. Given back, a permit's rate units must
// come back too: they used to be spent, each such write spent them over
// and over while it waited its turn, and the tables' limiters, which read
// those grants as writes sent and held back by the rate, raised their
// rates to about 15 times what the same writes over one table raise it to.
func TestTwoThrottledTablesKeepTheirRates(t *testing.T) {
	var one, two map[string]float64
	synctest.Test(t, func(t *testing.T) { one = scopeRatesAfterBurst(t, false) })
	synctest.Test(t, func(t *testing.T) { two = scopeRatesAfterBurst(t, true) })
	t.Logf("rates after writes to tabA alone %v, to both tables %v", one, two)
	for _, table := range []string{"tabA", "tabB"} {
		if two[table] > 2*one["tabA"] {
			t.Errorf("%s's rate %.0f/s after the writes over both tables, over twice tabA's %.0f/s after the same writes to it alone",
				table, two[table], one["tabA"])
		}
	}
}
