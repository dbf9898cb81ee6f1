package proxy

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// A write over two scopes that waits for one of them tries the other again
// with the limiter the scope has now, not the one it had when the write
// began: that one may have been evicted meanwhile, and a write taking its
// permits, or waiting in its queue, is nobody's to close at shutdown, and
// reports its scope's throttles to a limiter nothing reads any more.
func TestAcquireScopesAfterEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		scopes, err := limiter.NewScopes(limiter.ScopesConfig{Max: 2,
			Limiter: limiter.Config{InitialRate: 1000, MinRate: 1, MaxRate: 1000, InitialConcurrency: 1, MaxConcurrency: 1, Burst: 100}})
		if err != nil {
			t.Fatal(err)
		}
		throttle := limiter.Sample{Outcome: limiter.Congested, Reason: "dynamodb_throttling"}
		a, b := scopes.Throttle("tabA", 1000, 1, throttle), scopes.Throttle("tabB", 1000, 1, throttle)
		time.Sleep(time.Second) // the cut drained their buckets
		heldA, err := a.TryAcquire(1)
		if err != nil {
			t.Fatal(err)
		}
		heldB, err := b.TryAcquire(1)
		if err != nil {
			t.Fatal(err)
		}
		defer heldB.Done(limiter.Sample{Outcome: limiter.Neutral})
		store, err := limiter.New(limiter.Config{InitialRate: 1000, MinRate: 1, MaxRate: 1000, MaxConcurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		p := &Proxy{scopes: scopes, lim: store, m: newMetrics(prometheus.NewRegistry())}
		ex := &exchange{cost: 1, loader: context.Background()}
		classify.DynamoDB.Scopes(classify.ScopeRules{}, classify.Request{Method: http.MethodPost, Path: "/"}, "job",
			[]byte(`{"RequestItems":{"tabA":[{"PutRequest":{}}],"tabB":[{"PutRequest":{}}]}}`), &ex.scopes)
		if ex.scopes.Len() != 2 {
			t.Fatalf("%d scopes, want 2", ex.scopes.Len())
		}
		done := make(chan error, 1)
		go func() { done <- p.acquireScopes(context.Background(), ex, time.Now().Add(time.Minute)) }()
		synctest.Wait() // waiting for tabA
		scopes.Get("tabA")
		scopes.Throttle("tabC", 1000, 1, throttle) // evicts tabB, least recently used, with nothing queued
		heldA.Done(limiter.Sample{Outcome: limiter.Neutral})
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("acquireScopes: %v", err)
			}
		default:
			scopes.Close() // shutdown: what is queued in the scopes' limiters is refused
			synctest.Wait()
			select {
			case err := <-done:
				t.Fatalf("the write waited in tabB's evicted limiter until the shutdown refused it (%v)", err)
			default:
				t.Fatal("the write waits in tabB's evicted limiter, which the shutdown does not close")
			}
		}
		if ex.scopeHeld.p[1] != nil {
			t.Errorf("the write holds a permit of tabB's evicted limiter")
		}
		ex.scopeHeld.unused()
	})
}
