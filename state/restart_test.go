package state

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestRestartInEachState: a restart with a job in any state changes
// nothing by itself: the job is in the same state afterwards, with the same
// history, and no action runs for it, up to a stall window later. Only an
// action that was under way (cancelling, cleaning) runs again, as it must
// to finish. The one change on purpose: a job stalled because its loader
// went quiet, which is idle now.
func TestRestartInEachState(t *testing.T) {
	type want struct {
		state State
		calls []string
	}
	cases := map[string]struct {
		ms       MachineState
		settings Settings
		want     want
	}{}
	for _, s := range States() {
		ms := MachineState{State: s, Since: t0, Created: t0, Reason: "before", History: []Transition{{From: Pending, To: s, Reason: "before", At: t0}}}
		w := want{state: s}
		switch s {
		case Stalled:
			ms.StallCause = CauseStoreThrottling
		case Backoff:
			ms.Hold = true
		case Cancelling:
			w = want{Cancelled, []string{"cancel", "clear"}}
		case Cleaning:
			w = want{Cancelled, []string{"clear"}}
		}
		cases[s.String()] = struct {
			ms       MachineState
			settings Settings
			want     want
		}{ms, Settings{}, w}
	}
	quiet := MachineState{State: Stalled, StallCause: CauseLoaderIdle, Since: t0, Created: t0, Stalls: 1}
	cases["stalled-quiet"] = struct {
		ms       MachineState
		settings Settings
		want     want
	}{quiet, Settings{}, want{state: Idle}}
	cases["stalled-hung"] = struct {
		ms       MachineState
		settings Settings
		want     want
	}{quiet, Settings{HeartbeatInterval: time.Minute}, want{state: Stalled}}
	stream := MachineState{State: Cleaning, Reopen: true, Since: t0, Created: t0}
	cases["default"] = struct {
		ms       MachineState
		settings Settings
		want     want
	}{stream, Settings{}, want{Running, []string{"clear"}}}

	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &MemStore{}
				s := tc.settings
				s.Cancel, s.Cleanup = pegasusActions().Cancel, pegasusActions().Cleanup
				if err := st.Put(Record{ID: name, MachineState: tc.ms, Settings: s}); err != nil {
					t.Fatal(err)
				}
				api := &storeAPI{}
				cfg := Config{Store: st, HTTPClient: &http.Client{Transport: api}, DefaultJob: "default",
					DefaultJobAutoCancelCauses: StallCauses()}
				cfg.Defaults.AutoCancelCauses = StallCauses()
				m := newTestManager(t, cfg)
				defer m.Close()
				restart := time.Now()
				synctest.Wait()
				for d := time.Duration(0); d < DefaultStallAfter; d += time.Second {
					m.Tick(restart.Add(d))
				}
				synctest.Wait()
				v := mustGet(t, m, name)
				if v.State != tc.want.state {
					t.Fatalf("%s after a restart: %s (%s), want %s", name, v.State, v.Reason, tc.want.state)
				}
				var calls []string
				for _, c := range api.Calls() {
					calls = append(calls, c[strings.LastIndex(c, "/")+1:])
				}
				for i, c := range calls {
					calls[i], _, _ = strings.Cut(c, "?")
				}
				if !slices.Equal(calls, tc.want.calls) {
					t.Fatalf("%s: store calls %q, want %q", name, calls, tc.want.calls)
				}
				if tc.want.calls == nil && tc.want.state == tc.ms.State && !sameHistory(v.History, tc.ms.History) {
					t.Fatalf("%s: history %+v, want %+v", name, v.History, tc.ms.History)
				}
				if s := storedState(t, st, name); s != tc.want.state {
					t.Fatalf("%s: stored %s, want %s", name, s, tc.want.state)
				}
			})
		})
	}
}

// oldRecords are job records as the version before idle jobs wrote them
// (no idle state, no opened, reopen, auto_cancel_causes or
// heartbeat_interval; loader_idle was a stall cause of any quiet job).
var oldRecords = map[string]string{
	// A backfill that finished without calling complete, stalled and
	// in its grace when sluice stopped, with a cleanup that deletes its
	// data.
	"backfill": `{"id":"backfill","state":"stalled","since":"1999-12-31T12:15:00Z","reason":"no_progress",
		"stall_cause":"loader_idle","created":"1999-12-31T12:00:00Z","stalls":1,
		"history":[{"from":"pending","to":"running","reason":"first_write","at":"1999-12-31T12:00:00Z"},
			{"from":"running","to":"stalled","reason":"no_progress","at":"1999-12-31T12:15:00Z"}],
		"settings":{"stall_after":"5m","cancel_grace":"5m","auto_cancel":true,
			"cleanup":{"kind":"http","method":"POST","url":"http://vm/api/v1/admin/tsdb/delete_series?match[]={job=\"${JOB}\"}"}},
		"totals":{"requests":120,"bytes":4096000,"items":0,"throttled":0,"timeouts":0,"errors":0},
		"loader":{"records":0,"bytes":0},"last_progress":"1999-12-31T12:10:00Z"}`,
	// A job the store throttled for good.
	"throttled": `{"id":"throttled","state":"stalled","since":"1999-12-31T12:15:00Z","reason":"no_progress",
		"stall_cause":"store_throttling","created":"1999-12-31T12:00:00Z","stalls":1,
		"settings":{},"totals":{"requests":3,"bytes":300,"items":0,"throttled":500,"timeouts":0,"errors":0},
		"loader":{"records":0,"bytes":0},"last_progress":"1999-12-31T12:10:00Z"}`,
	// A load the store runs itself, watched by a probe.
	"probed": `{"id":"probed","state":"stalled","since":"1999-12-31T12:15:00Z","reason":"no_progress",
		"stall_cause":"loader_idle","created":"1999-12-31T12:00:00Z","stalls":1,
		"settings":{"probe_url":"http://pegasus/status/${JOB}","probe_pointer":"/progress"},
		"totals":{"requests":0,"bytes":0,"items":0,"throttled":0,"timeouts":0,"errors":0},
		"loader":{"records":0,"bytes":0,"probe_value":42},"last_progress":"1999-12-31T12:10:00Z"}`,
	// The default job, cancelled after a quiet spell.
	"default": `{"id":"default","state":"cancelled","since":"1999-12-31T12:25:00Z","reason":"cleanup skipped: no action configured",
		"stall_cause":"loader_idle","created":"1999-12-31T12:00:00Z","stalls":1,
		"attempts":[{"action":"cancel","n":0,"at":"1999-12-31T12:25:00Z","duration_ns":0,"result":"skipped"}],
		"settings":{},"totals":{"requests":10,"bytes":100,"items":0,"throttled":0,"timeouts":0,"errors":0},
		"loader":{"records":0,"bytes":0},"last_progress":"1999-12-31T12:10:00Z"}`,
	"flowing": `{"id":"flowing","state":"running","since":"1999-12-31T12:00:00Z","reason":"first_write",
		"created":"1999-12-31T12:00:00Z","settings":{"deadline":"2h"},
		"totals":{"requests":10,"bytes":100,"items":0,"throttled":0,"timeouts":0,"errors":0},
		"loader":{"records":0,"bytes":0},"last_progress":"1999-12-31T12:30:00Z"}`,
}

// TestOldRecordsLoad: records written by the previous version load from
// both stores. The quiet backfill becomes idle (said in its history and
// written back) and is never cleaned up; the other jobs are as they were;
// and nothing runs because of the restart.
func TestOldRecordsLoad(t *testing.T) {
	for _, kind := range []string{"mem", "bolt"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			synctest.Test(t, func(t *testing.T) {
				var st Store
				switch kind {
				case "mem":
					ms := &MemStore{recs: map[string][]byte{}}
					for id, raw := range oldRecords {
						ms.recs[id] = []byte(raw)
					}
					st = ms
				case "bolt":
					bs, err := OpenBolt(dir)
					if err != nil {
						t.Fatal(err)
					}
					err = bs.db.Update(func(tx *bolt.Tx) error {
						for id, raw := range oldRecords {
							if err := tx.Bucket(bucketJobs).Put([]byte(id), []byte(raw)); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
					st = bs
				}
				api := &storeAPI{status: func(string) int { return http.StatusServiceUnavailable }} // the probe reads nothing
				m := newTestManager(t, Config{Store: st, HTTPClient: &http.Client{Transport: api}, DefaultJob: "default"})
				stop := running(t, m)
				defer stop()
				restart := time.Now()
				synctest.Wait()
				for id, want := range map[string]struct {
					state State
					cause StallCause
				}{
					"backfill":  {Idle, ""},
					"throttled": {Stalled, CauseStoreThrottling},
					"probed":    {Stalled, CauseProbeNoProgress},
					"default":   {Cancelled, CauseLoaderIdle},
					"flowing":   {Running, ""},
				} {
					v := mustGet(t, m, id)
					if v.State != want.state || v.StallCause != want.cause {
						t.Errorf("%s: %s (%q), want %s (%q)", id, v.State, v.StallCause, want.state, want.cause)
					}
				}
				b := mustGet(t, m, "backfill")
				if last := b.History[len(b.History)-1]; last.From != Stalled || last.To != Idle || !last.At.Equal(restart) {
					t.Errorf("backfill: history %+v, want stalled → idle at the restart", b.History)
				}
				if b.Totals.Requests != 120 || b.Settings.Cleanup == nil || b.Stalls != 1 {
					t.Errorf("backfill: %+v", b)
				}
				// The default job, cancelled for a quiet spell by the old
				// version, can be reopened, and takes writes.
				if v, err := m.Reopen("default", "upgrade"); err != nil || v.State != Running {
					t.Errorf("reopen default: %s, %v", v.State, err)
				}
				write(t, m, "default", ack)
				m.Tick(restart) // write back
				if s := storedState(t, st, "backfill"); s != Idle {
					t.Errorf("backfill stored %s, want idle", s)
				}
				// A day: the backfill is never cleaned up; the job the store
				// throttled is cancelled a full stall window and grace after
				// the restart, as before.
				time.Sleep(24 * time.Hour)
				synctest.Wait()
				if v := mustGet(t, m, "backfill"); v.State != Idle {
					t.Errorf("backfill a day later: %s", v.State)
				}
				v := mustGet(t, m, "throttled")
				i := slices.Index(historyTo(v), Cancelling)
				if i < 0 || v.History[i].At.Sub(restart) < DefaultStallAfter+DefaultCancelGrace-time.Second {
					t.Errorf("throttled: %s, history %+v", v.State, v.History)
				}
				for _, c := range api.Calls() {
					if strings.Contains(c, "delete_series") || !strings.Contains(c, "pegasus/status/probed") {
						t.Errorf("store call %s after loading old records", c)
					}
				}
			})
		})
	}
}

// TestOldSettingsJSON: settings written before auto_cancel_causes and
// heartbeat_interval inherit both; written after, an empty list stays
// empty (no cause cancels) rather than turning into "inherit".
func TestOldSettingsJSON(t *testing.T) {
	var old Settings
	if err := json.Unmarshal([]byte(`{"stall_after":"90s","auto_cancel":true}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.AutoCancelCauses != nil || old.HeartbeatInterval != 0 {
		t.Fatalf("old settings: %+v", old)
	}
	for _, causes := range [][]StallCause{{}, {CauseUpstreamErrors, CauseLoaderIdle}} {
		in := Settings{AutoCancelCauses: causes, HeartbeatInterval: 30 * time.Second}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var back Settings
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.AutoCancelCauses == nil || !slices.Equal(back.AutoCancelCauses, causes) || back.HeartbeatInterval != 30*time.Second {
			t.Errorf("%s: round trip %+v", b, back)
		}
	}
	bad := Settings{AutoCancelCauses: []StallCause{"loader_hung"}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "loader_hung") {
		t.Errorf("unknown cause: %v", err)
	}
	for _, list := range []string{"store_throttling,upstream_timeouts", " upstream_errors , loader_idle ", "none", ""} {
		got, err := ParseStallCauses(list)
		if err != nil || got == nil {
			t.Errorf("ParseStallCauses(%q) = %v, %v", list, got, err)
		}
	}
	if _, err := ParseStallCauses("store_throttling,loader_hung"); err == nil || !strings.Contains(err.Error(), `"loader_hung"`) {
		t.Errorf("ParseStallCauses with an unknown name: %v", err)
	}
}
