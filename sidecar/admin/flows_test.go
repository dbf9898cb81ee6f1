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
			{Key: "backfill", Queued: 40, MeanWait: 3 * time.Second, MaxWait: 9 * time.Second},
			{Key: "audit", Queued: 2, MeanWait: time.Second, MaxWait: time.Second},
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
