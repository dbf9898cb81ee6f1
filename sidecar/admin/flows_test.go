package admin

import (
	"testing"
	"time"

	"github.com/sluice-dev/sluice/limiter"
)

// TestAddScopeWaits: a job whose writes wait in a throttled scope's queue
// shows that wait, though the store's limiter let them through at once.
func TestAddScopeWaits(t *testing.T) {
	store := []limiter.FlowStats{
		{Key: "backfill", Share: 0.2, MeanWait: 0, MaxWait: 0},
		{Key: "stream", Share: 0.8, MeanWait: time.Millisecond, MaxWait: 2 * time.Millisecond, Queued: 1},
	}
	scopes := []limiter.ScopeStatus{
		{Scope: "orders", Snapshot: limiter.Snapshot{Flows: []limiter.FlowStats{
			{Key: "backfill", Queued: 40, Grants: 4, MeanWait: 3 * time.Second, MaxWait: 9 * time.Second},
			{Key: "audit", Queued: 2, Grants: 1, MeanWait: time.Second, MaxWait: time.Second},
		}}},
	}
	got := addScopeWaits(store, scopes)
	if len(got) != 3 || got[0].Key != "audit" || got[1].Key != "backfill" || got[2].Key != "stream" {
		t.Fatalf("flows %+v, want audit, backfill, stream in order", got)
	}
	if b := got[1]; b.Queued != 40 || b.MeanWait != 3*time.Second || b.MaxWait != 9*time.Second || b.Share != 0.2 {
		t.Errorf("backfill %+v, want its scope's 40 queued and 3s/9s waits, the store's share", b)
	}
	if a := got[0]; a.Queued != 2 || a.Share != 0 {
		t.Errorf("audit, waiting only in a scope: %+v", a)
	}
	if s := got[2]; s != store[1] {
		t.Errorf("stream, in no scope: %+v, want it unchanged", s)
	}
	if store[0].Queued != 0 {
		t.Error("addScopeWaits changed its input")
	}
}

// TestAddScopeWaitsAcrossScopes: a job whose writes go to two throttled
// tables, each write to one of them, waits there as long as the writes to
// either: the scopes' waits are spread over the job's writes, not added
// up as if each write had waited in both.
func TestAddScopeWaitsAcrossScopes(t *testing.T) {
	store := []limiter.FlowStats{{Key: "backfill", Share: 1, Grants: 10, MeanWait: 5 * time.Millisecond}}
	scope := func(name string, grants uint64, wait time.Duration) limiter.ScopeStatus {
		return limiter.ScopeStatus{Scope: name, Snapshot: limiter.Snapshot{Flows: []limiter.FlowStats{
			{Key: "backfill", Grants: grants, MeanWait: wait, MaxWait: wait},
		}}}
	}
	got := addScopeWaits(store, []limiter.ScopeStatus{scope("orders", 5, 100*time.Millisecond), scope("events", 5, 100*time.Millisecond)})
	if want := 105 * time.Millisecond; len(got) != 1 || got[0].MeanWait != want {
		t.Errorf("flows %+v: mean wait %v, want %v (5ms in the store's queue, 100ms in either table's)", got, got[0].MeanWait, want)
	}
	// A write to both tables (one batch) waits in each: its waits add up.
	got = addScopeWaits([]limiter.FlowStats{{Key: "backfill", Grants: 5}}, []limiter.ScopeStatus{scope("orders", 5, 100*time.Millisecond), scope("events", 5, 100*time.Millisecond)})
	if want := 200 * time.Millisecond; got[0].MeanWait != want {
		t.Errorf("writes to both tables: mean wait %v, want %v", got[0].MeanWait, want)
	}
}
