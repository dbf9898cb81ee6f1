package state

import (
	"testing"
	"time"
)

// TestCompleteRetriedUntilRecorded: a complete whose record cannot be
// written answers an error (the loader is told to retry), and so does its
// retry while the record is still not written. The retry answered success,
// as completing a completed job changes nothing: the loader exited, the
// record still said stalled, and a restart before the tick wrote it
// brought the job back stalled, to be cancelled and its finished load
// cleaned up.
func TestCompleteRetriedUntilRecorded(t *testing.T) {
	now := t0
	st := &flakyStore{}
	m := newTestManager(t, Config{Store: st, Now: func() time.Time { return now }})
	write(t, m, "j", Observation{Kind: ObsThrottled})
	now = now.Add(DefaultStallAfter)
	m.Tick(now)
	if s := storedState(t, st, "j"); s != Stalled {
		t.Fatalf("stored %s, want stalled", s)
	}
	st.setBroken(true)
	if _, err := m.Complete("j"); err == nil {
		t.Fatal("complete on a broken store: no error")
	}
	if _, err := m.Complete("j"); err == nil {
		t.Errorf("complete retried on a still broken store: no error; the store says %s", storedState(t, st, "j"))
	}
	st.setBroken(false)
	if v, err := m.Complete("j"); err != nil || v.State != Completed || storedState(t, st, "j") != Completed {
		t.Errorf("complete retried once the store is back: %s, %v; stored %s", v.State, err, storedState(t, st, "j"))
	}
	m.Close()
}

// TestSetTotalRetriedUntilRecorded: SetTotal says its total is committed
// when it returns; a retry of the same total after a failed commit
// answered success with the total still unwritten.
func TestSetTotalRetriedUntilRecorded(t *testing.T) {
	st := &flakyStore{}
	m := newTestManager(t, Config{Store: st, Now: func() time.Time { return t0 }})
	defer m.Close()
	if _, err := m.Register("j", Settings{}); err != nil {
		t.Fatal(err)
	}
	total := Total{Unit: UnitRecords, N: 1000}
	st.setBroken(true)
	if _, err := m.SetTotal("j", total); err == nil {
		t.Fatal("total on a broken store: no error")
	}
	if _, err := m.SetTotal("j", total); err == nil {
		t.Error("the same total retried on a still broken store: no error")
	}
	st.setBroken(false)
	if _, err := m.SetTotal("j", total); err != nil {
		t.Fatal(err)
	}
	recs, err := st.Load()
	if err != nil || len(recs) != 1 || recs[0].Total == nil || *recs[0].Total != total {
		t.Fatalf("stored %+v, %v", recs, err)
	}
}
