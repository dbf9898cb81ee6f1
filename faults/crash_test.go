package faults

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// actionStore is a store double for the crash loop: writes succeed; the
// cancel and cleanup APIs take a random 0–300 ms, the cancel fails now and
// then, the cleanup sometimes finds the job already gone. It records every
// call per job, in order.
type actionStore struct {
	mu    sync.Mutex
	rnd   *rand.Rand
	calls map[string][]string // job → "cancel:200", "cleanup:404", …
	stop  chan struct{}
	// started receives a value as each cancel or cleanup call arrives.
	started chan struct{}
}

func (s *actionStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, job, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !ok || (kind != "cancel" && kind != "cleanup") {
		w.WriteHeader(http.StatusOK) // a write
		return
	}
	s.mu.Lock()
	delay := time.Duration(s.rnd.IntN(300)) * time.Millisecond
	code := http.StatusOK
	switch p := s.rnd.Float64(); {
	case kind == "cancel" && p < 0.25:
		code = http.StatusInternalServerError
	case kind == "cleanup" && p < 0.2:
		code = http.StatusNotFound // already gone: success
	}
	s.mu.Unlock()
	select {
	case s.started <- struct{}{}:
	default:
	}
	select {
	case <-time.After(delay):
	case <-r.Context().Done():
		s.record(job, kind+":aborted")
		return
	case <-s.stop:
		return
	}
	s.record(job, fmt.Sprintf("%s:%d", kind, code))
	w.WriteHeader(code)
}

func (s *actionStore) record(job, call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[job] = append(s.calls[job], call)
}

func (s *actionStore) callsOf(job string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls[job]...)
}

// jobView is the part of GET /v1/jobs/{id} the crash loop checks.
type jobView struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
	Force   bool   `json:"force"`
	History []struct {
		From   string `json:"from"`
		To     string `json:"to"`
		Reason string `json:"reason"`
	} `json:"history"`
	Totals struct {
		Requests int64 `json:"requests"`
	} `json:"totals"`
}

// TestSIGKILLDuringActions kills sluice with SIGKILL at random points while
// cancels and cleanups are under way, restarts it on the same state dir and
// repeats. After every restart:
//   - each job's record is consistent: a known state, a history of legal
//     transitions that chain and end in the current state;
//   - a cancel that was answered 202 was durable: the job never runs again;
//   - a completion that was answered 200 was durable;
//   - a job nobody cancelled was not cancelled by the restart;
//   - acknowledged totals never exceed the writes sent.
//
// At the end every cancelled job reaches cancelled (or failed, only if its
// cancel really failed), and the store saw, for each cancelled job, a
// successful cleanup, after a successful cancel unless the cancel was
// forced.
func TestSIGKILLDuringActions(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	store := &actionStore{rnd: rand.New(rand.NewPCG(seed, 2)), calls: map[string][]string{},
		stop: make(chan struct{}), started: make(chan struct{}, 1024)}
	srv := httptest.NewServer(store)
	defer srv.Close()
	defer close(store.stop)
	dir := t.TempDir()
	env := []string{
		"SLUICE_UPSTREAM_URL=" + srv.URL,
		"SLUICE_STATE_DIR=" + dir,
		"SLUICE_CANCEL_URL=" + srv.URL + "/cancel/${JOB}",
		"SLUICE_CLEANUP_URL=" + srv.URL + "/cleanup/${JOB}",
		"SLUICE_ACTION_TIMEOUT=2s",
		"SLUICE_ACTION_RETRIES=6",
		"SLUICE_STALL_AFTER=1h",
		"SLUICE_CANCEL_GRACE=1h",
	}
	var (
		sent      = map[string]int64{} // writes answered 2xx per job
		cancelled = map[string]bool{}  // cancel answered 202 (value: forced)
		completed = map[string]bool{}
		all       []string
	)
	check := func(p *proc, iter int) map[string]jobView {
		t.Helper()
		views := map[string]jobView{}
		for _, id := range all {
			var v jobView
			if code := getJSON(t, p.admin+"/v1/jobs/"+id, &v); code != http.StatusOK {
				t.Fatalf("restart %d: job %s: %d", iter, id, code)
			}
			views[id] = v
			st, err := state.ParseState(v.State)
			if err != nil {
				t.Errorf("restart %d: job %s: %v", iter, id, err)
				continue
			}
			for k, h := range v.History {
				from, err1 := state.ParseState(h.From)
				to, err2 := state.ParseState(h.To)
				if err1 != nil || err2 != nil || !state.Legal(from, to) {
					t.Errorf("restart %d: job %s: illegal history entry %s → %s", iter, id, h.From, h.To)
				}
				if k > 0 && v.History[k-1].To != h.From {
					t.Errorf("restart %d: job %s: history does not chain: %s then %s → %s", iter, id, v.History[k-1].To, h.From, h.To)
				}
			}
			if n := len(v.History); n > 0 && v.History[n-1].To != v.State {
				t.Errorf("restart %d: job %s: history ends in %s, state is %s", iter, id, v.History[n-1].To, v.State)
			}
			switch {
			case cancelRequested(cancelled, id):
				if st.Accepting() || st == state.Completed {
					t.Errorf("restart %d: job %s was cancelled (202) and is %s again", iter, id, v.State)
				}
			case completed[id]:
				if st != state.Completed {
					t.Errorf("restart %d: job %s was completed (200) and is %s", iter, id, v.State)
				}
			default:
				if !st.Accepting() {
					t.Errorf("restart %d: job %s was never cancelled and is %s (%s)", iter, id, v.State, v.Reason)
				}
			}
			if v.Totals.Requests > sent[id] {
				t.Errorf("restart %d: job %s: %d acknowledged, only %d sent", iter, id, v.Totals.Requests, sent[id])
			}
		}
		return views
	}

	const restarts = 15
	l := (*loader)(nil)
	for iter := range restarts {
		p := startProc(t, env...)
		check(p, iter)
		if l != nil {
			l.close()
		}
		l = newLoader(p.proxy, fmt.Sprintf("r%d", iter), 5*time.Second)
		// New jobs, each with a few writes.
		var fresh []string
		for k := range 4 {
			id := fmt.Sprintf("job-%02d-%d", iter, k)
			for range 1 + rnd.IntN(3) {
				if o := l.write("PUT", "/put", id, []byte("row")); o.clean2xx() {
					sent[id]++
				} else {
					t.Fatalf("write for %s: %v", id, o)
				}
			}
			fresh = append(fresh, id)
			all = append(all, id)
		}
		// Cancel two (one forced), complete one, and cancel an older job
		// still live; then kill at a random moment while the actions run.
		for k, id := range []string{fresh[0], fresh[1]} {
			force := k == 1
			code, body := call(t, "POST", p.admin+"/v1/jobs/"+id+"/cancel", fmt.Sprintf(`{"force":%v}`, force))
			if code != http.StatusAccepted {
				t.Fatalf("cancel %s: %d %s", id, code, body)
			}
			cancelled[id] = force
		}
		if code, body := call(t, "POST", p.admin+"/v1/jobs/"+fresh[2]+"/complete", ""); code != http.StatusOK {
			t.Fatalf("complete %s: %d %s", fresh[2], code, body)
		} else {
			completed[fresh[2]] = true
		}
		for _, id := range all {
			if _, done := cancelled[id]; !done && !completed[id] && id != fresh[3] && rnd.IntN(3) == 0 {
				if code, _ := call(t, "POST", p.admin+"/v1/jobs/"+id+"/cancel", `{}`); code == http.StatusAccepted {
					cancelled[id] = false
				}
				break
			}
		}
		// The crash point: right away, or once 1–3 more action calls have
		// reached the store (and are under way).
		for range len(store.started) {
			<-store.started
		}
		for range rnd.IntN(4) {
			select {
			case <-store.started:
			case <-time.After(5 * time.Second):
			}
		}
		p.kill(t)
	}
	if l != nil {
		l.close()
	}

	// A last start: every action under way must finish.
	p := startProc(t, env...)
	check(p, restarts)
	var views map[string]jobView
	if !eventually(60*time.Second, func() bool {
		views = check(p, restarts)
		for id := range cancelled {
			if st := views[id].State; st != "cancelled" && st != "failed" {
				return false
			}
		}
		return true
	}) {
		for id := range cancelled {
			t.Errorf("job %s is still %s (%s) long after the last restart", id, views[id].State, views[id].Reason)
		}
	}
	for id, force := range cancelled {
		calls := store.callsOf(id)
		cancelOK := indexOf(calls, "cancel:200")
		cleanupOK := max(lastIndexOf(calls, "cleanup:200"), lastIndexOf(calls, "cleanup:404"))
		switch views[id].State {
		case "cancelled":
			if cleanupOK < 0 {
				t.Errorf("job %s is cancelled but the store never saw its cleanup succeed: %v", id, calls)
			}
			if !force && (cancelOK < 0 || cancelOK > cleanupOK) {
				t.Errorf("job %s is cancelled without a successful cancel before its cleanup: %v", id, calls)
			}
		case "failed":
			if indexOf(calls, "cancel:500") < 0 {
				t.Errorf("job %s failed though its cancel never failed: %v", id, calls)
			}
		}
	}
	store.mu.Lock()
	b, _ := json.Marshal(store.calls)
	store.mu.Unlock()
	t.Logf("%d restarts, %d jobs, %d cancelled, %d completed; store calls: %d bytes", restarts, len(all), len(cancelled), len(completed), len(b))
}

// cancelRequested reports whether a cancel of id was answered 202.
func cancelRequested(cancelled map[string]bool, id string) bool {
	_, ok := cancelled[id]
	return ok
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func lastIndexOf(s []string, v string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == v {
			return i
		}
	}
	return -1
}

// slowCleanupStore accepts writes and counts the cancel and cleanup calls;
// the first cleanup call hangs until released, like a slow
// clear_bulk_load, so that the test can kill sluice while it is under way.
type slowCleanupStore struct {
	mu            sync.Mutex
	cancels       int
	cleanups      int
	cleanupCalled chan struct{}
	release       chan struct{}
}

func (s *slowCleanupStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/cancel/"):
		s.mu.Lock()
		s.cancels++
		s.mu.Unlock()
	case strings.HasPrefix(r.URL.Path, "/cleanup/"):
		s.mu.Lock()
		s.cleanups++
		n := s.cleanups
		s.mu.Unlock()
		if n == 1 {
			close(s.cleanupCalled)
			select {
			case <-s.release:
			case <-r.Context().Done():
			}
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (s *slowCleanupStore) counts() (cancels, cleanups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancels, s.cleanups
}

// TestCrashDuringCleanup is the deterministic case of the loop above: sluice
// is killed with SIGKILL while a slow cleanup is under way and restarted on
// the same state dir. The job still ends cancelled, the cleanup is called
// again (actions are idempotent), the cancel is not repeated, and another
// job keeps its state, totals and history exactly: a restart alone cancels
// nothing and loses no committed count.
func TestCrashDuringCleanup(t *testing.T) {
	t.Parallel()
	store := &slowCleanupStore{cleanupCalled: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(store)
	defer srv.Close()
	defer close(store.release)
	env := []string{
		"SLUICE_UPSTREAM_URL=" + srv.URL,
		"SLUICE_STATE_DIR=" + t.TempDir(),
		"SLUICE_CANCEL_URL=" + srv.URL + "/cancel/${JOB}",
		"SLUICE_CLEANUP_URL=" + srv.URL + "/cleanup/${JOB}",
		"SLUICE_ACTION_TIMEOUT=30s",
		"SLUICE_STALL_AFTER=1m",
		"SLUICE_CANCEL_GRACE=1m",
	}
	job := func(p *proc, id string) map[string]any {
		t.Helper()
		var v map[string]any
		if code := getJSON(t, p.admin+"/v1/jobs/"+id, &v); code != http.StatusOK {
			t.Fatalf("job %s: %d %v", id, code, v)
		}
		return v
	}

	p := startProc(t, env...)
	l := newLoader(p.proxy, "crash", 5*time.Second)
	for _, id := range []string{"doomed", "other"} {
		if o := l.write(http.MethodPut, "/put", id, []byte("row")); !o.clean2xx() {
			t.Fatalf("write for %s: %v", id, o)
		}
	}
	l.close()
	if code, body := call(t, http.MethodPost, p.admin+"/v1/jobs/doomed/cancel", `{}`); code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, body)
	}
	select {
	case <-store.cleanupCalled:
	case <-time.After(10 * time.Second):
		t.Fatalf("cleanup never called; stderr:\n%s", p.stderr)
	}
	// Progress counters are committed by the one-second flush, not per
	// write (by design: a crash loses at most a second of counts, never a
	// transition). Let two flushes pass so the totals are durable: with
	// other tests running, one tick can come late.
	time.Sleep(2100 * time.Millisecond)
	before := job(p, "other")
	if s := job(p, "doomed")["state"]; s != "cleaning" {
		t.Fatalf("doomed is %v while its cleanup runs, want cleaning", s)
	}
	p.kill(t)

	p = startProc(t, env...)
	var doomed map[string]any
	eventually(10*time.Second, func() bool {
		doomed = job(p, "doomed")
		return doomed["state"] == "cancelled"
	})
	if doomed["state"] != "cancelled" {
		t.Fatalf("after the restart doomed is %v, want cancelled", doomed["state"])
	}
	if cancels, cleanups := store.counts(); cancels != 1 || cleanups != 2 {
		t.Errorf("store saw %d cancels and %d cleanups, want 1 and 2 (cleanup resumed, cancel not repeated)", cancels, cleanups)
	}
	after := job(p, "other")
	for _, k := range []string{"state", "totals", "created", "history"} {
		if before[k] == nil {
			t.Fatalf("job view has no %q: %v", k, before)
		}
		if fmt.Sprint(before[k]) != fmt.Sprint(after[k]) {
			t.Errorf("other job's %s changed across the crash: %v -> %v", k, before[k], after[k])
		}
	}
}

// TestSIGTERMDrains: on SIGTERM sluice turns NotReady, stops accepting, lets
// the write in flight finish and exits 0.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	arrived, finish := make(chan struct{}), make(chan struct{})
	var once sync.Once
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(arrived) })
		<-finish
		w.WriteHeader(http.StatusCreated)
	}))
	defer store.Close()
	p := startProc(t, "SLUICE_UPSTREAM_URL="+store.URL, "SLUICE_SHUTDOWN_TIMEOUT=10s")
	l := newLoader(p.proxy, "drain", 15*time.Second)
	defer l.close()
	got := make(chan outcome, 1)
	go func() { got <- l.write(http.MethodPut, "/put", "drain", []byte("row")) }()
	<-arrived
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness drops while the write is still in flight.
	ready := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if !eventually(5*time.Second, func() bool {
		resp, err := ready.Get(p.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}) {
		t.Fatal("readiness did not drop after SIGTERM")
	}
	close(finish)
	if o := <-got; o.err != nil || o.status != http.StatusCreated {
		t.Errorf("the write in flight got %v, want the store's 201", o)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("sluice exited with %d, want 0; stderr:\n%s", code, p.stderr)
	}
}
