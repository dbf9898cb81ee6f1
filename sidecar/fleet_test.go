package sidecar

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/fleet"
	"github.com/sluice-dev/sluice/internal/redistest"
	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/state"
)

func TestFleetConfig(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	if cfg.FleetRedisURL != "" || cfg.FleetWeight != 1 || cfg.FleetRefresh != time.Second || cfg.FleetCapacity != 0 {
		t.Errorf("defaults: %+v", cfg)
	}
	if got := cfg.fleetResource(); got != "generic:store.test" {
		t.Errorf("derived resource %q, want generic:store.test", got)
	}
	cfg = testConfig(t, "UPSTREAM_URL=http://[::1]:9200", "PROFILE=elasticsearch")
	if got := cfg.fleetResource(); got != "elasticsearch:_::1_:9200" || fleet.ValidResource(got) != nil {
		t.Errorf("derived resource %q", got)
	}
	cfg = testConfig(t, "FLEET_REDIS_URL=rediss://user:s3cret@redis.test:6380/2", "FLEET_REDIS_PASSWORD_FILE="+pw,
		"FLEET_RESOURCE=dynamodb:orders", "FLEET_CAPACITY=4000", "FLEET_WEIGHT=2.5", "FLEET_REFRESH=500ms")
	if cfg.fleetResource() != "dynamodb:orders" || cfg.FleetCapacity != 4000 || cfg.FleetWeight != 2.5 {
		t.Errorf("set: %+v", cfg)
	}
	for _, kv := range cfg.Effective() {
		if strings.Contains(kv[1], "s3cret") || strings.Contains(kv[1], "hunter2") {
			t.Errorf("check-config shows a secret: %s=%s", kv[0], kv[1])
		}
	}

	f := func(kv, wantVar string) {
		t.Helper()
		env := []string{"SLUICE_UPSTREAM_URL=http://s", kv}
		if !strings.HasPrefix(kv, "SLUICE_FLEET_REDIS_URL=") {
			env = append(env, "SLUICE_FLEET_REDIS_URL=redis://127.0.0.1:6379")
		}
		_, _, err := LoadConfig(env)
		ce, ok := err.(*ConfigError)
		if !ok || len(ce.Problems) != 1 || !strings.HasPrefix(ce.Problems[0], wantVar+":") {
			t.Errorf("%s: %v, want one problem naming %s", kv, err, wantVar)
			return
		}
		if strings.Contains(ce.Problems[0], "s3cret") {
			t.Errorf("%s: the problem shows the password: %s", kv, ce.Problems[0])
		}
	}
	f("SLUICE_FLEET_REDIS_URL=http://redis:6379", "SLUICE_FLEET_REDIS_URL")
	f("SLUICE_FLEET_REDIS_URL=redis://:s3cret@", "SLUICE_FLEET_REDIS_URL")
	f("SLUICE_FLEET_REDIS_URL=redis://:s3cret@redis:6379/x", "SLUICE_FLEET_REDIS_URL")
	f("SLUICE_FLEET_REDIS_PASSWORD_FILE=/nonexistent/pw", "SLUICE_FLEET_REDIS_PASSWORD_FILE")
	f("SLUICE_FLEET_REDIS_PASSWORD_FILE="+t.TempDir(), "SLUICE_FLEET_REDIS_PASSWORD_FILE") // not a regular file
	f("SLUICE_FLEET_RESOURCE=a{b}", "SLUICE_FLEET_RESOURCE")
	f("SLUICE_FLEET_CAPACITY=-1", "SLUICE_FLEET_CAPACITY")
	f("SLUICE_FLEET_CAPACITY=NaN", "SLUICE_FLEET_CAPACITY")
	f("SLUICE_FLEET_CAPACITY=many", "SLUICE_FLEET_CAPACITY")
	f("SLUICE_FLEET_WEIGHT=0", "SLUICE_FLEET_WEIGHT")
	f("SLUICE_FLEET_WEIGHT=0.0000001", "SLUICE_FLEET_WEIGHT") // kept as 0 by the scripts
	f("SLUICE_FLEET_WEIGHT=1e300", "SLUICE_FLEET_WEIGHT")
	f("SLUICE_FLEET_REFRESH=10ms", "SLUICE_FLEET_REFRESH")
	f("SLUICE_FLEET_REFRESH=2m", "SLUICE_FLEET_REFRESH")

	// Without the URL, fleet mode is off and the rest is ignored, with a
	// warning: not checked, so that unsetting the URL alone turns it off
	// even where the password's Secret was removed with it.
	_, warnings, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_FLEET_REDIS_PASSWORD_FILE=/nonexistent/pw", "SLUICE_FLEET_WEIGHT=0"})
	if err != nil || len(warnings) != 2 {
		t.Errorf("fleet variables without SLUICE_FLEET_REDIS_URL: %v, warnings %q; want no error and a warning for each", err, warnings)
	}
}

// newFleetServer builds a sidecar in fleet mode whose Redis is the
// in-process mr; its loops stop at the end of the test.
func newFleetServer(t *testing.T, mr *miniredis.Miniredis, store http.Handler, env ...string) (*Server, func()) {
	t.Helper()
	cfg := testConfig(t, append([]string{"FLEET_REDIS_URL=redis://127.0.0.1:6379"}, env...)...)
	s, err := NewServer(cfg, Options{
		Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{},
		Transport:   memTransport{store},
		FleetDialer: func(context.Context, string, string) (net.Conn, error) { return mr.Dial() },
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	stop := sync.OnceFunc(s.StartLoops())
	t.Cleanup(stop) // runs after the bubble: a no-op if the test stopped it
	return s, stop
}

func fleetStatus(t *testing.T, s *Server) *admin.FleetStatus {
	t.Helper()
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/status", nil))
	var st admin.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	return st.Fleet
}

// TestFleetWiring: two sidecars in fleet mode on one Redis share the
// configured capacity; the lease is the limiter's ceiling; /v1/status
// and the metrics show the fleet; a sidecar that stops leaves it at once.
func TestFleetWiring(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr := miniredis.NewMiniRedis()
		defer mr.Close()
		mr.ClockTTL(true)
		store := newQuotaStore(1000)
		env := []string{"FLEET_RESOURCE=test:wiring", "FLEET_CAPACITY=300"}
		a, stopA := newFleetServer(t, mr, store, append(env, "FLEET_WEIGHT=2")...)
		b, stopB := newFleetServer(t, mr, store, env...)
		defer stopA()
		defer stopB()
		// Three refreshes each: the reports of a member's first refresh
		// claim a full share, the next says what the sidecar wants, and
		// the other's lease follows at its next.
		time.Sleep(3500 * time.Millisecond)
		// Both idle: each asks for its least rate and gets it, and the
		// rest of the capacity by weight.
		if r, _ := a.lim.Ceiling(); math.Abs(r-200) > 1 {
			t.Errorf("a's ceiling %v, want about 200 (weight 2 of 3, of 300)", r)
		}
		if r, _ := b.lim.Ceiling(); math.Abs(r-100) > 1 {
			t.Errorf("b's ceiling %v, want about 100", r)
		}
		if r := b.lim.SendRate(); r != 50 {
			t.Errorf("b's send rate %v, want its initial 50 (below its lease of 100)", r)
		}
		st := fleetStatus(t, a)
		if st == nil || st.Mode != "leased" || math.Abs(st.Lease-200) > 1 || st.Budget != 300 || st.MemberCount != 2 || st.Degraded {
			t.Fatalf("status: %+v", st)
		}
		time.Sleep(time.Second) // the status read asked for the member list
		if st := fleetStatus(t, a); len(st.Members) != 2 {
			t.Errorf("members listed: %+v", st.Members)
		}
		if v := metricValue(t, a, "sluice_fleet_lease_rate"); math.Abs(v-200) > 1 {
			t.Errorf("sluice_fleet_lease_rate %v, want about 200", v)
		}
		if v := metricValue(t, a, "sluice_fleet_members"); v != 2 {
			t.Errorf("sluice_fleet_members %v, want 2", v)
		}
		stopA()
		members, _ := fleet.Keys("test:wiring")
		if ids, _ := mr.HKeys(members); len(ids) != 1 {
			t.Errorf("members after a stopped: %v, want b alone", ids)
		}
		time.Sleep(1200 * time.Millisecond)
		if st := fleetStatus(t, b); st.Lease != 300 {
			t.Errorf("b after a left: lease %v, want 300", st.Lease)
		}
		stopB()
	})
}

// TestFleetWritesWithoutRedis: a sidecar whose Redis never answers starts,
// is ready and writes, on its own limit.
func TestFleetWritesWithoutRedis(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newQuotaStore(1000)
		cfg := testConfig(t, "FLEET_REDIS_URL=redis://127.0.0.1:6379")
		s, err := NewServer(cfg, Options{
			Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}, Transport: memTransport{store},
			FleetDialer: func(context.Context, string, string) (net.Conn, error) {
				return nil, &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		stop := s.StartLoops()
		defer func() {
			stop()
			// go-redis probes a Redis it failed to dial once a second in
			// a goroutine of its own, which sees the client closed only
			// when it wakes; the bubble must not end before.
			time.Sleep(2 * time.Second)
		}()
		time.Sleep(2 * time.Second)
		for i := range 20 {
			if rec := send(s.ProxyHandler(), context.Background(), "PUT", "/x", "body"); rec.Code != http.StatusOK {
				t.Fatalf("write %d: %d %s", i, rec.Code, rec.Body)
			}
		}
		st := fleetStatus(t, s)
		if st.Mode != "local" || !st.Degraded || st.RefreshErrors == 0 {
			t.Errorf("status: %+v", st)
		}
		if v := metricValue(t, s, "sluice_fleet_degraded"); v != 1 {
			t.Errorf("sluice_fleet_degraded %v, want 1", v)
		}
	})
}

// TestFleetOff: without SLUICE_FLEET_REDIS_URL there is no fleet in the
// status, and the series exist, at zero.
func TestFleetOff(t *testing.T) {
	s := newTestServer(t, newQuotaStore(1000))
	if st := fleetStatus(t, s); st != nil {
		t.Errorf("fleet status with fleet mode off: %+v", st)
	}
	for _, name := range []string{"sluice_fleet_degraded", "sluice_fleet_lease_rate", "sluice_fleet_mode"} {
		if v := metricValue(t, s, name); v != 0 {
			t.Errorf("%s = %v with fleet mode off", name, v)
		}
	}
	if r, _ := s.lim.Ceiling(); r != 0 {
		t.Errorf("ceiling %v with fleet mode off", r)
	}
}

// TestFleetClusterConfig: SLUICE_FLEET_REDIS_CLUSTER reads the URL as a
// Redis Cluster's (seed nodes as addr=, database 0 only); a URL that
// cannot be one is a config error naming SLUICE_FLEET_REDIS_URL.
func TestFleetClusterConfig(t *testing.T) {
	f := func(url string, cluster bool, ok bool) {
		t.Helper()
		_, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_FLEET_REDIS_URL=" + url,
			"SLUICE_FLEET_REDIS_CLUSTER=" + strconv.FormatBool(cluster)})
		if ok {
			if err != nil {
				t.Errorf("%s (cluster %v): %v", url, cluster, err)
			}
			return
		}
		ce, isCE := err.(*ConfigError)
		if !isCE || len(ce.Problems) != 1 || !strings.HasPrefix(ce.Problems[0], "SLUICE_FLEET_REDIS_URL:") {
			t.Errorf("%s (cluster %v): %v, want one problem naming SLUICE_FLEET_REDIS_URL", url, cluster, err)
		}
	}
	f("redis://cfg.cache.test:6379?addr=n2.cache.test:6379", true, true)
	f("redis://cfg.cache.test:6379?addr=n2.cache.test:6379", false, false)
	f("redis://cfg.cache.test:6379/3", true, false)
	f("redis://cfg.cache.test:6379/3", false, true)
}

// TestFleetOnCluster: a sidecar with SLUICE_FLEET_REDIS_CLUSTER, given
// one node of a real Redis Cluster, gets its lease through the node that
// owns the fleet's slot. Real processes, so real time: it waits, bounded,
// for the first refresh.
func TestFleetOnCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	cfg := testConfig(t, "FLEET_REDIS_URL="+c.URL(), "FLEET_REDIS_CLUSTER=true", "FLEET_RESOURCE=test:cluster", "FLEET_CAPACITY=300")
	s, err := NewServer(cfg, Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{},
		Transport: memTransport{newQuotaStore(1000)}})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	defer s.StartLoops()()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := fleetStatus(t, s)
		if st.Mode == "leased" {
			if st.Lease != 300 || st.Budget != 300 || st.MemberCount != 1 {
				t.Errorf("status: %+v, want a lease of the whole 300", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lease within 10s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	members, _ := fleet.Keys("test:cluster")
	owner := redis.NewClient(&redis.Options{Addr: c.SlotOwner(t, members).Addr(), Protocol: 2})
	defer owner.Close()
	if n, err := owner.HLen(context.Background(), members).Result(); err != nil || n != 1 {
		t.Errorf("members on the slot's owner: %d %v, want 1", n, err)
	}
}

// ddbTable is one DynamoDB table of provisioned capacity rate writes/s:
// above it, 400 ProvisionedThroughputExceededException.
type ddbTable struct {
	mu                  sync.Mutex
	rate, tokens        float64
	last                time.Time
	accepted, throttled int
}

func (s *ddbTable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.mu.Lock()
	now := time.Now()
	if !s.last.IsZero() {
		s.tokens = min(s.rate/10, s.tokens+now.Sub(s.last).Seconds()*s.rate)
	}
	s.last = now
	ok := s.tokens >= 1
	if ok {
		s.tokens--
		s.accepted++
	} else {
		s.throttled++
	}
	s.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}`)
		return
	}
	_, _ = io.WriteString(w, `{}`)
}

// runDDBFleet runs two fleet-mode sidecars (learned capacity) in front of
// one DynamoDB table of 200 WCU for 30 s, the second's loader joining at
// 10 s, and returns the fleet's budget, the throttles the fleet was told
// of, the table, and each sidecar's writes taken over [20 s, 30 s).
func runDDBFleet(t *testing.T, extra ...string) (budget float64, fleetThrottles int, table *ddbTable, okA, okB int64) {
	t.Helper()
	mr := miniredis.NewMiniRedis()
	defer mr.Close()
	mr.ClockTTL(true)
	table = &ddbTable{rate: 200, tokens: 20}
	env := append([]string{"PROFILE=dynamodb", "RETRY_MAX=0", "FLEET_RESOURCE=dynamodb:orders"}, extra...)
	a, stopA := newFleetServer(t, mr, table, env...)
	b, stopB := newFleetServer(t, mr, table, env...)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := time.Now()
	var counting atomic.Bool
	var oks [2]atomic.Int64
	for i, s := range []*Server{a, b} {
		for range 6 {
			wg.Go(func() {
				if i == 1 {
					time.Sleep(10 * time.Second) // b's loader joins late
				}
				for ctx.Err() == nil {
					rec := send(s.ProxyHandler(), ctx, http.MethodPost, "/", `{"TableName":"orders","Item":{"id":{"S":"1"}}}`,
						"X-Amz-Target", "DynamoDB_20120810.PutItem", "X-Sluice-Job", "load")
					if rec.Code == http.StatusOK && counting.Load() {
						oks[i].Add(1)
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
	}
	time.Sleep(time.Until(start.Add(20 * time.Second)))
	counting.Store(true)
	time.Sleep(time.Until(start.Add(30 * time.Second)))
	st := fleetStatus(t, a)
	_, state := fleet.Keys("dynamodb:orders")
	thr := mr.HGet(state, "throttles")
	n, _ := strconv.Atoi(thr)
	cancel()
	wg.Wait()
	stopA()
	stopB()
	return st.Budget, n, table, oks[0].Load(), oks[1].Load()
}

// A fleet learns its store's capacity from the throttles of the store's
// parts too: a DynamoDB table's ProvisionedThroughputExceeded goes to the
// table's own limiter, and the fleet, which read the store's limiter
// alone, was never told of one. Its budget then grew past anything the
// table takes (800/s for a table of 200/s), and fleet mode did nothing
// for the README's own example, dynamodb:orders.
func TestFleetLearnsFromPartThrottles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		budget, told, table, a, b := runDDBFleet(t)
		table.mu.Lock()
		defer table.mu.Unlock()
		t.Logf("fleet budget %.0f/s, throttles the fleet was told of %d; the table took %d, throttled %d; over [20s, 30s) a %d/s, b %d/s",
			budget, told, table.accepted, table.throttled, a/10, b/10)
		if told == 0 || budget > 1.5*table.rate {
			t.Errorf("the table (%.0f/s) throttled %d writes, the fleet was told of %d and learned a budget of %.0f/s",
				table.rate, table.throttled, told, budget)
		}
	})
}
