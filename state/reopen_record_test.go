package state

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestStreamReopenWaitsForItsRecord: the default job (a stream) that
// sluice cancelled for a stall takes writes again once cleaned up. If the
// record saying it reopened cannot be written (a full disk), the record
// still says cleaning: a write admitted now lands in the store, and a
// restart before the record is written runs the cleanup again, over the
// new run's data. The stream's writes wait (as they did while it was
// being cleaned up) until its reopen is recorded.
func TestStreamReopenWaitsForItsRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &flakyStore{}
		api := &storeAPI{}
		api.status = func(call string) int {
			if strings.Contains(call, "/clear") {
				st.setBroken(true) // the disk fills as the cleanup ends
			}
			return http.StatusOK
		}
		m := newTestManager(t, Config{Store: st, HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions(),
			DefaultJob: "default", DefaultJobAutoCancelCauses: []StallCause{CauseStoreThrottling}})
		defer m.Close()
		start := time.Now()
		write(t, m, "default", ack)
		write(t, m, "default", Observation{Kind: ObsThrottled})
		m.Tick(start.Add(DefaultStallAfter))
		m.Tick(start.Add(DefaultStallAfter + DefaultCancelGrace))
		synctest.Wait()
		if v := mustGet(t, m, "default"); v.State != Running || v.Reason != "stream_reopened" {
			t.Fatalf("stream after its cleanup: %s (%s), want running (stream_reopened)", v.State, v.Reason)
		}
		if s := storedState(t, st, "default"); s != Cleaning {
			t.Fatalf("stored %s, want cleaning (the reopen's record failed)", s)
		}
		_, release, err := m.AdmitWithin(context.Background(), "default", 5*time.Second)
		if err == nil {
			release()
			t.Fatalf("a write to the stream admitted while its record says %s: a restart now runs the cleanup again over it", storedState(t, st, "default"))
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a write to the stream while its reopen is not recorded: %v, want held (deadline exceeded)", err)
		}
		st.setBroken(false)
		m.Tick(time.Now())
		if s := storedState(t, st, "default"); s != Running {
			t.Fatalf("stored %s once the store is back, want running", s)
		}
		_, release, err = m.AdmitWithin(context.Background(), "default", 5*time.Second)
		if err != nil {
			t.Fatalf("a write to the stream once its reopen is recorded: %v", err)
		}
		release()
	})
}
