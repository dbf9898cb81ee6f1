package state

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/limiter"
)

// fuzzPolicy is a policy with short timers so that a few fuzzed ticks
// reach every state.
func fuzzPolicy(deadline time.Duration, auto bool) Policy {
	return Policy{
		StallAfter:       5 * time.Second,
		CancelGrace:      3 * time.Second,
		Deadline:         deadline,
		AutoCancel:       auto,
		AutoCancelCauses: StallCauses(),
		QuietAfter:       2 * time.Second,
		BackoffAfter:     2,
		BackoffQuiet:     time.Second,
		Backoff:          limiter.Backoff{Min: time.Second, Max: 8 * time.Second},
	}
}

// FuzzJobMachine feeds a job any sequence of events at any pace (three
// bytes an event: type, parameter, seconds to advance). Step never panics
// (a panic is an illegal transition: a BUG), every transition is in the
// table and chains from the previous one, a terminal state is left only
// by a reopen, and the persisted part survives a JSON round trip and a
// restore. The job is sometimes a stream, sometimes watched by heartbeat.
func FuzzJobMachine(f *testing.F) {
	f.Add([]byte{1, 0, 0, 3, 0, 1, 4, 0, 1, 4, 0, 1, 6, 0, 9, 6, 0, 9, 6, 0, 9, 8, 0, 0, 8, 1, 0})
	f.Add([]byte{1, 0, 0, 7, 1, 0, 9, 0, 0, 9, 1, 0, 8, 1, 0})
	f.Add([]byte{4, 5, 0, 1, 0, 0, 2, 0, 1, 6, 0, 30, 3, 0, 0, 10, 0, 0})
	f.Add([]byte{0, 0, 0, 255, 255, 255, 12, 3, 1})
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) > 3*400 {
			return
		}
		now := t0
		p := fuzzPolicy(0, true)
		if len(script) > 0 && script[0]%3 == 0 {
			p = fuzzPolicy(20*time.Second, script[0]%2 == 0)
		}
		if len(script) > 1 {
			p.Stream = script[1]%3 == 1
			p.HeartbeatInterval = time.Duration(script[1]%4) * time.Second
		}
		j := NewJob("fz", p, now, func() float64 { return 0.5 })
		prev := j.State
		for i := 0; i+2 < len(script); i += 3 {
			typ, param, dt := EventType(script[i]%uint8(numEventTypes+1)), script[i+1], script[i+2]
			now = now.Add(time.Duration(dt) * 250 * time.Millisecond)
			ev := Event{Type: typ}
			switch typ {
			case EvThrottle:
				ev.RetryAfter = time.Duration(param%16) * time.Second
			case EvUpstreamError:
				ev.Timeout = param%2 == 0
				if param%3 == 0 {
					ev.Cause = CauseUpstreamUnreachable
				}
			case EvCancel:
				ev.Force = param%2 == 0
				ev.Reason = strings.Repeat("r", int(param%3))
			case EvActionSucceeded, EvActionFailed:
				ev.Action = Action(param%6 + 1)
				ev.Skipped = param%5 == 0
				ev.Final = param%3 == 0
				ev.Err = "e"
			}
			_, _ = j.Step(ev, now) // errors are fine: a refused request changes nothing
			for _, tr := range j.TakeTransitions() {
				if tr.From != prev || !Legal(tr.From, tr.To) {
					t.Fatalf("event %d (%v): transition %s → %s after %s", i/3, ev.Type, tr.From, tr.To, prev)
				}
				prev = tr.To
			}
			if prev != j.State {
				t.Fatalf("event %d: state %s without a transition from %s", i/3, j.State, prev)
			}
			if len(j.History) > HistoryLen || len(j.Attempts) > AttemptsLen {
				t.Fatalf("unbounded lists: %d history, %d attempts", len(j.History), len(j.Attempts))
			}
		}
		b, err := json.Marshal(j.Snapshot())
		if err != nil {
			t.Fatal(err)
		}
		var ms MachineState
		if err := json.Unmarshal(b, &ms); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		r := RestoreJob("fz", ms, p, now, nil)
		if r.State != j.State && !(j.State == Stalled && j.StallCause == CauseLoaderIdle && r.State == Idle) ||
			r.Force != j.Force || r.Reopen != j.Reopen || len(r.History) < len(j.History) {
			t.Fatalf("restore: %s force %v, want %s force %v", r.State, r.Force, j.State, j.Force)
		}
		// A restored job resumes only the action of its state.
		want := map[State][]Action{Cancelling: {ActAbortInflight, ActRunCancel}, Cleaning: {ActRunCleanup}}[r.State]
		if got := r.Resume(); !slices.Equal(got, want) {
			t.Fatalf("restored %s resumes %v, want %v", r.State, got, want)
		}
		// A terminal job stays terminal whatever comes but a reopen, which
		// a cancelled or failed one takes.
		if j.State.Terminal() {
			final := j.State
			for typ := EventType(1); typ < numEventTypes; typ++ {
				if typ == EvReopen {
					continue
				}
				_, _ = j.Step(Event{Type: typ, Action: ActRunCancel}, now.Add(time.Hour))
				if j.State != final {
					t.Fatalf("terminal %s left for %s on %v", final, j.State, typ)
				}
			}
			_, err := j.Step(Event{Type: EvReopen}, now.Add(time.Hour))
			if (final == Completed) != (err != nil) || err == nil && (j.State != Running || j.Force || j.Reopen) {
				t.Fatalf("reopen of %s: %v, then %s (force %v, reopen %v)", final, err, j.State, j.Force, j.Reopen)
			}
		}
	})
}

// FuzzRecordRestore: a stored record, whatever its JSON says, either is
// refused when the manager loads it or gives a manager that works: its jobs
// can be read, listed, ticked, written to and cancelled without a panic.
func FuzzRecordRestore(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","state":"running","since":"2025-03-01T12:00:00Z","created":"2025-03-01T12:00:00Z"}`,
		`{"id":"b","state":"cleaning","force":true,"since":"2025-03-01T12:00:00Z","settings":{"cleanup":{"kind":"http","url":"http://s/${JOB}"}}}`,
		`{"id":"c","state":"backoff","hold":true,"history":[{"from":"running","to":"throttled"},{"from":"throttled","to":"backoff"}]}`,
		`{"id":"d","state":"stalled","checkpoints":[{"seq":3,"data":{"o":1}},{"seq":1,"data":null}],"totals":{"requests":-5}}`,
		`{"id":"e","state":"cancelled","since":"0001-01-01T00:00:00Z"}`,
		`{"id":"h","state":"stalled","stall_cause":"loader_idle","settings":{"auto_cancel":true}}`,
		`{"id":"i","state":"idle","settings":{"heartbeat_interval":"1s","auto_cancel_causes":["loader_idle"]}}`,
		`{"id":"default","state":"cleaning","reopen":true}`,
		`{"id":"k","state":"failed","opened":"2025-03-01T12:00:00Z","settings":{"auto_cancel_causes":["nope"]}}`,
		`{"id":"../x","state":"running"}`, `{"id":"f","state":"nope"}`, `{"id":"g","state":99}`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec Record
		if json.Unmarshal(raw, &rec) != nil {
			return // the store's Load reports it as corrupt
		}
		// Never run what a fuzzed record asks for: no commands, and HTTP
		// actions and probes fail at once without touching the network.
		for _, a := range []**ActionSpec{&rec.Settings.Cancel, &rec.Settings.Cleanup} {
			if *a != nil && (*a).Kind != KindHTTP {
				*a = nil
			}
		}
		store := &MemStore{}
		if err := store.Put(rec); err != nil {
			return
		}
		clk := &wallClock{t: t0}
		m, err := NewManager(Config{Store: store, Now: clk.now, HTTPClient: &http.Client{Transport: refuseRT{}},
			ActionTimeout: time.Millisecond, ActionRetries: -1, DefaultJob: "default"})
		if err != nil {
			return // refused at load: fine
		}
		defer m.Close()
		id := rec.ID
		_, _ = m.Get(id)
		_ = m.List()
		now := clk.advance(time.Hour)
		m.Tick(now)
		if _, release, err := m.Admit(context.Background(), id); err == nil {
			m.Observe(id, Observation{Kind: ObsOK, Bytes: 1, Items: -1})
			release()
		}
		_, _ = m.ReportProgress(id, Progress{Records: 1, Checkpoint: json.RawMessage(`{"o":2}`)})
		_, _ = m.Cancel(id, true, "fuzz")
		m.Tick(clk.advance(time.Hour))
		if v, err := m.Get(id); err == nil && v.State >= numStates {
			t.Fatalf("job %q in invalid state %d", id, v.State)
		}
		_, _ = m.Reopen(id, "fuzz")
		_, _ = m.Complete(id)
		_, _ = m.Delete(id)
		m.Tick(clk.advance(time.Hour))
	})
}

// refuseRT fails every request without a connection.
type refuseRT struct{}

func (refuseRT) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("fuzz: no network")
}

// FuzzActionRequest: for every id the API accepts and any template that
// validates, the expanded request keeps the template's scheme and host,
// the id stays inside one path segment and one query value, and no header
// gains a line break.
func FuzzActionRequest(f *testing.F) {
	for _, s := range []struct{ url, header, body, id string }{
		{"http://store/jobs/${JOB}/cancel?job=${JOB}", "Bearer ${JOB}", `{"job":"${JOB}"}`, "load-1"},
		{"https://store:9200/_tasks/${JOB}:1/_cancel", "${JOB}", "", "a:b.c-d_e"},
		{"http://store/${JOB}${JOB}", "x", "${JOB}", "Z"},
		{"http://store/a?x=${JOB}#${JOB}", "", "", "9"},
	} {
		f.Add(s.url, s.header, s.body, s.id)
	}
	f.Fuzz(func(t *testing.T, rawURL, header, body, id string) {
		if !ValidJobID(id) {
			return
		}
		spec := &ActionSpec{Kind: KindHTTP, URL: rawURL, Headers: map[string]string{"X-Job": header}, Body: body}
		if spec.Validate() != nil {
			return
		}
		tmpl, err := url.Parse(strings.ReplaceAll(rawURL, JobPlaceholder, "x"))
		if err != nil {
			return
		}
		req, err := spec.request(id)
		if err != nil {
			return // refused at run time (a header that would break): fine
		}
		if req.URL.Scheme != tmpl.Scheme || req.URL.Hostname() != tmpl.Hostname() || req.URL.Port() != tmpl.Port() {
			t.Fatalf("id %q moved %q to %s://%s", id, rawURL, req.URL.Scheme, req.URL.Host)
		}
		for k, vs := range req.Header {
			for _, v := range vs {
				if strings.ContainsAny(k+v, "\r\n\x00") {
					t.Fatalf("id %q: header %q: %q", id, k, v)
				}
			}
		}
		// Segments and query values: as many as the template has.
		want := strings.Count(tmpl.EscapedPath(), "/")
		if got := strings.Count(req.URL.EscapedPath(), "/"); got != want {
			t.Fatalf("id %q: %q has %d path separators, the template %d", id, req.URL, got, want)
		}
		if len(req.URL.Query()) != len(tmpl.Query()) {
			t.Fatalf("id %q: query %v, template's %v", id, req.URL.Query(), tmpl.Query())
		}
		// Nor a dot segment that a store normalising the path would
		// resolve ("/jobs/../_cancel" is "/_cancel").
		if path.Clean(tmpl.Path) == tmpl.Path && path.Clean(req.URL.Path) != req.URL.Path {
			t.Fatalf("id %q: path %q normalises to %q", id, req.URL.Path, path.Clean(req.URL.Path))
		}
	})
}
