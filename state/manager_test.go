package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// storeAPI is an in-memory stand-in for the store's admin API: it records
// every call and answers with status(call) (200 if nil); calls matching
// block wait until their request is cancelled.
type storeAPI struct {
	mu     sync.Mutex
	calls  []string
	status func(call string) int
	block  func(call string) bool
}

func (s *storeAPI) RoundTrip(req *http.Request) (*http.Response, error) {
	call := req.Method + " " + req.URL.String()
	s.mu.Lock()
	s.calls = append(s.calls, call)
	status, block := s.status, s.block
	s.mu.Unlock()
	if block != nil && block(call) {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	code := http.StatusOK
	if status != nil {
		code = status(call)
	}
	return &http.Response{StatusCode: code, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{"ok":true}`)), Request: req}, nil
}

func (s *storeAPI) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func pegasusActions() Settings {
	return Settings{
		Cancel:  &ActionSpec{Kind: KindHTTP, Method: "POST", URL: "http://pegasus/v1/bulk_load/${JOB}/cancel?force=true"},
		Cleanup: &ActionSpec{Kind: KindHTTP, Method: "POST", URL: "http://pegasus/v1/bulk_load/${JOB}/clear"},
	}
}

func newTestManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0.5 }
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// running starts m.Run and returns a func that stops it and closes m.
func running(t *testing.T, m *Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	return func() {
		cancel()
		<-done
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	}
}

func mustGet(t *testing.T, m *Manager, id string) JobView {
	t.Helper()
	v, err := m.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func historyTo(v JobView) []State {
	var to []State
	for _, h := range v.History {
		to = append(to, h.To)
	}
	return to
}

// TestThrottledForeverReplay: the store throttles every write of one job forever.
// The job goes running → throttled → backoff → stalled → cancelling →
// cleaning → cancelled on its own, the store receives the cancel and the
// cleanup, later writes are refused, and a second job keeps working.
func TestThrottledForeverReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &storeAPI{}
		reg := prometheus.NewRegistry()
		m := newTestManager(t, Config{Registerer: reg, HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions()})
		stop := running(t, m)
		start := time.Now()

		var (
			refusal  error
			refused  time.Time
			attempts int
		)
		loaderDone := make(chan struct{})
		go func() { // the bulk loader of the throttled job
			defer close(loaderDone)
			for {
				_, release, err := m.Admit(context.Background(), "pegasus")
				if err != nil {
					refusal, refused = err, time.Now()
					return
				}
				attempts++
				time.Sleep(10 * time.Millisecond) // the store answers 429
				m.Observe("pegasus", Observation{Kind: ObsThrottled})
				release()
			}
		}()
		for range 15 * 60 { // a healthy job on the same sidecar
			_, release, err := m.Admit(context.Background(), "other")
			if err != nil {
				t.Fatalf("other job refused at %s: %v", time.Since(start), err)
			}
			time.Sleep(100 * time.Millisecond)
			m.Observe("other", Observation{Kind: ObsOK, Bytes: 1000, Items: 10})
			release()
			if s := mustGet(t, m, "other").State; s != Running {
				t.Fatalf("other job %s at %s", s, time.Since(start))
			}
			time.Sleep(900 * time.Millisecond)
		}
		<-loaderDone
		synctest.Wait()

		var nae *NotAcceptingError
		if !errors.As(refusal, &nae) || nae.Job != "pegasus" || nae.State.Accepting() || nae.Reason == "" {
			t.Fatalf("loader refused with %v, want a NotAcceptingError", refusal)
		}
		if d := refused.Sub(start); d < 10*time.Minute || d > 10*time.Minute+2*time.Second {
			t.Errorf("writes refused after %s, want StallAfter+CancelGrace = 10m", d)
		}
		// Backoff held the writes: after the first BackoffQuiet of
		// rejections (10ms each here), a few dozen probes in 10 minutes.
		if attempts > 40+int(DefaultBackoffQuiet/(10*time.Millisecond)) {
			t.Errorf("%d write attempts reached the throttling store", attempts)
		}
		v := mustGet(t, m, "pegasus")
		want := []State{Running, Throttled, Backoff, Stalled, Cancelling, Cleaning, Cancelled}
		if got := historyTo(v); !slices.Equal(got, want) {
			t.Fatalf("history %v, want %v", got, want)
		}
		if v.StallCause != CauseStoreThrottling || v.History[4].Reason != "stalled" {
			t.Errorf("stall cause %q, cancel reason %q", v.StallCause, v.History[4].Reason)
		}
		wantCalls := []string{
			"POST http://pegasus/v1/bulk_load/pegasus/cancel?force=true",
			"POST http://pegasus/v1/bulk_load/pegasus/clear",
		}
		if got := api.Calls(); !slices.Equal(got, wantCalls) {
			t.Fatalf("store calls %q, want %q", got, wantCalls)
		}
		if len(v.Attempts) != 2 || v.Attempts[0].Result != ResultOK || v.Attempts[1].Action != "cleanup" {
			t.Errorf("attempts %+v", v.Attempts)
		}
		if _, _, err := m.Admit(context.Background(), "pegasus"); !errors.As(err, &nae) || nae.State != Cancelled {
			t.Errorf("write after the cancel: %v", err)
		}
		if o := mustGet(t, m, "other"); o.Totals.Requests != 15*60 || o.Totals.Items != 15*60*10 || o.Stalls != 0 {
			t.Errorf("other job totals %+v, stalls %d", o.Totals, o.Stalls)
		}
		if got := counterValue(m.met.transitions.WithLabelValues("stalled", "cancelling")); got != 1 {
			t.Errorf("stalled→cancelling transitions %v", got)
		}
		if got := counterValue(m.met.actions.WithLabelValues("cleanup", "ok")); got != 1 {
			t.Errorf("cleanup ok actions %v", got)
		}
		lint(t, reg)
		stop()
	})
}

// TestSlowStoreNeverStalls: a job whose writes are acknowledged slowly but
// steadily, over many stall windows, never stalls.
func TestSlowStoreNeverStalls(t *testing.T) {
	f := func(name string, every time.Duration, windows int) {
		t.Helper()
		synctest.Test(t, func(t *testing.T) {
			m := newTestManager(t, Config{})
			stop := running(t, m)
			defer stop()
			end := time.Now().Add(time.Duration(windows) * DefaultStallAfter)
			for time.Now().Before(end) {
				_, release, err := m.Admit(context.Background(), "slow")
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(every)
				m.Observe("slow", Observation{Kind: ObsOK, Bytes: 10, Items: -1})
				release()
				if v := mustGet(t, m, "slow"); v.State != Running || v.Stalls != 0 {
					t.Fatalf("%s: %s, %d stalls", name, v.State, v.Stalls)
				}
			}
		})
	}
	f("a few writes per second", 300*time.Millisecond, 6)
	f("one write per StallAfter/2", DefaultStallAfter/2, 12)
}

// TestAdmitAbortsInflight: cancelling a job aborts its in-flight attempts
// and refuses new ones; other jobs are untouched.
func TestAdmitAbortsInflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTestManager(t, Config{})
		stop := running(t, m)
		defer stop()
		actx, release, err := m.Admit(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		bctx, releaseB, err := m.Admit(context.Background(), "b")
		if err != nil {
			t.Fatal(err)
		}
		if v := mustGet(t, m, "a"); v.InFlight != 1 {
			t.Fatalf("in flight %d", v.InFlight)
		}
		if _, err := m.Cancel("a", false, "operator"); err != nil {
			t.Fatal(err)
		}
		<-actx.Done()
		var nae *NotAcceptingError
		if !errors.As(context.Cause(actx), &nae) || nae.Job != "a" {
			t.Fatalf("in-flight cause %v", context.Cause(actx))
		}
		if bctx.Err() != nil {
			t.Fatal("other job's attempt aborted")
		}
		release()
		releaseB()
		release() // twice is harmless
		synctest.Wait()
		v := mustGet(t, m, "a")
		if v.State != Cancelled || v.InFlight != 0 {
			t.Fatalf("%s in flight %d", v.State, v.InFlight)
		}
		if v.History[1].Reason != "operator" || len(v.Attempts) != 2 || v.Attempts[0].Result != ResultSkipped ||
			v.History[2].Reason != "cancel skipped: no action configured" {
			t.Fatalf("skipped actions not recorded: %+v %+v", v.History, v.Attempts)
		}
	})
}

// TestActionRetriesExhausted: the store's cancel endpoint fails every time;
// after ActionRetries retries the job fails with cancel_failed, a forced
// cancel cleans up anyway.
func TestActionRetriesExhausted(t *testing.T) {
	f := func(force bool, wantState State, wantReason string, wantCalls int) {
		t.Helper()
		synctest.Test(t, func(t *testing.T) {
			api := &storeAPI{status: func(call string) int {
				if strings.Contains(call, "cancel") {
					return http.StatusInternalServerError
				}
				return http.StatusNotFound // cleanup: already gone
			}}
			m := newTestManager(t, Config{HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions(), ActionRetries: 2})
			defer m.Close()
			if _, err := m.Register("j", Settings{}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Cancel("j", force, ""); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			time.Sleep(time.Minute)
			synctest.Wait()
			v := mustGet(t, m, "j")
			if v.State != wantState || v.Reason != wantReason || len(api.Calls()) != wantCalls {
				t.Fatalf("%s (%s) after %d calls, want %s (%s) after %d", v.State, v.Reason, len(api.Calls()), wantState, wantReason, wantCalls)
			}
			if a := v.Attempts[0]; a.Result != ResultError || a.Status != 500 || a.N != 1 || !strings.Contains(a.Error, "status 500") {
				t.Fatalf("first attempt %+v", a)
			}
		})
	}
	f(false, Failed, "cancel_failed", 3)
	f(true, Cancelled, "cleanup_succeeded", 4)
}

// TestBoltReopenKeepsTransitions: everything committed before Close is
// there after reopening, and a new Manager shows the same jobs.
func TestBoltReopenKeepsTransitions(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	clock := func() time.Time { return now }
	m := newTestManager(t, Config{Store: st, Now: clock})
	_, release, err := m.Admit(context.Background(), "j")
	if err != nil {
		t.Fatal(err)
	}
	m.Observe("j", Observation{Kind: ObsOK, Bytes: 100, Items: 3})
	release()
	for range 3 {
		now = now.Add(time.Second)
		m.Observe("j", Observation{Kind: ObsThrottled})
	}
	if _, err := m.ReportProgress("j", Progress{Records: 10, Checkpoint: json.RawMessage(`{"offset":10}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register("k", Settings{Labels: map[string]string{"team": "search"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Complete("k"); err != nil {
		t.Fatal(err)
	}
	before := []JobView{mustGet(t, m, "j"), mustGet(t, m, "k")}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	m = newTestManager(t, Config{Store: st, Now: clock})
	defer m.Close()
	for _, b := range before {
		a := mustGet(t, m, b.ID)
		if a.State != b.State || !sameHistory(a.History, b.History) || a.Totals != b.Totals ||
			a.Loader != b.Loader || !a.Created.Equal(b.Created) || a.Checkpoint == nil != (b.Checkpoint == nil) {
			t.Errorf("after reopen:\n%+v\nbefore:\n%+v", a, b)
		}
	}
	if got := historyTo(mustGet(t, m, "j")); !slices.Equal(got, []State{Running, Throttled, Backoff}) {
		t.Errorf("history %v", got)
	}
	if v := mustGet(t, m, "k"); v.Labels["team"] != "search" || v.State != Completed {
		t.Errorf("k: %+v", v)
	}
}

// TestCleaningResumesAfterRestart: a cleanup under way when the process
// stops runs again at the next start, and the job ends cancelled.
func TestCleaningResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		st, err := OpenBolt(dir)
		if err != nil {
			t.Fatal(err)
		}
		api1 := &storeAPI{block: func(call string) bool { return strings.HasSuffix(call, "/clear") }}
		m := newTestManager(t, Config{Store: st, HTTPClient: &http.Client{Transport: api1}, Defaults: pegasusActions(), ActionTimeout: time.Hour})
		if _, err := m.Register("j", Settings{}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Cancel("j", false, ""); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		before := mustGet(t, m, "j")
		if before.State != Cleaning || len(api1.Calls()) != 2 {
			t.Fatalf("%s after calls %q", before.State, api1.Calls())
		}
		if err := m.Close(); err != nil { // the cleanup is abandoned
			t.Fatal(err)
		}

		st, err = OpenBolt(dir)
		if err != nil {
			t.Fatal(err)
		}
		api2 := &storeAPI{}
		m = newTestManager(t, Config{Store: st, HTTPClient: &http.Client{Transport: api2}, Defaults: pegasusActions()})
		defer m.Close()
		synctest.Wait()
		after := mustGet(t, m, "j")
		if after.State != Cancelled {
			t.Fatalf("after restart %s", after.State)
		}
		if got := api2.Calls(); !slices.Equal(got, []string{"POST http://pegasus/v1/bulk_load/j/clear"}) {
			t.Fatalf("calls after restart %q, want only the cleanup again", got)
		}
		if !sameHistory(after.History[:len(before.History)], before.History) || len(after.History) != len(before.History)+1 {
			t.Fatalf("history changed:\n%v\n%v", before.History, after.History)
		}
	})
}

// TestRestartAloneCancelsNothing: jobs quiet for hours before a restart,
// one of them stalled by throttling, one idle, are not cancelled because
// of the restart: the stalled one only StallAfter+CancelGrace after it,
// the idle one never.
func TestRestartAloneCancelsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &MemStore{}
		m := newTestManager(t, Config{Store: st})
		stop := running(t, m)
		if _, err := m.Register("stalled-before", Settings{}); err != nil {
			t.Fatal(err)
		}
		m.Observe("stalled-before", Observation{Kind: ObsThrottled})
		time.Sleep(4 * time.Minute)
		if _, err := m.Register("idle", Settings{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2*time.Minute - time.Millisecond)
		if s := mustGet(t, m, "stalled-before").State; s != Stalled {
			t.Fatalf("before restart: %s", s)
		}
		stop()

		time.Sleep(3 * time.Hour) // down
		restart := time.Now()
		m = newTestManager(t, Config{Store: st})
		stop = running(t, m)
		defer stop()
		time.Sleep(DefaultStallAfter + DefaultCancelGrace - 2*time.Second)
		for _, id := range []string{"idle", "stalled-before"} {
			if v := mustGet(t, m, id); !v.State.Accepting() {
				t.Fatalf("%s %s (%s) %s after the restart", id, v.State, v.Reason, time.Since(restart))
			}
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		v := mustGet(t, m, "stalled-before")
		i := slices.Index(historyTo(v), Cancelling)
		if v.State != Cancelled || i < 0 || v.History[i].Reason != "stalled" {
			t.Fatalf("stalled-before: %s, history %+v", v.State, v.History)
		}
		if d := v.History[i].At.Sub(restart); d < DefaultStallAfter+DefaultCancelGrace-time.Second {
			t.Fatalf("stalled-before cancelled %s after the restart", d)
		}
		time.Sleep(time.Hour)
		if v := mustGet(t, m, "idle"); v.State != Idle || slices.Contains(historyTo(v), Cancelling) {
			t.Fatalf("idle: %s, history %+v", v.State, v.History)
		}
	})
}

// flakyStore fails Put and Delete while broken is set, like a full disk.
type flakyStore struct {
	MemStore
	mu     sync.Mutex
	broken bool
}

func (s *flakyStore) setBroken(b bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.broken = b
}

func (s *flakyStore) Delete(ids ...string) error {
	s.mu.Lock()
	broken := s.broken
	s.mu.Unlock()
	if broken {
		return errors.New("delete from sluice.db: no space left on device")
	}
	return s.MemStore.Delete(ids...)
}

func (s *flakyStore) Put(recs ...Record) error {
	s.mu.Lock()
	broken := s.broken
	s.mu.Unlock()
	if broken {
		return errors.New("write sluice.db: no space left on device")
	}
	return s.MemStore.Put(recs...)
}

// TestWriteErrorsKeepWorking: with the store failing, jobs go on in memory,
// errors are counted, checkpoints are not reported durable, and everything
// is written once the store recovers.
func TestWriteErrorsKeepWorking(t *testing.T) {
	st := &flakyStore{}
	now := t0
	m := newTestManager(t, Config{Store: st, Now: func() time.Time { return now }})
	defer m.Close()
	if _, err := m.ReportProgress("j", Progress{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("progress for an unknown job: %v", err)
	}
	if _, err := m.Register("j", Settings{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReportProgress("j", Progress{Records: 1, Checkpoint: json.RawMessage(`"c1"`)}); err != nil {
		t.Fatal(err)
	}
	st.setBroken(true)
	_, release, err := m.Admit(context.Background(), "j")
	if err != nil {
		t.Fatalf("admit with a broken store: %v", err)
	}
	m.Observe("j", Observation{Kind: ObsOK, Bytes: 5})
	release()
	v, err := m.ReportProgress("j", Progress{Records: 2, Checkpoint: json.RawMessage(`"c2"`)})
	if err == nil || !strings.Contains(err.Error(), "not durable") {
		t.Fatalf("checkpoint on a broken store: %v", err)
	}
	if v.Checkpoint == nil || string(v.Checkpoint.Data) != `"c1"` || v.Loader.Records != 2 {
		t.Fatalf("view shows checkpoint %+v, loader %+v; want the durable c1", v.Checkpoint, v.Loader)
	}
	now = now.Add(time.Second)
	m.Tick(now)
	// The checkpoint's commit and the tick's flush failed.
	if got := counterValue(m.met.writeErrors); got != 2 {
		t.Fatalf("write errors counted %v", got)
	}
	st.setBroken(false)
	now = now.Add(time.Second)
	m.Tick(now)
	recs, err := st.Load()
	if err != nil || len(recs) != 1 {
		t.Fatal(recs, err)
	}
	if r := recs[0]; r.State != Running || r.Totals.Bytes != 5 || len(r.Checkpoints) != 2 {
		t.Fatalf("record after recovery: %+v", r)
	}
	if v := mustGet(t, m, "j"); string(v.Checkpoint.Data) != `"c2"` {
		t.Fatalf("checkpoint after recovery %s", v.Checkpoint.Data)
	}
}

func TestCheckpointsRetained(t *testing.T) {
	m := newTestManager(t, Config{CheckpointsRetained: 3})
	defer m.Close()
	if _, err := m.Register("j", Settings{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 7; i++ {
		if _, err := m.ReportProgress("j", Progress{Records: int64(i), Checkpoint: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	v := mustGet(t, m, "j")
	var seqs []uint64
	for _, c := range v.Checkpoints {
		seqs = append(seqs, c.Seq)
	}
	if !slices.Equal(seqs, []uint64{5, 6, 7}) || v.Checkpoint.Seq != 7 || string(v.Checkpoint.Data) != `{"n":7}` {
		t.Fatalf("checkpoints %v, latest %+v", seqs, v.Checkpoint)
	}
	if _, err := m.Complete("j"); err != nil {
		t.Fatal(err)
	}
	if v := mustGet(t, m, "j"); v.Checkpoint == nil || v.Checkpoint.Seq != 7 {
		t.Fatal("latest checkpoint dropped at completion")
	}
	if _, err := m.ReportProgress("j", Progress{Records: 8}); !errors.As(err, new(*NotAcceptingError)) {
		t.Fatalf("progress on a completed job: %v", err)
	}
	f := func(p Progress) {
		t.Helper()
		if _, err := m.ReportProgress("j", p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ReportProgress(%+v) = %v, want ErrInvalid", p, err)
		}
	}
	f(Progress{Records: -1})
	f(Progress{Checkpoint: json.RawMessage(`{bad`)})
	f(Progress{Checkpoint: json.RawMessage(`"` + strings.Repeat("x", MaxCheckpointBytes) + `"`)})
}

// TestLoaderProgressHoldsOffStall: reports that change are progress,
// repeated identical reports are heartbeats: the loader is alive and
// writes nothing, so its job is idle, not stalled.
func TestLoaderProgressHoldsOffStall(t *testing.T) {
	now := t0
	m := newTestManager(t, Config{Now: func() time.Time { return now }})
	defer m.Close()
	off := false
	for _, id := range []string{"moving", "heartbeat"} {
		if _, err := m.Register(id, Settings{AutoCancel: &off}); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(1); i <= 30; i++ {
		now = now.Add(time.Minute)
		if _, err := m.ReportProgress("moving", Progress{Records: i * 100}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.ReportProgress("heartbeat", Progress{Records: 100}); err != nil {
			t.Fatal(err)
		}
		m.Tick(now)
	}
	if v := mustGet(t, m, "moving"); v.State != Running || v.Rate.Records <= 0 {
		t.Errorf("moving: %s rate %+v", v.State, v.Rate)
	}
	if v := mustGet(t, m, "heartbeat"); v.State != Idle || v.Stalls != 0 || v.StallCause != "" {
		t.Errorf("heartbeat: %s stalls %d cause %q, want idle", v.State, v.Stalls, v.StallCause)
	}
}

func TestRegister(t *testing.T) {
	m := newTestManager(t, Config{MaxJobs: 2, Defaults: Settings{StallAfter: time.Minute}})
	defer m.Close()
	v, err := m.Register("a", Settings{CancelGrace: time.Hour, Labels: map[string]string{"k": "v"}})
	if err != nil || v.State != Pending || v.Settings.StallAfter != "1m0s" || v.Settings.CancelGrace != "1h0m0s" || !v.Settings.AutoCancel {
		t.Fatalf("%+v %v", v, err)
	}
	// Re-registering a live job replaces its settings.
	if v, err = m.Register("a", Settings{StallAfter: 2 * time.Minute}); err != nil || v.Settings.StallAfter != "2m0s" || v.Labels != nil {
		t.Fatalf("%+v %v", v.Settings, err)
	}
	if _, _, err := m.Admit(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Admit(context.Background(), "c"); !errors.Is(err, ErrTooManyJobs) {
		t.Fatalf("third job: %v", err)
	}
	if _, err := m.Complete("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register("c", Settings{}); err != nil {
		t.Fatalf("a terminal job still counted against MaxJobs: %v", err)
	}
	if _, err := m.Register("b", Settings{}); !errors.As(err, new(*NotAcceptingError)) {
		t.Fatalf("re-register a completed job: %v", err)
	}
	if _, err := m.Cancel("b", false, ""); !errors.As(err, new(*TransitionError)) {
		t.Fatalf("cancel a completed job: %v", err)
	}
	if _, err := m.Complete("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("complete unknown: %v", err)
	}
	if _, _, err := m.Admit(context.Background(), "a/../b"); !errors.Is(err, ErrInvalidJobID) {
		t.Fatalf("bad id: %v", err)
	}
	bad := func(name string, s Settings) {
		t.Helper()
		if _, err := m.Register("a", s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	bad("negative stall", Settings{StallAfter: -1})
	bad("stall of 5ms (for 5m)", Settings{StallAfter: 5 * time.Millisecond})
	bad("bad action kind", Settings{Cancel: &ActionSpec{Kind: "shell"}})
	bad("job in host", Settings{Cancel: &ActionSpec{Kind: KindHTTP, URL: "http://${JOB}.example/"}})
	bad("header CRLF", Settings{Cleanup: &ActionSpec{Kind: KindHTTP, URL: "http://h/", Headers: map[string]string{"X": "a\r\nY: b"}}})
	bad("empty argv", Settings{Cleanup: &ActionSpec{Kind: KindCommand}})
	bad("label name", Settings{Labels: map[string]string{"a-b": "x"}})
	bad("probe pointer", Settings{ProbeURL: "http://h/", ProbePointer: "x"})
	if _, err := m.Cancel("a", false, strings.Repeat("r", 300)); !errors.Is(err, ErrInvalid) {
		t.Errorf("long reason: %v", err)
	}
	if c := m.Counts(); len(c) != int(numStates) || c[Pending] != 2 || c[Completed] != 1 || c[Running] != 0 {
		t.Errorf("counts %v", c)
	}
	var ids []string
	for _, s := range m.List() {
		ids = append(ids, s.ID)
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Errorf("list %v", ids)
	}
}

func TestSettingsJSON(t *testing.T) {
	in := `{"stall_after":"90s","deadline":"2h","auto_cancel":false,"cancel":{"kind":"command","argv":["pegasus-shell","cancel","${JOB}"]},"labels":{"team":"x"}}`
	var s Settings
	if err := json.Unmarshal([]byte(in), &s); err != nil {
		t.Fatal(err)
	}
	if s.StallAfter != 90*time.Second || s.Deadline != 2*time.Hour || *s.AutoCancel || s.Cancel.Argv[2] != "${JOB}" {
		t.Fatalf("%+v", s)
	}
	out, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Settings
	if err := json.Unmarshal(out, &back); err != nil || back.StallAfter != s.StallAfter || back.Labels["team"] != "x" {
		t.Fatalf("round trip %s: %+v %v", out, back, err)
	}
	if err := json.Unmarshal([]byte(`{"stall_after":"soon"}`), &s); err == nil {
		t.Fatal("bad duration accepted")
	}
}

// TestPruneAndMetrics: terminal jobs are pruned after Retention; per-job
// series are exported for live jobs only; the metrics pass the linter.
func TestPruneAndMetrics(t *testing.T) {
	now := t0
	reg := prometheus.NewRegistry()
	st := &MemStore{}
	m := newTestManager(t, Config{Store: st, Registerer: reg, Retention: time.Hour, Now: func() time.Time { return now }})
	defer m.Close()
	for _, id := range []string{"done", "live"} {
		_, release, err := m.Admit(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		m.Observe(id, Observation{Kind: ObsOK, Bytes: 2048, Items: 4})
		release()
	}
	if _, err := m.Complete("done"); err != nil {
		t.Fatal(err)
	}
	lint(t, reg)
	series := gather(t, reg)
	for k, want := range map[string]float64{
		`sluice_job_acknowledged_bytes_total{job_id="live"}`:               2048,
		`sluice_job_acknowledged_items_total{job_id="live"}`:               4,
		`sluice_job_state{job_id="live",state="running"}`:                  1,
		`sluice_job_state{job_id="live",state="completed"}`:                0,
		`sluice_job_last_progress_timestamp_seconds{job_id="live"}`:        float64(t0.Unix()),
		`sluice_job_stalls_total{job_id="live"}`:                           0,
		`sluice_jobs{state="completed"}`:                                   1,
		`sluice_job_transitions_total{from="running",to="completed"}`:      1,
		`sluice_job_actions_total{action="cleanup",result="already_gone"}`: 0,
		`sluice_state_write_errors_total`:                                  0,
	} {
		if got, ok := series[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	// Per-job series exist for live (and failed) jobs only: a completed
	// job's go at once, so churn cannot grow the cardinality.
	if n := countSeries(series, "sluice_job_state{"); n != int(numStates) {
		t.Fatalf("%d sluice_job_state series, want those of the live job only", n)
	}
	for k := range series {
		if strings.Contains(k, `job_id="done"`) {
			t.Errorf("series %s of the completed job is exported", k)
		}
	}
	now = now.Add(time.Hour)
	m.Tick(now)
	if _, err := m.Get("done"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("done not pruned: %v", err)
	}
	if recs, _ := st.Load(); len(recs) != 1 || recs[0].ID != "live" {
		t.Fatalf("store after prune: %+v", recs)
	}
	series = gather(t, reg)
	for _, s := range States() {
		want := 0.0
		if s == Idle { // an hour without a write
			want = 1
		}
		if got, ok := series[`sluice_jobs{state="`+s.String()+`"}`]; !ok || got != want {
			t.Errorf("sluice_jobs{state=%q} = %v (present %v), want %v", s, got, ok, want)
		}
	}
	for k := range series {
		if strings.Contains(k, `job_id="done"`) {
			t.Errorf("series %s of the pruned job remains", k)
		}
	}
	if n := countSeries(series, "sluice_job_state{"); n != int(numStates) {
		t.Fatalf("%d sluice_job_state series after prune", n)
	}
}

// TestProgressProbe: a store-side bulk load (Pegasus-style) whose counter
// keeps rising never stalls; once it stops rising the job stalls.
func TestProgressProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		value := 0
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.URL.String() != "http://pegasus/status/j" {
				return nil, fmt.Errorf("unexpected probe %s", req.URL)
			}
			mu.Lock()
			defer mu.Unlock()
			body := fmt.Sprintf(`{"progress":{"ingested":%d}}`, value)
			return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(body)), Header: http.Header{}}, nil
		})
		m := newTestManager(t, Config{HTTPClient: &http.Client{Transport: rt},
			ProbeURL: "http://pegasus/status/${JOB}", ProbePointer: "/progress/ingested"})
		stop := running(t, m)
		defer stop()
		if _, err := m.Register("j", Settings{}); err != nil {
			t.Fatal(err)
		}
		for range 30 {
			time.Sleep(time.Minute)
			mu.Lock()
			value += 5
			mu.Unlock()
		}
		if v := mustGet(t, m, "j"); v.State != Running || v.Loader.ProbeValue != 145 {
			t.Fatalf("rising probe: %s value %v", v.State, v.Loader.ProbeValue)
		}
		time.Sleep(DefaultStallAfter + time.Minute)
		if v := mustGet(t, m, "j"); v.State != Stalled || v.StallCause != CauseProbeNoProgress {
			t.Fatalf("flat probe: %s (%s), want stalled (probe_no_progress)", v.State, v.StallCause)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestJSONPointer(t *testing.T) {
	doc := []byte(`{"a":{"b/c":[1,"2.5",{"~k":3}]},"s":"x","n":7}`)
	f := func(ptr string, want float64, ok bool) {
		t.Helper()
		got, err := jsonPointerNumber(doc, ptr)
		if (err == nil) != ok || ok && got != want {
			t.Errorf("%q = %v, %v; want %v ok=%v", ptr, got, err, want, ok)
		}
	}
	f("/n", 7, true)
	f("/a/b~1c/0", 1, true)
	f("/a/b~1c/1", 2.5, true)
	f("/a/b~1c/2/~0k", 3, true)
	f("/a/b~1c/3", 0, false)
	f("/s", 0, false)
	f("/missing", 0, false)
	f("/n/x", 0, false)
	f("", 0, false)
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// lint fails the test if the registry's metrics break Prometheus' naming
// rules (testutil.GatherAndLint without its diff dependency).
func lint(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

// gather returns every series as name{label="value",...} → value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			out[key] = v
		}
	}
	return out
}

func countSeries(series map[string]float64, prefix string) int {
	n := 0
	for k := range series {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

func sameHistory(a, b []Transition) bool {
	return slices.EqualFunc(a, b, func(x, y Transition) bool {
		return x.From == y.From && x.To == y.To && x.Reason == y.Reason && x.At.Equal(y.At)
	})
}

// An observation without a kind, or with one outside the set, changes
// nothing: it is a late or foreign report, not progress nor an error.
func TestObserveIgnoresUnknownKinds(t *testing.T) {
	m := newTestManager(t, Config{})
	defer m.Close()
	if _, err := m.Register("j", Settings{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []ObsKind{0, ObsAbandoned + 1} {
		m.Observe("j", Observation{Kind: k, Bytes: 10, Items: 1})
		if want := fmt.Sprintf("obs_kind(%d)", k); k.String() != want {
			t.Errorf("ObsKind(%d).String() = %q, want %q", uint8(k), k, want)
		}
	}
	if v := mustGet(t, m, "j"); v.Totals != (Totals{}) || v.State != Pending {
		t.Errorf("%s with totals %+v after unknown kinds, want pending with none", v.State, v.Totals)
	}
}

// TestSettle: Settle returns once no job is cancelling or cleaning, and
// no later than its context, with the number that still are: a shutdown
// waits for a cancel under way, not for ever for one the store never
// answers.
func TestSettle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hung atomic.Bool
		hung.Store(true)
		api := &storeAPI{block: func(call string) bool { return hung.Load() && strings.Contains(call, "/cancel") }}
		m := newTestManager(t, Config{Store: &MemStore{}, HTTPClient: &http.Client{Transport: api}})
		defer m.Close()
		if _, err := m.Register("load", Settings{Cancel: &ActionSpec{Kind: KindHTTP, URL: "http://store/load/cancel"}}); err != nil {
			t.Fatal(err)
		}
		if n := m.Settle(context.Background()); n != 0 {
			t.Fatalf("Settle with no job cancelling: %d", n)
		}
		if _, err := m.Cancel("load", false, "operator"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		if n := m.Settle(ctx); n != 1 || time.Since(start) != 10*time.Second {
			t.Errorf("Settle with a cancel the store holds: %d jobs after %v, want 1 after 10s", n, time.Since(start))
		}
		hung.Store(false) // the store answers the next attempt
		if n := m.Settle(context.Background()); n != 0 || mustGet(t, m, "load").State != Cancelled {
			t.Errorf("Settle once the store answers: %d jobs, %s, want none, cancelled", n, mustGet(t, m, "load").State)
		}
	})
}
