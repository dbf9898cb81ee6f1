package cli

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/state"
)

var showNow = time.Date(2025, 6, 1, 12, 10, 0, 0, time.UTC)

func showAt(m, s int) time.Time { return time.Date(2025, 6, 1, 12, m, s, 0, time.UTC) }

// stalledJob is a job stalled by throttling, as GET /v1/jobs/{id} answers.
func stalledJob() state.JobView {
	last := showAt(1, 30)
	return state.JobView{
		JobSummary: state.JobSummary{
			ID: "load-7", State: state.Stalled, Since: showAt(7, 0), Reason: "no_progress",
			StallCause: state.CauseStoreThrottling, Labels: map[string]string{"team": "search", "table": "events"},
			Created: showAt(0, 0), LastProgress: &last,
			Totals:   state.Totals{Requests: 1200, Bytes: 5 << 20, Items: 48000, Throttled: 310, Timeouts: 2},
			Loader:   state.LoaderProgress{Records: 47000, Bytes: 5 << 20},
			Rate:     state.Rates{Requests: 0.5, Bytes: 2048, Items: 20},
			Stalls:   1,
			Priority: "bulk", Weight: 2, Share: 0.25, QueueWaitSeconds: 0.0125, QueueWaitMaxSeconds: 0.05, Queued: 3,
		},
		History: []state.Transition{
			{From: state.Pending, To: state.Running, Reason: "first_write", At: showAt(0, 1)},
			{From: state.Running, To: state.Throttled, Reason: "throttled", At: showAt(1, 40)},
			{From: state.Throttled, To: state.Stalled, Reason: "no_progress", At: showAt(7, 0)},
		},
		Checkpoints: []state.Checkpoint{
			{Seq: 3, At: showAt(1, 0), Records: 40000, Bytes: 4 << 20, Data: json.RawMessage(`{"file":"part-0003.csv","offset":40000}`)},
			{Seq: 4, At: showAt(1, 30), Records: 47000, Bytes: 5 << 20, Data: json.RawMessage(`{"offsets":[12,"a b"],"done":false}`)},
		},
		Settings: state.EffectiveSettings{
			StallAfter: "5m0s", CancelGrace: "5m0s", AutoCancel: true,
			AutoCancelCauses: []state.StallCause{state.CauseStoreThrottling, state.CauseUpstreamTimeouts},
			Cancel:           &state.ActionSpec{Kind: state.KindHTTP, URL: "http://pegasus/v1/bulk_load/${JOB}/cancel", Headers: map[string]string{"Authorization": "<redacted>"}},
			Cleanup:          &state.ActionSpec{Kind: state.KindCommand, Argv: []string{"pegasus_shell", "clear bulk", "${JOB}"}},
		},
	}
}

// TestWriteJob: `sluice jobs show` of a stalled job, in full.
func TestWriteJob(t *testing.T) {
	const want = `job              load-7
state            stalled since 2025-06-01T12:07:00Z (3m0s ago)
reason           no_progress
stall cause      store_throttling: the store throttled the job's writes (429, 503 overloaded or refused items) and acknowledged none
remedy           cancelled 2025-06-01T12:12:00Z (in 2m0s) unless it recovers
labels           table=events, team=search
created          2025-06-01T12:00:00Z (10m0s ago)
last progress    2025-06-01T12:01:30Z (8m30s ago)
acknowledged     1200 requests, 5.0 MiB, 48000 items
refused          310 throttled, 2 timed out, 0 errors
loader reported  47000 records, 5.0 MiB
recent rate      0.5 requests/s, 2.0 KiB/s, 20.0 items/s, 0.0 records/s
in flight        0
fair queue       bulk, weight 2: 25.0% of recent grants, mean wait 12.5ms (longest 50ms), 3 queued
stalls           1

settings
  stall after         5m0s
  cancel grace        5m0s
  deadline            none
  auto-cancel         when stalled by store_throttling, upstream_timeouts
  heartbeat interval  none
  cancel action       POST http://pegasus/v1/bulk_load/${JOB}/cancel, headers Authorization
  cleanup action      run pegasus_shell "clear bulk" ${JOB}
  progress probe      none

history
  TIME                  FROM → TO            REASON
  2025-06-01T12:00:01Z  pending → running    first_write
  2025-06-01T12:01:40Z  running → throttled  throttled
  2025-06-01T12:07:00Z  throttled → stalled  no_progress

action attempts: none

checkpoints
  SEQ  TIME                  RECORDS  BYTES    DATA
  3    2025-06-01T12:01:00Z  40000    4.0 MiB  file=part-0003.csv offset=40000
  4    2025-06-01T12:01:30Z  47000    5.0 MiB  done=false offsets.0=12 offsets.1="a b"
`
	var out bytes.Buffer
	if err := writeJob(&out, stalledJob(), showNow); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// TestWriteJobVariants: the parts of a job that only some jobs have.
func TestWriteJobVariants(t *testing.T) {
	one := 1
	for _, tc := range []struct {
		name   string
		change func(v *state.JobView)
		want   []string
	}{
		{"failed, with its attempts", func(v *state.JobView) {
			v.State, v.Since, v.Reason, v.Force = state.Failed, showAt(9, 0), "cancel_failed", true
			v.Attempts = []state.Attempt{
				{Action: "cancel", N: 1, At: showAt(8, 0), Duration: 1500 * time.Millisecond, Result: state.ResultError, Status: 503, Error: "store busy\n  try later"},
				{Action: "cancel", N: 2, At: showAt(8, 5), Duration: 40 * time.Millisecond, Result: state.ResultError, ExitCode: &one},
				{Action: "cleanup", N: 1, At: showAt(8, 6), Result: state.ResultSkipped},
			}
		}, []string{
			"state            failed since 2025-06-01T12:09:00Z (1m0s ago)\n",
			"forced           yes: the cleanup runs even if the cancel action fails\n",
			"action attempts\n" +
				"  ACTION   ATTEMPT  RESULT   TIME                  TOOK  DETAIL\n" +
				"  cancel   1        error    2025-06-01T12:08:00Z  1.5s  HTTP 503: store busy try later\n" +
				"  cancel   2        error    2025-06-01T12:08:05Z  40ms  exit 1\n" +
				"  cleanup  1        skipped  2025-06-01T12:08:06Z  0s    -\n",
		}},
		{"stalled by a cause that only alerts", func(v *state.JobView) {
			v.StallCause = state.CauseUpstreamErrors
		}, []string{"remedy           alert only: upstream_errors does not cancel this job\n"}},
		{"auto-cancel off", func(v *state.JobView) {
			v.Settings.AutoCancel = false
		}, []string{"remedy           alert only:", "auto-cancel         off: a stall only alerts\n"}},
		{"no auto-cancel cause", func(v *state.JobView) {
			v.Settings.AutoCancelCauses = []state.StallCause{}
		}, []string{"auto-cancel         on, for no stall cause: a stall only alerts\n"}},
		{"held, a stream with a probe, never progressed", func(v *state.JobView) {
			probe := showAt(10, 30)
			v.State, v.StallCause, v.ProbeAt, v.LastProgress = state.Backoff, "", &probe, nil
			v.Labels, v.Loader, v.Checkpoints = nil, state.LoaderProgress{}, nil
			v.Settings.Stream, v.Settings.ProbeURL, v.Settings.ProbePointer = true, "http://store/_stats", "/progress"
			v.Settings.Deadline, v.Settings.HeartbeatInterval = "2h0m0s", "1m0s"
			v.Settings.Cancel, v.Settings.Cleanup = nil, nil
		}, []string{
			"next probe       2025-06-01T12:10:30Z (in 30s)\n",
			"last progress    never\n",
			"  deadline            2h0m0s\n",
			"  heartbeat interval  1m0s\n",
			"  stream              yes: never completes, reopens after a cancel of sluice's own\n",
			"  cancel action       none (skipped)\n",
			"  progress probe      http://store/_stats at /progress\n",
			"\ncheckpoints: none\n",
		}},
	} {
		v := stalledJob()
		tc.change(&v)
		var out bytes.Buffer
		if err := writeJob(&out, v, showNow); err != nil {
			t.Fatal(err)
		}
		// Alignment is TestWriteJob's to check; here rows are compared with
		// runs of spaces as one.
		got := squeeze(out.String())
		for _, w := range tc.want {
			if !strings.Contains(got, squeeze(w)) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, got)
			}
		}
		for _, bad := range []string{"<nil>", "map[", `{"`, "[{", "0001-01-01"} {
			if strings.Contains(got, bad) {
				t.Errorf("%s: output shows %q:\n%s", tc.name, bad, got)
			}
		}
		if tc.name != "held, a stream with a probe, never progressed" && strings.Contains(got, "next probe") {
			t.Errorf("%s: a probe slot shown for a job that is not held", tc.name)
		}
	}
}

func squeeze(s string) string {
	return regexp.MustCompile(" +").ReplaceAllString(s, " ")
}

// TestEveryCauseInWords: a new stall cause needs its words here.
func TestEveryCauseInWords(t *testing.T) {
	seen := map[string]state.StallCause{}
	for _, c := range state.StallCauses() {
		w := causeWords(c)
		if w == causeWords("no_such_cause") {
			t.Errorf("stall cause %s has no words", c)
		}
		if other, dup := seen[w]; dup {
			t.Errorf("stall causes %s and %s have the same words", c, other)
		}
		seen[w] = c
	}
}

func TestCheckpointData(t *testing.T) {
	f := func(raw, want string) {
		t.Helper()
		if got := checkpointData(json.RawMessage(raw)); got != want {
			t.Errorf("checkpointData(%s) = %q, want %q", raw, got, want)
		}
	}
	f(``, "-")
	f(`null`, "null")
	f(`{}`, "-")
	f(`"part-7"`, "part-7")
	f(`1e21`, "1000000000000000000000")
	f(`{"a":{"b":1,"c":[true,null]},"s":"x=y"}`, `a.b=1 a.c.0=true a.c.1=null s="x=y"`)
	f(`{"s":""}`, `s=""`)
	f(`{"long":"`+strings.Repeat("x", 300)+`"}`, "long="+strings.Repeat("x", 195)+"…")
}

func TestSizeString(t *testing.T) {
	f := func(n int64, want string) {
		t.Helper()
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
	f(0, "0 B")
	f(1023, "1023 B")
	f(1024, "1.0 KiB")
	f(1536, "1.5 KiB")
	f(5<<20, "5.0 MiB")
	f(3<<40, "3.0 TiB")
	f(1<<62, "4096.0 PiB")
}

// TestPrintStatusScopes: a scoped throttle cuts its scope's limiter, not
// the store's, so `sluice status` lists the scopes that have one.
func TestPrintStatusScopes(t *testing.T) {
	raw := `{"readiness":"ready","rate_unit":"requests","limiter":{"phase":"steady","rate_limit":800},
		"scopes":{"max":64,"evictions":2,"retired":1,"active":[{"scope":"orders","phase":"recovering","rate_limit":45.5,
		"concurrency_limit":4,"in_flight":3,"queue_length":7,"last_throttle":"2026-12-05T02:00:00Z",
		"last_reason":"ProvisionedThroughputExceeded","throttles":12}]}}`
	var b bytes.Buffer
	if err := printStatus(&b, json.RawMessage(raw), showNow); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"1 with a limiter of their own (at most 64), 2 evicted, 1 retired",
		"scope orders", "recovering, 45.5 requests/s, 3 in flight / 4 limit, 7 queued, 12 throttles",
		"last 2026-12-05T02:00:00Z (ProvisionedThroughputExceeded)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := printStatus(&b, json.RawMessage(`{"limiter":{}}`), showNow); err != nil || strings.Contains(b.String(), "scope") {
		t.Errorf("scopes off: %v\n%s", err, b.String())
	}
}

// TestFreeTextStaysInItsCell: a cancel reason or a label value is any text
// a caller sent. A line break or tab in it must not start a row of its own
// or shift the columns, nor an escape sequence reach the terminal.
func TestFreeTextStaysInItsCell(t *testing.T) {
	const odd = "by ops\nload-8  running\tx \x1b[2J\x1b]0;pwned\x07 \u009b31m done"
	v := stalledJob()
	v.State, v.StallCause, v.Reason = state.Cancelled, "", odd
	v.Labels = map[string]string{"note": odd}
	v.History = append(v.History, state.Transition{From: state.Stalled, To: state.Cancelled, Reason: odd, At: showAt(8, 0)})
	clean := func(name, out string, lines int) {
		t.Helper()
		if strings.ContainsAny(out, "\t\x1b\x07\u009b") {
			t.Errorf("%s: a control character reached the output:\n%q", name, out)
		}
		if n := strings.Count(out, "\n"); n != lines {
			t.Errorf("%s: %d lines, want %d:\n%s", name, n, lines, out)
		}
	}
	var b bytes.Buffer
	if err := writeJob(&b, v, showNow); err != nil {
		t.Fatal(err)
	}
	var plain bytes.Buffer
	w := stalledJob()
	w.State, w.StallCause, w.Reason = state.Cancelled, "", "x"
	w.Labels = map[string]string{"note": "x"}
	w.History = append(w.History, state.Transition{From: state.Stalled, To: state.Cancelled, Reason: "x", At: showAt(8, 0)})
	if err := writeJob(&plain, w, showNow); err != nil {
		t.Fatal(err)
	}
	clean("jobs show", b.String(), strings.Count(plain.String(), "\n"))

	raw, _ := json.Marshal(map[string]any{"jobs": []state.JobSummary{v.JobSummary}})
	b.Reset()
	if err := printJobList(&b, raw, showNow); err != nil {
		t.Fatal(err)
	}
	clean("jobs list", b.String(), 2)

	tv := &topView{client: &adminClient{base: "http://127.0.0.1:9090"}}
	d := topData{jobs: []state.JobSummary{v.JobSummary}}
	clean("top line", tv.line(d, showNow)+"\n", 1)
	screen := tv.screen(d, showNow)
	clean("top screen", screen, strings.Count(tv.screen(topData{jobs: []state.JobSummary{w.JobSummary}}, showNow), "\n"))
}

// TestScopeNamesFromPaths: a scope is named by the write's decoded path (a
// key prefix, a table), so it may hold any character: cut to its column it
// stays valid UTF-8, and a control character in it (%0A, %1B in the path)
// neither breaks the table nor reaches the terminal.
func TestScopeNamesFromPaths(t *testing.T) {
	scopes := []admin.ScopeStatus{{Scope: "logs/日本語のテーブル", Phase: "recovering"}, {Scope: "x\n\x1b[2Jy", Phase: "steady"}}
	st := admin.Status{RateUnit: "requests", Scopes: &admin.ScopesStatus{Max: 8, Active: scopes}}
	raw, _ := json.Marshal(st)
	var b bytes.Buffer
	if err := printStatus(&b, raw, showNow); err != nil {
		t.Fatal(err)
	}
	tv := &topView{client: &adminClient{base: "http://127.0.0.1:9090"}}
	for name, out := range map[string]string{"status": b.String(), "top": tv.screen(topData{status: st}, showNow)} {
		if !utf8.ValidString(out) || strings.Contains(out, "\x1b") {
			t.Errorf("%s: invalid UTF-8 or an escape in the output:\n%q", name, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "y") {
				t.Errorf("%s: a scope's line break started a row:\n%s", name, out)
			}
		}
	}
	if got := clip("日本語のテーブル", 5); got != "日本語の…" {
		t.Errorf("clip = %q, want 5 characters", got)
	}
}

// TestPrintStatusLargeCounts: /v1/status carries the attempt counters as
// JSON numbers, which decode to float64; a bulk load passes a million
// attempts within hours, and the count must read as the number it is
// (ok=1234567), not in exponent notation (ok=1.234567e+06), which an
// operator misreads or cannot compare with the metric.
func TestPrintStatusLargeCounts(t *testing.T) {
	raw := `{"limiter":{},"signals":{"attempts_by_kind":{"ok":1234567,"throttled":20000000,"timeout":0}},
		"jobs":{"running":3}}`
	var b bytes.Buffer
	if err := printStatus(&b, json.RawMessage(raw), showNow); err != nil {
		t.Fatal(err)
	}
	if got, want := squeeze(lineOf(b.String(), "attempts")), "attempts ok=1234567 throttled=20000000"; got != want {
		t.Errorf("attempts row %q, want %q\n%s", got, want, b.String())
	}
}
