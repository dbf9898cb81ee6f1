package state

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestStreamStallCancelKeepsReopenWhenJobMoves: sluice's own stall cancel
// of the default job (a stream) is committed with Reopen set. If the job
// moves while that record is being written (a throttled write of the
// stream is observed, as happens all the time under throttling), the
// cancel is applied from the request as recorded; it must still say the
// stream reopens: its in-flight writes are told to come back (a retryable
// cause, never the 409 that makes a loader drop its data), and the stream
// takes writes again once cleaned up.
func TestStreamStallCancelKeepsReopenWhenJobMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &gateStore{open: make(chan struct{})}
		api := &storeAPI{}
		m := newTestManager(t, Config{Store: st, HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions(),
			DefaultJob: "default", DefaultJobAutoCancelCauses: []StallCause{CauseStoreThrottling}})
		defer m.Close()
		openGate := sync.OnceFunc(func() { close(st.open) })
		defer openGate()
		start := time.Now()
		write(t, m, "default", ack)
		write(t, m, "default", Observation{Kind: ObsThrottled})
		inflight, release, err := m.Admit(context.Background(), "default")
		if err != nil {
			t.Fatal(err)
		}
		m.Observe("default", Observation{Kind: ObsThrottled})
		m.Tick(start.Add(DefaultStallAfter))
		if v := mustGet(t, m, "default"); v.State != Stalled {
			t.Fatalf("%s, want stalled", v.State)
		}
		ticked := make(chan struct{})
		go func() { m.Tick(start.Add(DefaultStallAfter + DefaultCancelGrace)); close(ticked) }()
		synctest.Wait() // the cancelling record's Put is blocked
		// The stream's in-flight write is throttled again meanwhile.
		m.Observe("default", Observation{Kind: ObsThrottled})
		openGate()
		<-ticked
		<-inflight.Done()
		cause := context.Cause(inflight)
		release()
		if errors.As(cause, new(*NotAcceptingError)) || !errors.Is(cause, context.Canceled) {
			t.Errorf("in-flight write of the stream aborted with %v, want a retryable cause (ReopeningError)", cause)
		}
		synctest.Wait()
		time.Sleep(time.Minute)
		v := mustGet(t, m, "default")
		if v.State != Running {
			t.Fatalf("stream after its own stall cancel: %s (%s), history %v; want running again (stream_reopened)", v.State, v.Reason, historyTo(v))
		}
		if _, rel, err := m.Admit(context.Background(), "default"); err != nil {
			t.Fatalf("a write to the stream after its cleanup: %v", err)
		} else {
			rel()
		}
	})
}
