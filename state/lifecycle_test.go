package state

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// storeCalls is a storeAPI whose answers to calls containing fail are 500
// for the first n of them.
func failingFirst(fail string, n int) *storeAPI {
	var mu sync.Mutex
	return &storeAPI{status: func(call string) int {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(call, fail) && n > 0 {
			n--
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}}
}

// write is one write for job id through the manager, with the store's
// answer o.
func write(t *testing.T, m *Manager, id string, o Observation) {
	t.Helper()
	_, release, err := m.Admit(context.Background(), id)
	if err != nil {
		t.Fatalf("write for %s: %v", id, err)
	}
	m.Observe(id, o)
	release()
}

var ack = Observation{Kind: ObsOK, Bytes: 100, Items: -1}

// TestManagerFinishedBackfillNeverCleaned: a backfill whose loader exits
// without calling complete, with a cleanup that would delete its data and
// every cause allowed to cancel, is idle for days, across a restart, and
// neither its cancel nor its cleanup ever runs.
func TestManagerFinishedBackfillNeverCleaned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &storeAPI{}
		st := &MemStore{}
		cfg := Config{Store: st, HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions()}
		cfg.Defaults.AutoCancelCauses = StallCauses()
		m := newTestManager(t, cfg)
		stop := running(t, m)
		for range 60 {
			write(t, m, "backfill", ack)
			time.Sleep(10 * time.Second)
		}
		time.Sleep(48 * time.Hour)
		if v := mustGet(t, m, "backfill"); v.State != Idle || v.Stalls != 0 {
			t.Fatalf("two days after its last write: %s, %d stalls", v.State, v.Stalls)
		}
		stop()

		m = newTestManager(t, cfg)
		stop = running(t, m)
		defer stop()
		time.Sleep(48 * time.Hour)
		synctest.Wait()
		v := mustGet(t, m, "backfill")
		if v.State != Idle || slices.ContainsFunc(historyTo(v), func(s State) bool { return s == Stalled || s == Cancelling }) {
			t.Fatalf("after a restart and two more days: %s, history %v", v.State, historyTo(v))
		}
		if calls := api.Calls(); len(calls) != 0 {
			t.Fatalf("the store got %q for a load that finished", calls)
		}
	})
}

// TestManagerDefaultJobStream: the default job, allowed to be cancelled for
// throttling, stalls, is cancelled and cleaned up, and reopens by itself.
// The write in flight at the cancel is told to come back (not a 409), a
// write during the cleanup waits and, past its wait, is told the same; once
// reopened the stream takes writes again. It never completes.
func TestManagerDefaultJobStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := failingFirst("/clear", 1) // the cleanup fails once, and is retried
		m := newTestManager(t, Config{HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions(),
			DefaultJob: "default", DefaultJobAutoCancelCauses: []StallCause{CauseStoreThrottling}})
		defer m.Close()
		start := time.Now()
		write(t, m, "default", ack)
		write(t, m, "default", Observation{Kind: ObsThrottled})
		if _, err := m.Complete("default"); !errors.As(err, new(*TransitionError)) {
			t.Fatalf("complete the default job: %v, want a TransitionError", err)
		}
		inflight, release, err := m.Admit(context.Background(), "default")
		if err != nil {
			t.Fatal(err)
		}
		m.Observe("default", Observation{Kind: ObsThrottled})
		m.Tick(start.Add(DefaultStallAfter))
		if v := mustGet(t, m, "default"); v.State != Stalled || v.StallCause != CauseStoreThrottling {
			t.Fatalf("%s (%s), want stalled by throttling", v.State, v.StallCause)
		}
		m.Tick(start.Add(DefaultStallAfter + DefaultCancelGrace))
		<-inflight.Done()
		if cause := context.Cause(inflight); !errors.Is(cause, context.Canceled) || errors.As(cause, new(*NotAcceptingError)) {
			t.Fatalf("in-flight write aborted with %v, want a retryable cause", cause)
		}
		release()
		synctest.Wait() // the cancel ran, the first cleanup failed
		if v := mustGet(t, m, "default"); v.State != Cleaning {
			t.Fatalf("%s during the cleanup's retry, want cleaning", v.State)
		}
		_, _, err = m.AdmitWithin(context.Background(), "default", 100*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, new(*NotAcceptingError)) {
			t.Fatalf("a write during the cleanup: %v, want held past its wait", err)
		}
		held := make(chan error, 1)
		go func() {
			_, release, err := m.Admit(context.Background(), "default")
			if err == nil {
				release()
			}
			held <- err
		}()
		time.Sleep(time.Minute) // the cleanup's retry succeeds
		if err := <-held; err != nil {
			t.Fatalf("a write held through the cleanup: %v, want admitted once reopened", err)
		}
		write(t, m, "default", ack)
		v := mustGet(t, m, "default")
		want := []State{Running, Throttled, Stalled, Cancelling, Cleaning, Cancelled, Running}
		if got := historyTo(v); v.State != Running || !slices.Equal(got, want) || v.Reason != "stream_reopened" {
			t.Fatalf("%s (%s), history %v, want running again via %v", v.State, v.Reason, got, want)
		}
		wantCalls := []string{
			"POST http://pegasus/v1/bulk_load/default/cancel?force=true",
			"POST http://pegasus/v1/bulk_load/default/clear",
			"POST http://pegasus/v1/bulk_load/default/clear",
		}
		if got := api.Calls(); !slices.Equal(got, wantCalls) {
			t.Fatalf("store calls %q, want %q", got, wantCalls)
		}
		if !v.Settings.Stream || !slices.Equal(v.Settings.AutoCancelCauses, []StallCause{CauseStoreThrottling}) {
			t.Errorf("settings %+v", v.Settings)
		}
	})
}

// TestManagerDefaultJobAlertsOnly: by default a stall of the default job
// cancels nothing, for any cause, and it has no deadline, while another
// job stalled by throttling is cancelled and one past its deadline too.
func TestManagerDefaultJobAlertsOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &storeAPI{}
		cfg := Config{HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions(), DefaultJob: "default"}
		cfg.Defaults.Deadline = time.Hour
		m := newTestManager(t, cfg)
		stop := running(t, m)
		defer stop()
		for _, id := range []string{"default", "batch"} {
			write(t, m, id, Observation{Kind: ObsThrottled})
		}
		for range 2 * 60 { // until its deadline, then refused
			if _, release, err := m.Admit(context.Background(), "long"); err == nil {
				m.Observe("long", ack)
				release()
			}
			time.Sleep(time.Minute)
		}
		synctest.Wait()
		for id, want := range map[string]State{"default": Stalled, "batch": Cancelled, "long": Cancelled} {
			if v := mustGet(t, m, id); v.State != want {
				t.Errorf("%s: %s (%s), want %s", id, v.State, v.Reason, want)
			}
		}
		if v := mustGet(t, m, "long"); v.History[len(v.History)-3].Reason != "deadline_exceeded" {
			t.Errorf("long: history %+v, want a deadline cancel", v.History)
		}
		for _, c := range api.Calls() {
			if strings.Contains(c, "/default/") {
				t.Errorf("the default job got %s", c)
			}
		}
	})
}

// TestManagerReopenAndDelete: reopen brings a cancelled or failed job back
// with a fresh write context; delete forgets a finished job's record, and
// a later write starts a new job; both refuse live jobs, unknown ids, and
// (reopen) a completed job.
func TestManagerReopenAndDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := failingFirst("/cancel", 100) // the cancel action always fails
		st := &MemStore{}
		m := newTestManager(t, Config{Store: st, HTTPClient: &http.Client{Transport: api}, ActionRetries: -1})
		defer m.Close()
		for _, id := range []string{"cancelled", "failed", "completed", "live"} {
			write(t, m, id, ack)
		}
		if _, err := m.Register("failed", pegasusActions()); err != nil {
			t.Fatal(err)
		}
		inflight, release, err := m.Admit(context.Background(), "cancelled")
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"cancelled", "failed"} {
			if _, err := m.Cancel(id, false, "operator"); err != nil {
				t.Fatal(err)
			}
		}
		release()
		if _, err := m.Complete("completed"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		for id, want := range map[string]State{"cancelled": Cancelled, "failed": Failed, "completed": Completed} {
			if v := mustGet(t, m, id); v.State != want {
				t.Fatalf("%s is %s, want %s", id, v.State, want)
			}
		}
		if context.Cause(inflight) == nil {
			t.Fatal("the cancel did not abort the write in flight")
		}

		for _, id := range []string{"cancelled", "failed"} {
			v, err := m.Reopen(id, "")
			if err != nil || v.State != Running || v.Reason != "reopened" {
				t.Fatalf("reopen %s: %s (%s), %v", id, v.State, v.Reason, err)
			}
			if s := storedState(t, st, id); s != Running {
				t.Fatalf("reopened %s is stored %s", id, s)
			}
			ctx, release, err := m.Admit(context.Background(), id)
			if err != nil || ctx.Err() != nil {
				t.Fatalf("write to reopened %s: %v, %v", id, err, ctx.Err())
			}
			release()
		}
		refused := func(name string, err error, want any) {
			t.Helper()
			ok := false
			switch w := want.(type) {
			case error:
				ok = errors.Is(err, w)
			case **TransitionError:
				ok = errors.As(err, w)
			}
			if !ok {
				t.Errorf("%s: %v, want %T %v", name, err, want, want)
			}
		}
		_, err = m.Reopen("completed", "")
		refused("reopen completed", err, new(*TransitionError))
		_, err = m.Reopen("live", "")
		refused("reopen running", err, new(*TransitionError))
		_, err = m.Reopen("nope", "")
		refused("reopen unknown", err, ErrNotFound)
		_, err = m.Delete("live")
		refused("delete running", err, new(*TransitionError))
		_, err = m.Delete("nope")
		refused("delete unknown", err, ErrNotFound)
		_, err = m.Reopen("cancelled", strings.Repeat("r", 300))
		refused("reopen, long reason", err, ErrInvalid)

		v, err := m.Delete("completed")
		if err != nil || v.State != Completed {
			t.Fatalf("delete completed: %s, %v", v.State, err)
		}
		if _, err := m.Get("completed"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted job still there: %v", err)
		}
		recs, _ := st.Load()
		if slices.ContainsFunc(recs, func(r Record) bool { return r.ID == "completed" }) {
			t.Fatal("deleted job's record still stored")
		}
		write(t, m, "completed", ack)
		if v := mustGet(t, m, "completed"); v.State != Running || len(v.History) != 1 || v.Totals.Requests != 1 {
			t.Fatalf("a write after the delete: %s, history %v, %d requests; want a new job", v.State, historyTo(v), v.Totals.Requests)
		}
	})
}

// TestReopenDeleteNotDurable: a reopen or delete that the store cannot
// record is refused with ErrNotDurable and changes nothing; retried once
// the store is back, it is done.
func TestReopenDeleteNotDurable(t *testing.T) {
	st := &flakyStore{}
	now := t0
	m := newTestManager(t, Config{Store: st, Now: func() time.Time { return now }})
	defer m.Close()
	for _, id := range []string{"a", "b"} {
		write(t, m, id, ack)
		if _, err := m.Cancel(id, false, ""); err != nil {
			t.Fatal(err)
		}
	}
	waitState := func(id string, want State) {
		t.Helper()
		for range 1000 {
			if mustGet(t, m, id).State == want {
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Fatalf("%s is %s, want %s", id, mustGet(t, m, id).State, want)
	}
	waitState("a", Cancelled)
	waitState("b", Cancelled)
	m.Tick(now)
	st.setBroken(true)
	if v, err := m.Reopen("a", ""); !errors.Is(err, ErrNotDurable) || v.State != Cancelled {
		t.Fatalf("reopen with the store broken: %s, %v; want cancelled, ErrNotDurable", v.State, err)
	}
	if _, _, err := m.Admit(context.Background(), "a"); !errors.As(err, new(*NotAcceptingError)) {
		t.Fatalf("a write after a reopen not recorded: %v, want refused", err)
	}
	if _, err := m.Delete("b"); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("delete with the store broken: %v, want ErrNotDurable", err)
	}
	if v := mustGet(t, m, "b"); v.State != Cancelled {
		t.Fatalf("b after a delete not recorded: %s", v.State)
	}
	st.setBroken(false)
	if v, err := m.Reopen("a", ""); err != nil || v.State != Running || storedState(t, st, "a") != Running {
		t.Fatalf("reopen retried: %s, %v", v.State, err)
	}
	if _, err := m.Delete("b"); err != nil {
		t.Fatalf("delete retried: %v", err)
	}
	if recs, _ := st.Load(); len(recs) != 1 {
		t.Fatalf("stored %+v, want a only", recs)
	}
}

// TestMaxJobsForgetsIdle: at MaxJobs a new job takes the place of the job
// idle the longest, never of the default job or a busy one, and is refused
// when no job is idle; a reopen counts like a new job.
func TestMaxJobsForgetsIdle(t *testing.T) {
	now := t0
	st := &MemStore{}
	m := newTestManager(t, Config{Store: st, MaxJobs: 3, DefaultJob: "default", Now: func() time.Time { return now }})
	defer m.Close()
	for _, id := range []string{"default", "old", "older"} {
		write(t, m, id, ack)
	}
	now = now.Add(DefaultStallAfter)
	m.Tick(now)
	write(t, m, "old", ack) // older has been idle the longest
	now = now.Add(DefaultStallAfter)
	m.Tick(now)
	for id, want := range map[string]State{"default": Idle, "old": Idle, "older": Idle} {
		if s := mustGet(t, m, id).State; s != want {
			t.Fatalf("%s is %s, want %s", id, s, want)
		}
	}
	write(t, m, "new", ack)
	if _, err := m.Get("older"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("older: %v, want forgotten", err)
	}
	write(t, m, "newer", ack)
	if _, err := m.Get("old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old: %v, want forgotten", err)
	}
	if _, _, err := m.Admit(context.Background(), "newest"); !errors.Is(err, ErrTooManyJobs) {
		t.Fatalf("a fourth job with only the default job idle: %v, want ErrTooManyJobs", err)
	}
	if _, err := m.Cancel("new", false, ""); err != nil {
		t.Fatal(err)
	}
	for i := 0; mustGet(t, m, "new").State != Cancelled; i++ {
		if i == 5000 {
			t.Fatalf("new: %s 5s after its cancel, want cancelled (no action configured)", mustGet(t, m, "new").State)
		}
		time.Sleep(time.Millisecond)
	}
	write(t, m, "newest", ack)
	if _, err := m.Reopen("new", ""); !errors.Is(err, ErrTooManyJobs) {
		t.Fatalf("reopen at MaxJobs, none idle: %v", err)
	}
	m.Tick(now)
	recs, _ := st.Load()
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"default", "new", "newer", "newest"}) {
		t.Fatalf("stored %v, want the forgotten jobs' records gone", ids)
	}
	// A forgotten job written to again is a new job (in the place of
	// another idle one), and its record stays.
	now = now.Add(DefaultStallAfter)
	m.Tick(now)
	write(t, m, "older", ack)
	m.Tick(now)
	if v := mustGet(t, m, "older"); v.State != Running || storedState(t, st, "older") != Running {
		t.Fatalf("older written again: %s", v.State)
	}
}

// TestManagerHeartbeat: a job registered with a heartbeat interval whose
// loader reports the same numbers (a heartbeat) is idle, not stalled; when
// the reports stop it is stalled (loader_idle), and cancelled because its
// registration allows that cause.
func TestManagerHeartbeat(t *testing.T) {
	now := t0
	m := newTestManager(t, Config{Now: func() time.Time { return now }})
	defer m.Close()
	if _, err := m.Register("hb", Settings{HeartbeatInterval: time.Minute, AutoCancelCauses: []StallCause{CauseLoaderIdle}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register("plain", Settings{}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		now = now.Add(30 * time.Second)
		for _, id := range []string{"hb", "plain"} {
			if _, err := m.ReportProgress(id, Progress{Records: 7}); err != nil {
				t.Fatal(err)
			}
		}
		m.Tick(now)
	}
	if v := mustGet(t, m, "hb"); v.State != Idle {
		t.Fatalf("heartbeating: %s (%s), want idle", v.State, v.StallCause)
	}
	for range 4 {
		now = now.Add(30 * time.Second)
		m.Tick(now)
	}
	if v := mustGet(t, m, "hb"); v.State != Stalled || v.StallCause != CauseLoaderIdle {
		t.Fatalf("silent: %s (%s), want stalled (loader_idle)", v.State, v.StallCause)
	}
	now = now.Add(DefaultStallAfter + DefaultCancelGrace)
	m.Tick(now)
	if v := mustGet(t, m, "hb"); v.State.Accepting() {
		t.Fatalf("hung loader: %s, want cancelled", v.State)
	}
	if v := mustGet(t, m, "plain"); v.State != Idle {
		t.Fatalf("plain: %s, want idle", v.State)
	}
}

// TestForgottenJobStaysForgottenAfterShutdown: an idle job forgotten to
// make room is gone for good, even when sluice stops before the tick that
// deletes its record. Close left the record, and the next start brought
// the job back, one over MaxJobs.
func TestForgottenJobStaysForgottenAfterShutdown(t *testing.T) {
	now := t0
	st := &MemStore{}
	cfg := Config{Store: st, MaxJobs: 1, Now: func() time.Time { return now }}
	m := newTestManager(t, cfg)
	write(t, m, "old", ack)
	now = now.Add(DefaultStallAfter)
	m.Tick(now)
	write(t, m, "new", ack) // old, idle, makes room
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m = newTestManager(t, cfg)
	defer m.Close()
	if v, err := m.Get("old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old after the restart: %s, %v; want forgotten", v.State, err)
	}
}
