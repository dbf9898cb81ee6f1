package state

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// gateStore holds every Put of a record that hold matches (nil: a record
// in state cancelling) until open is closed, then fails it with fail if
// set; and, while hang is set, every Put at all: a state volume that
// stopped answering.
type gateStore struct {
	MemStore
	open chan struct{}
	hang atomic.Bool
	hold func(Record) bool
	fail error
}

func (s *gateStore) Put(recs ...Record) error {
	if s.hang.Load() {
		<-s.open
	}
	for _, r := range recs {
		if s.hold == nil && r.State == Cancelling || s.hold != nil && s.hold(r) {
			<-s.open
			if s.fail != nil {
				return s.fail
			}
		}
	}
	return s.MemStore.Put(recs...)
}

// storedRecord returns job id's record in st.
func storedRecord(t *testing.T, st Store, id string) Record {
	t.Helper()
	recs, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no record of %q", id)
	return Record{}
}

// storedState returns the state of job id's record in st.
func storedState(t *testing.T, st Store, id string) State {
	t.Helper()
	return storedRecord(t, st, id).State
}

// TestCancelTakesEffectOnceCommitted: while the cancelling record is being
// written, the job's writes go on as before (in flight, new, observed);
// once it is committed they are aborted and new ones refused.
func TestCancelTakesEffectOnceCommitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &gateStore{open: make(chan struct{})}
		m := newTestManager(t, Config{Store: st})
		defer m.Close()
		openGate := sync.OnceFunc(func() { close(st.open) })
		defer openGate() // before Close, also when the test fails early
		actx, release, err := m.Admit(context.Background(), "j")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		cancelled := make(chan error, 1)
		go func() {
			_, err := m.Cancel("j", false, "operator")
			cancelled <- err
		}()
		synctest.Wait() // the cancelling record's Put is blocked

		if err := context.Cause(actx); err != nil {
			t.Fatalf("in-flight write aborted before the cancel was committed: %v", err)
		}
		bctx, releaseB, err := m.Admit(context.Background(), "j")
		if err != nil {
			t.Fatalf("write refused before the cancel was committed: %v", err)
		}
		defer releaseB()
		m.Observe("j", Observation{Kind: ObsOK, Bytes: 10}) // the job moves meanwhile
		if v := mustGet(t, m, "j"); v.State != Running || v.Totals.Bytes != 10 {
			t.Fatalf("while the cancel is being recorded: %s, %d bytes; want running, 10", v.State, v.Totals.Bytes)
		}

		openGate()
		synctest.Wait()
		if err := <-cancelled; err != nil {
			t.Fatalf("cancel: %v", err)
		}
		var nae *NotAcceptingError
		for i, ctx := range []context.Context{actx, bctx} {
			if !errors.As(context.Cause(ctx), &nae) || nae.State != Cancelling {
				t.Errorf("write %d after the commit: cause %v, want cancelling", i, context.Cause(ctx))
			}
		}
		if _, _, err := m.Admit(context.Background(), "j"); !errors.As(err, &nae) {
			t.Errorf("write after the commit: %v, want refused", err)
		}
		v := mustGet(t, m, "j")
		if got := historyTo(v); !slices.Equal(got, []State{Running, Cancelling}) || v.Reason != "operator" || v.Totals.Bytes != 10 {
			t.Errorf("history %v (%s), %d bytes; want the cancel as requested and the progress kept", got, v.Reason, v.Totals.Bytes)
		}
		m.Tick(time.Now())
		recs, _ := st.Load()
		if len(recs) != 1 || recs[0].State != Cancelling || recs[0].Totals.Bytes != 10 {
			t.Errorf("stored %+v, want cancelling with the progress", recs)
		}
	})
}

// TestCancelNotRecorded: a cancel whose record cannot be written does not
// happen: Cancel says so (ErrNotDurable), the job goes on and nothing is
// aborted or run. The same cancel succeeds once the store is back.
func TestCancelNotRecorded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &flakyStore{}
		api := &storeAPI{}
		m := newTestManager(t, Config{Store: st, HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions()})
		defer m.Close()
		actx, release, err := m.Admit(context.Background(), "j")
		if err != nil {
			t.Fatal(err)
		}
		st.setBroken(true)

		v, err := m.Cancel("j", false, "operator")
		if !errors.Is(err, ErrNotDurable) {
			t.Fatalf("cancel with a broken store: %v, want ErrNotDurable", err)
		}
		synctest.Wait()
		if v.State != Running || mustGet(t, m, "j").State != Running {
			t.Errorf("after a cancel not recorded the job is %s, want running", v.State)
		}
		if err := context.Cause(actx); err != nil {
			t.Errorf("in-flight write aborted by a cancel not recorded: %v", err)
		}
		if calls := api.Calls(); len(calls) != 0 {
			t.Errorf("actions of a cancel not recorded ran: %q", calls)
		}
		_, releaseB, err := m.Admit(context.Background(), "j")
		if err != nil {
			t.Errorf("write after a cancel not recorded: %v", err)
		} else {
			releaseB()
		}
		if s := storedState(t, st, "j"); s != Running {
			t.Errorf("stored %s, want running", s)
		}

		st.setBroken(false)
		if _, err := m.Cancel("j", false, "operator"); err != nil {
			t.Fatalf("cancel retried: %v", err)
		}
		if s := storedState(t, st, "j"); s != Cancelling {
			t.Errorf("stored %s, want cancelling", s)
		}
		<-actx.Done()
		// Forcing the cancel under way (it waits for the write in flight)
		// is a request like another: not recorded, not done.
		st.setBroken(true)
		if v, err := m.Cancel("j", true, ""); !errors.Is(err, ErrNotDurable) || v.Force {
			t.Errorf("forced with a broken store: %v, force %v; want ErrNotDurable and not forced", err, v.Force)
		}
		st.setBroken(false)
		release()
		synctest.Wait()
		if v := mustGet(t, m, "j"); v.State != Cancelled || len(api.Calls()) != 2 {
			t.Errorf("after the retried cancel: %s, calls %q", v.State, api.Calls())
		}
	})
}

// TestStallCancelRetriedUntilRecorded: the stall detector's cancel waits
// for the store like a requested one: while the store fails, the job
// stalled by throttling stays stalled and each tick tries again; the first
// tick after the store is back cancels it.
func TestStallCancelRetriedUntilRecorded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &flakyStore{}
		api := &storeAPI{}
		start := time.Now()
		m := newTestManager(t, Config{Store: st, HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions()})
		defer m.Close()
		if _, err := m.Register("j", Settings{}); err != nil {
			t.Fatal(err)
		}
		m.Observe("j", Observation{Kind: ObsThrottled})
		st.setBroken(true)
		at := func(d time.Duration) State {
			t.Helper()
			m.Tick(start.Add(d))
			synctest.Wait()
			return mustGet(t, m, "j").State
		}
		if s := at(DefaultStallAfter); s != Stalled {
			t.Fatalf("after StallAfter: %s", s)
		}
		for _, d := range []time.Duration{0, time.Second, time.Hour} {
			if s := at(DefaultStallAfter + DefaultCancelGrace + d); s != Stalled {
				t.Fatalf("grace over by %s with the store failing: %s, want stalled", d, s)
			}
		}
		if calls := api.Calls(); len(calls) != 0 {
			t.Fatalf("actions ran with the cancel not recorded: %q", calls)
		}

		st.setBroken(false)
		if s := at(DefaultStallAfter + DefaultCancelGrace + time.Hour + time.Second); s != Cancelled {
			t.Fatalf("first tick with the store back: %s, want cancelled", s)
		}
		v := mustGet(t, m, "j")
		if i := slices.Index(historyTo(v), Cancelling); i < 0 || v.History[i].Reason != "stalled" || len(api.Calls()) != 2 {
			t.Errorf("history %+v, calls %q", v.History, api.Calls())
		}
		if s := storedState(t, st, "j"); s != Cancelled {
			t.Errorf("stored %s, want cancelled", s)
		}
	})
}

// TestCancelWaitsForInflight: the cancel action starts only once every
// in-flight write of the job has ended, since one already sent cannot be
// recalled and could land after the cancel. Another job's write does not
// hold it.
func TestCancelWaitsForInflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &storeAPI{}
		m := newTestManager(t, Config{HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions()})
		defer m.Close()
		var releases []func()
		for _, id := range []string{"j", "j", "other"} {
			_, release, err := m.Admit(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
		if _, err := m.Cancel("j", true, ""); err != nil {
			t.Fatal(err)
		}
		step := func(name string, release func(), wantCalls int, want State) {
			t.Helper()
			if release != nil {
				release()
			}
			synctest.Wait()
			if v := mustGet(t, m, "j"); len(api.Calls()) != wantCalls || v.State != want {
				t.Fatalf("%s: %s after calls %q, want %s after %d", name, v.State, api.Calls(), want, wantCalls)
			}
		}
		step("cancelled, two writes in flight", nil, 0, Cancelling)
		step("one write ended", releases[0], 0, Cancelling)
		step("the other job's write ended", releases[2], 0, Cancelling)
		step("the last write ended", releases[1], 2, Cancelled)
	})
}

// TestTickCancelWhileAWriteEnds: a tick cancels a job at its deadline
// because a write is in flight, and that write is released while the
// cancelling record is being written (its loader gave up: nothing is
// observed, the record does not change). The cancel stands, as recorded;
// the tick used to step the job again on the commit, find no write in
// flight, and panic because the machine no longer gave the state
// committed.
func TestTickCancelWhileAWriteEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &gateStore{open: make(chan struct{})}
		m := newTestManager(t, Config{Store: st})
		defer m.Close()
		openGate := sync.OnceFunc(func() { close(st.open) })
		defer openGate()
		if _, err := m.Register("j", Settings{Deadline: time.Minute}); err != nil {
			t.Fatal(err)
		}
		_, release, err := m.Admit(context.Background(), "j")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute) // past the deadline, the write still out
		ticked := make(chan struct{})
		go func() {
			defer close(ticked)
			m.Tick(time.Now())
		}()
		synctest.Wait() // the cancelling record's Put is blocked
		release()
		openGate()
		<-ticked
		synctest.Wait() // the cancel action, none configured, ends it
		v := mustGet(t, m, "j")
		cancelled := slices.ContainsFunc(v.History, func(tr Transition) bool {
			return tr.To == Cancelling && tr.Reason == "deadline_exceeded"
		})
		if v.State != Cancelled || !cancelled {
			t.Errorf("job %s (%s), history %v; want cancelled at its deadline, as recorded", v.State, v.Reason, historyTo(v))
		}
	})
}

// TestIdleJobBeingCancelledIsNotForgotten: an operator cancels an idle
// job (so that its cleanup runs) at MaxJobs, and while the cancelling
// record is being written a new job's first write looks for an idle job
// to forget. The job being cancelled is not one: its cancel is recorded
// and must run to its cleanup. It used to be forgotten, so the cancel
// action ran, its cleanup never did, and the record saying cancelling was
// deleted at the next tick.
func TestIdleJobBeingCancelledIsNotForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &gateStore{open: make(chan struct{})}
		m := newTestManager(t, Config{Store: st, MaxJobs: 1})
		defer m.Close()
		openGate := sync.OnceFunc(func() { close(st.open) })
		defer openGate()
		write(t, m, "old", ack)
		time.Sleep(DefaultStallAfter)
		m.Tick(time.Now())
		if v := mustGet(t, m, "old"); v.State != Idle {
			t.Fatalf("old: %s, want idle", v.State)
		}
		cancelled := make(chan error, 1)
		go func() {
			_, err := m.Cancel("old", false, "operator")
			cancelled <- err
		}()
		synctest.Wait() // the cancelling record's Put is blocked
		admitted := make(chan error, 1)
		go func() {
			_, release, err := m.Admit(context.Background(), "new")
			if err == nil {
				release()
			}
			admitted <- err
		}()
		// Refused at once, or (the bug) admitted in old's place and
		// waiting for the store to write its record.
		var aerr error
		for done := false; !done; {
			select {
			case aerr = <-admitted:
				done = true
			default:
				if _, err := m.Get("old"); errors.Is(err, ErrNotFound) {
					t.Errorf("old forgotten to make room while its cancel was being recorded")
					done = true
				}
				runtime.Gosched()
			}
		}
		openGate()
		if aerr == nil {
			aerr = <-admitted
		}
		if !errors.Is(aerr, ErrTooManyJobs) {
			t.Errorf("a new job while the only idle one is being cancelled: %v, want ErrTooManyJobs", aerr)
		}
		if err := <-cancelled; err != nil {
			t.Fatalf("cancel: %v", err)
		}
		synctest.Wait() // cancel and cleanup, none configured, end it
		m.Tick(time.Now())
		v, err := m.Get("old")
		if err != nil || v.State != Cancelled {
			t.Fatalf("old after its cancel: %v %s (history %v); want cancelled", err, v.State, historyTo(v))
		}
		if s := storedState(t, st, "old"); s != Cancelled {
			t.Errorf("old stored %s, want cancelled", s)
		}
	})
}

// TestCancelRecordMakesItsCheckpointDurable: a checkpoint whose commit
// failed is in the cancelling record once that is committed, so the view
// shows it as durable from then on. It used to show the checkpoint before
// it until the job's next record was written (after the cancel action,
// which may retry for long), while the store held the newer one.
func TestCancelRecordMakesItsCheckpointDurable(t *testing.T) {
	st := &flakyStore{}
	m := newTestManager(t, Config{Store: st})
	defer m.Close()
	write(t, m, "j", ack)
	if _, err := m.ReportProgress("j", Progress{Records: 1, Checkpoint: json.RawMessage(`"c1"`)}); err != nil {
		t.Fatal(err)
	}
	st.setBroken(true)
	if _, err := m.ReportProgress("j", Progress{Records: 2, Checkpoint: json.RawMessage(`"c2"`)}); err == nil {
		t.Fatal("checkpoint c2 committed on a broken store")
	}
	st.setBroken(false)
	v, err := m.Cancel("j", false, "operator")
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Load()
	if len(recs) != 1 || len(recs[0].Checkpoints) != 2 {
		t.Fatalf("stored %+v, want the cancelling record with both checkpoints", recs)
	}
	if v.Checkpoint == nil || string(v.Checkpoint.Data) != `"c2"` {
		t.Errorf("view after the cancel was recorded: checkpoint %+v, want c2, which the record holds", v.Checkpoint)
	}
}

// TestReopenCommitKeepsMaxJobs: a cancelled job is reopened at one live
// job under MaxJobs, and while its record is being written a new job's
// first write comes. One of them takes the last place; both may not. The
// reopen was checked against MaxJobs when tried and applied once
// committed, so the new job, created meanwhile, took the place as well
// and the manager held more live jobs than MaxJobs.
func TestReopenCommitKeepsMaxJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var armed atomic.Bool // the reopen's record: only "a" taking writes again, once armed
		st := &gateStore{open: make(chan struct{}), hold: func(r Record) bool {
			return armed.Load() && r.ID == "a" && r.State.Accepting()
		}}
		m := newTestManager(t, Config{Store: st, MaxJobs: 1})
		defer m.Close()
		openGate := sync.OnceFunc(func() { close(st.open) })
		defer openGate()
		write(t, m, "a", ack)
		if _, err := m.Cancel("a", false, ""); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if v := mustGet(t, m, "a"); v.State != Cancelled {
			t.Fatalf("a: %s, want cancelled", v.State)
		}
		armed.Store(true)
		reopened := make(chan error, 1)
		go func() {
			_, err := m.Reopen("a", "")
			reopened <- err
		}()
		synctest.Wait() // the reopening record's Put is blocked
		admitted := make(chan error, 1)
		go func() {
			_, release, err := m.Admit(context.Background(), "b")
			if err == nil {
				release()
			}
			admitted <- err
		}()
		// Refused at once, or created and waiting for the store to
		// write its record.
		for {
			if _, err := m.Get("b"); err == nil || len(admitted) > 0 {
				break
			}
			runtime.Gosched()
		}
		openGate()
		rerr, err := <-reopened, <-admitted
		live := 0
		for s, n := range m.Counts() {
			if !s.Terminal() {
				live += n
			}
		}
		if live > 1 {
			t.Errorf("%d live jobs (reopen: %v, new job: %v), MaxJobs 1", live, rerr, err)
		}
		if rerr != nil && err != nil {
			t.Errorf("neither the reopen (%v) nor the new job (%v) took the free place", rerr, err)
		}
	})
}

// TestForcedCancelOfAJobThatFailedMeanwhile: an operator forces a cancel
// under way, and its cancel action runs out of retries while the forced
// record is being written: the job is failed, not cleaned up. The forced
// request must say it was not applied, as it does when it comes after
// the failure; it used to answer success with the job failed and its
// cleanup never run.
func TestForcedCancelOfAJobThatFailedMeanwhile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &gateStore{open: make(chan struct{}), hold: func(r Record) bool { return r.State == Cancelling && r.Force }}
		api := &storeAPI{block: func(call string) bool { return strings.HasSuffix(call, "/cancel?force=true") }}
		// The action times out within the forced request's wait for its
		// record (requestWait), so that the request answers what came of it.
		m := newTestManager(t, Config{Store: st, Defaults: pegasusActions(), ActionRetries: -1,
			ActionTimeout: requestWait / 2, HTTPClient: &http.Client{Transport: api}})
		defer m.Close()
		openGate := sync.OnceFunc(func() { close(st.open) })
		defer openGate()
		write(t, m, "j", ack)
		if _, err := m.Cancel("j", false, ""); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the cancel action hangs until its timeout
		forced := make(chan error, 1)
		go func() {
			_, err := m.Cancel("j", true, "")
			forced <- err
		}()
		synctest.Wait() // the forced record's Put is blocked
		time.Sleep(requestWait / 2)
		for mustGet(t, m, "j").State != Failed { // the action's last attempt timed out
			runtime.Gosched()
		}
		openGate()
		err := <-forced
		synctest.Wait()
		v := mustGet(t, m, "j")
		var te *TransitionError
		if !errors.As(err, &te) || v.State != Failed {
			t.Errorf("forced cancel of a job that failed meanwhile: %v, job %s (history %v); want a transition error, failed", err, v.State, historyTo(v))
		}
		if s := storedState(t, st, "j"); s != Failed {
			t.Errorf("stored %s, want failed", s)
		}
	})
}
