package state

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/internal/logbuf"
)

// While a write to the state store hangs (a detached network volume) and
// holds the store's lock, every request from outside answers within
// requestWait: a cancel, complete, reopen or delete is not done, and says
// so (before it is even checked: a reopen of a completed job would be
// refused once the store answers); a registration, a total or a checkpoint is kept in memory but not
// durable, and says so; a heartbeat, a complete or cancel repeated or a
// total written already, which need no write, are taken at once, and a
// progress report without a checkpoint within a write's second. Once
// the store answers, what was kept is written, and what was refused was
// not done.
func TestRequestsAnswerWhileTheStoreHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Only the hang holds a Put here: "gone" is cancelled first.
		st := &gateStore{open: make(chan struct{}), hold: func(Record) bool { return false }}
		m := newTestManager(t, Config{Store: st})
		openOnce := sync.OnceFunc(func() { close(st.open) })
		defer func() { openOnce(); m.Close() }()
		for _, id := range []string{"j", "done", "pending", "gone"} {
			if _, err := m.Register(id, Settings{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := m.Complete("done"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.SetTotal("done", Total{Unit: UnitRecords, N: 5}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Cancel("gone", false, ""); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // its cancel and cleanup, none configured, end it
		if v := mustGet(t, m, "gone"); v.State != Cancelled {
			t.Fatalf("gone is %s, want cancelled", v.State)
		}

		// j's first answer changes its state: the commit hangs holding
		// the store's lock (the write went on after a second), and a
		// round of the loop waits behind it.
		st.hang.Store(true)
		m.Observe("j", Observation{Kind: ObsOK, Bytes: 1})
		go m.Tick(time.Now())
		synctest.Wait()

		notDone := map[string]func() (JobView, error){
			"cancel":   func() (JobView, error) { return m.Cancel("j", false, "") },
			"complete": func() (JobView, error) { return m.Complete("j") },
			"reopen":   func() (JobView, error) { return m.Reopen("done", "") },
			"delete":   func() (JobView, error) { return m.Delete("done") },
		}
		for what, call := range notDone {
			start := time.Now()
			_, err := call()
			if took := time.Since(start); took != requestWait {
				t.Errorf("%s answered after %v with the store hanging, want %v", what, took, requestWait)
			}
			if !errors.Is(err, ErrStoreSlow) || !errors.Is(err, ErrNotDurable) {
				t.Errorf("%s: %v, want ErrStoreSlow and ErrNotDurable (not done)", what, err)
			}
		}
		kept := map[string]func() (JobView, error){
			"register": func() (JobView, error) { return m.Register("k", Settings{}) },
			"register with total": func() (JobView, error) {
				return m.RegisterWithTotal("t", Settings{}, Total{Unit: UnitItems, N: 3})
			},
			"total": func() (JobView, error) { return m.SetTotal("j", Total{Unit: UnitRecords, N: 10}) },
			"checkpoint": func() (JobView, error) {
				return m.ReportProgress("j", Progress{Records: 1, Checkpoint: []byte(`{"n":1}`)})
			},
		}
		for what, call := range kept {
			start := time.Now()
			_, err := call()
			if took := time.Since(start); took != requestWait {
				t.Errorf("%s answered after %v with the store hanging, want %v", what, took, requestWait)
			}
			if !errors.Is(err, ErrStoreSlow) || errors.Is(err, ErrNotDurable) {
				t.Errorf("%s: %v, want ErrStoreSlow alone (kept, not durable)", what, err)
			}
		}
		atOnce := map[string]func() (JobView, error){
			"heartbeat":             func() (JobView, error) { return m.ReportProgress("j", Progress{Records: 1}) },
			"complete repeated":     func() (JobView, error) { return m.Complete("done") },
			"cancel repeated":       func() (JobView, error) { return m.Cancel("gone", false, "") },
			"total written already": func() (JobView, error) { return m.SetTotal("done", Total{Unit: UnitRecords, N: 5}) },
		}
		for what, call := range atOnce {
			start := time.Now()
			if _, err := call(); err != nil || time.Since(start) != 0 {
				t.Errorf("%s: %v after %v, want taken at once: it needs no write", what, err, time.Since(start))
			}
		}
		// A report that changes a job's state (its first progress) but
		// carries no checkpoint promises nothing durable: it waits as a
		// write does, and is taken.
		start := time.Now()
		if _, err := m.ReportProgress("pending", Progress{Records: 5}); err != nil || time.Since(start) != writeWait {
			t.Errorf("progress that starts a job: %v after %v, want taken after %v", err, time.Since(start), writeWait)
		}
		if v := mustGet(t, m, "pending"); v.State != Running {
			t.Errorf("pending is %s after its progress, want running", v.State)
		}
		if v := mustGet(t, m, "j"); v.State != Running || v.Progress == nil || v.Checkpoint != nil {
			t.Errorf("j %s, total %v, durable checkpoint %v while the store hangs; want running, the total kept, none durable",
				v.State, v.Progress, v.Checkpoint)
		}
		if v := mustGet(t, m, "done"); v.State != Completed {
			t.Errorf("done is %s after a delete not done, want completed", v.State)
		}

		st.hang.Store(false)
		openOnce()
		synctest.Wait()
		m.Tick(time.Now())
		for id, want := range map[string]State{"j": Running, "k": Pending, "t": Pending, "done": Completed, "pending": Running, "gone": Cancelled} {
			if got := storedState(t, st, id); got != want {
				t.Errorf("%s stored %s once the store answers, want %s", id, got, want)
			}
		}
		if v := mustGet(t, m, "j"); v.Checkpoint == nil {
			t.Error("the checkpoint kept in memory was not made durable once the store answered")
		}
		if got := storedRecord(t, st, "t").Total; got == nil || *got != (Total{Unit: UnitItems, N: 3}) {
			t.Errorf("t stored with total %v once the store answers, want its 3 items", got)
		}
	})
}

// A request that takes the store's lock just as the store stops answering
// answers within requestWait too, saying it is decided when the store
// answers: and once the store records it, it is done.
func TestCancelWhoseWriteHangsIsDoneOnceTheStoreAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &gateStore{open: make(chan struct{})}
		m := newTestManager(t, Config{Store: st})
		openOnce := sync.OnceFunc(func() { close(st.open) })
		defer func() { openOnce(); m.Close() }()
		actx, release, err := m.Admit(context.Background(), "j")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		start := time.Now()
		_, err = m.Cancel("j", false, "operator") // its cancelling record's Put waits for the gate
		if took := time.Since(start); took != requestWait {
			t.Errorf("cancel answered after %v with its write hanging, want %v", took, requestWait)
		}
		if !errors.Is(err, ErrStoreSlow) || errors.Is(err, ErrNotDurable) {
			t.Errorf("cancel: %v, want ErrStoreSlow alone (decided once the store answers)", err)
		}
		if context.Cause(actx) != nil {
			t.Error("the in-flight write was aborted before the cancel was recorded")
		}
		openOnce()
		synctest.Wait()
		if context.Cause(actx) == nil {
			t.Error("the cancel recorded once the store answered did not abort the in-flight write")
		}
		if got := storedState(t, st, "j"); got != Cancelling {
			t.Errorf("j stored %s once the store answered, want cancelling", got)
		}
	})
}

// A cancel answered ErrStoreSlow while its record was being written, whose
// write then fails, is not done: its answer must not have promised it, and
// since nobody waits for it any more, its outcome is logged, or an
// operator told to expect the cancel would never learn that it was
// dropped.
func TestCancelWhoseWriteFailsAfterItsAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &gateStore{open: make(chan struct{}), fail: errors.New("write sluice.db: input/output error")}
		var logs logbuf.Buffer
		m := newTestManager(t, Config{Store: st, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		openOnce := sync.OnceFunc(func() { close(st.open) })
		defer func() { openOnce(); m.Close() }()
		write(t, m, "j", ack)
		_, err := m.Cancel("j", false, "operator")
		if !errors.Is(err, ErrStoreSlow) || errors.Is(err, ErrNotDurable) {
			t.Fatalf("cancel: %v, want ErrStoreSlow alone", err)
		}
		if msg := err.Error(); strings.Contains(msg, "applied if and when") || !strings.Contains(msg, "get the job") {
			t.Errorf("cancel whose write may yet fail: %q; want it to say the outcome is not known yet, and how to learn it", msg)
		}
		openOnce()
		synctest.Wait()
		if v := mustGet(t, m, "j"); v.State != Running {
			t.Errorf("j %s after its cancel's write failed, want running", v.State)
		}
		out := logs.String()
		if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "job=j") || !strings.Contains(out, "request=cancel") ||
			!strings.Contains(out, "input/output error") {
			t.Errorf("the cancel's late failure was not logged as a warning naming the job, the request and the error:\n%s", out)
		}
	})
}

// A cancel that comes while a reopen of the cancelled job is being
// written is not the cancelled job's no-op: it waits behind the reopen
// and cancels the job the reopen brings back, as it would have had it
// come a moment later.
func TestCancelWaitsForAReopenBeingWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &gateStore{open: make(chan struct{}), hold: func(Record) bool { return false }}
		m := newTestManager(t, Config{Store: st})
		defer m.Close()
		if _, err := m.Register("j", Settings{}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Cancel("j", false, ""); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // no cancel or cleanup configured: cancelled
		if v := mustGet(t, m, "j"); v.State != Cancelled {
			t.Fatalf("j is %s, want cancelled", v.State)
		}
		// The reopen's record (j out of its terminal state) hangs.
		st.hold = func(r Record) bool { return r.ID == "j" && !r.State.Terminal() }
		reopened := make(chan error, 1)
		go func() { _, err := m.Reopen("j", ""); reopened <- err }()
		synctest.Wait()
		go func() { time.Sleep(time.Second); close(st.open) }()
		if _, err := m.Cancel("j", false, ""); err != nil {
			t.Fatalf("cancel behind the reopen: %v", err)
		}
		if err := <-reopened; err != nil {
			t.Fatalf("reopen: %v", err)
		}
		synctest.Wait()
		if v := mustGet(t, m, "j"); v.State != Cancelled {
			t.Errorf("j is %s after a reopen and then a cancel, want cancelled", v.State)
		}
	})
}
