// Package cli is the client side of the sluice command: `sluice status`,
// `sluice jobs …` and `sluice top`, which call a running sidecar's admin
// API and print what it answers. It is a program that uses the library's
// types, not part of it.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/state"
)

// Run runs `sluice status` and `sluice jobs …` against a running
// sidecar's admin API (SLUICE_ADMIN_URL, with SLUICE_ADMIN_TOKEN if set) and
// returns the exit status: 0, 1 when the call failed, 2 for bad usage. -h or
// --help anywhere prints the command's usage to stdout and calls nothing.
func Run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd, rest := args[0], args[1:]
	name := cmd
	if cmd == "jobs" && len(rest) > 0 && !isHelpFlag(rest[0]) {
		name = "jobs " + rest[0]
		if rest[0] == "help" {
			name = "jobs"
		}
	}
	usage, known := usages[name]
	if known && (wantsHelp(rest) || name == "jobs" && len(rest) > 0 && rest[0] == "help") {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if cmd == "jobs" && len(rest) == 0 {
		fmt.Fprint(stderr, usages["jobs"])
		return 2
	}
	if !known {
		fmt.Fprintf(stderr, "sluice jobs: unknown subcommand %q (list, show, cancel, complete, reopen, delete)\n", rest[0])
		return 2
	}
	sub := ""
	if cmd == "jobs" {
		sub, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("sluice "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	force := fs.Bool("force", false, "cancel: force (like cancel_bulk_load -f)")
	// Flags may come before or after the job id.
	var pos []string
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		rest = fs.Args()
		if len(rest) > 0 {
			pos, rest = append(pos, rest[0]), rest[1:]
		}
	}
	if *force && sub != "cancel" {
		// The flag set is shared, but only cancel has a force: sluice jobs
		// delete ID --force would otherwise look like a forced delete.
		fmt.Fprintf(stderr, "sluice %s: --force applies to sluice jobs cancel only\n\n%s", name, usage)
		return 2
	}
	if (cmd == "status" || sub == "list") && len(pos) > 0 {
		// An argument would be dropped while the command answers
		// something else (jobs list ID for jobs show ID): say so.
		fmt.Fprintf(stderr, "sluice %s: unexpected argument %q\n\n%s", name, pos[0], usage)
		return 2
	}
	base := sidecar.AdminBaseURL(getenv("SLUICE_ADMIN_URL"))
	if base == "" {
		base = "http://127.0.0.1:9090"
	}
	c := &adminClient{base: strings.TrimRight(base, "/"), token: getenv("SLUICE_ADMIN_TOKEN"),
		http: &http.Client{Timeout: 10 * time.Second}}

	needID := func() (string, bool) {
		if len(pos) != 1 {
			fmt.Fprint(stderr, usage)
			return "", false
		}
		return pos[0], true
	}
	var (
		out   json.RawMessage
		err   error
		print func(w io.Writer, raw json.RawMessage, now time.Time) error
	)
	switch {
	case cmd == "status":
		out, err = c.do("GET", "/v1/status", nil)
		print = printStatus
	case sub == "list":
		out, err = c.do("GET", "/v1/jobs", nil)
		print = printJobList
	case sub == "show":
		id, ok := needID()
		if !ok {
			return 2
		}
		out, err = c.do("GET", "/v1/jobs/"+url.PathEscape(id), nil)
		print = printJob
	case sub == "cancel":
		id, ok := needID()
		if !ok {
			return 2
		}
		out, err = c.do("POST", "/v1/jobs/"+url.PathEscape(id)+"/cancel", map[string]any{"force": *force})
		print = printJob
	case sub == "complete":
		id, ok := needID()
		if !ok {
			return 2
		}
		out, err = c.do("POST", "/v1/jobs/"+url.PathEscape(id)+"/complete", nil)
		print = printJob
	case sub == "reopen":
		// A cancelled or failed job takes writes again.
		id, ok := needID()
		if !ok {
			return 2
		}
		out, err = c.do("POST", "/v1/jobs/"+url.PathEscape(id)+"/reopen", nil)
		print = printJob
	case sub == "delete":
		// A finished job's record goes; the answer is its last view.
		id, ok := needID()
		if !ok {
			return 2
		}
		out, err = c.do("DELETE", "/v1/jobs/"+url.PathEscape(id), nil)
		print = printJob
	default:
		panic("BUG: sluice " + name + " has a usage and no call")
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice:", err)
		return 1
	}
	if *asJSON {
		if !json.Valid(out) {
			// Something other than the admin API answered: a script
			// reading stdout must not take its page for the answer.
			fmt.Fprintf(stderr, "sluice: unexpected answer from %s (SLUICE_ADMIN_URL): not JSON\n", c.shown())
			return 1
		}
		var buf bytes.Buffer
		if json.Indent(&buf, out, "", "  ") == nil {
			out = buf.Bytes()
		}
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	if err := print(stdout, out, c.now()); err != nil {
		fmt.Fprintln(stderr, "sluice: unexpected answer:", err)
		return 1
	}
	return 0
}

// isHelpFlag reports whether arg asks for help. The flag package takes
// -h and -help with one dash or two; a job id never starts with a dash.
func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

func wantsHelp(args []string) bool {
	return slices.ContainsFunc(args, isHelpFlag)
}

const adminEnv = `
environment:
  SLUICE_ADMIN_URL    the sidecar's admin API (default http://127.0.0.1:9090;
                      a bare host:port means http://host:port)
  SLUICE_ADMIN_TOKEN  bearer token; the sidecar asks for it on cancel, complete,
                      reopen and delete when it has one
`

const jsonFlag = `
flags:
  --json  print the admin API's answer as JSON instead of a table
`

// usages are the usage texts of `sluice status` and of `sluice jobs` and
// its subcommands, by command; a command is known if it has one.
var usages = map[string]string{
	"status": `usage: sluice status [--json]

Shows the running sidecar's readiness, upstream, store profile, limiter
phase, rate and concurrency limits, queue, latency, attempts and jobs.
` + jsonFlag + adminEnv,
	"jobs": `usage: sluice jobs COMMAND [ID] [--json]

commands:
  list                 every job: state, since, totals, last progress, reason
  show ID              one job: state, stall cause, totals, recent rate,
                       settings, history, action attempts and checkpoints
  cancel ID [--force]  cancel the job, then run its cleanup
  complete ID          the job is done: completed, no cleanup
  reopen ID            a cancelled or failed job takes writes again
  delete ID            forget a finished job

sluice jobs COMMAND --help says more about each.
` + jsonFlag + adminEnv,
	"jobs list": `usage: sluice jobs list [--json]

Lists every job the sidecar knows: its state and since when, requests,
bytes and items the store acknowledged, its last progress, and why it is in
its state.
` + jsonFlag + adminEnv,
	"jobs show": `usage: sluice jobs show ID [--json]

Shows one job: its state, the stall cause in words and what it leads to,
what the store acknowledged and refused, the recent rate, the effective
settings, the full history of transitions, every run of the cancel and
cleanup actions, and the retained checkpoints.
` + jsonFlag + adminEnv,
	"jobs cancel": `usage: sluice jobs cancel ID [--force] [--json]

Cancels the job: new writes are refused, writes in flight are aborted, the
cancel action runs, then the cleanup action. Prints the job as it is then.

flags:
  --force  run the cleanup even if the cancel action fails (like
           cancel_bulk_load -f)
  --json   print the admin API's answer as JSON instead of a table
` + adminEnv,
	"jobs complete": `usage: sluice jobs complete ID [--json]

Declares the job done: it is completed, refuses further writes, and no
cleanup runs.
` + jsonFlag + adminEnv,
	"jobs reopen": `usage: sluice jobs reopen ID [--json]

Lets a cancelled or failed job take writes again, once what stopped it is
put right.
` + jsonFlag + adminEnv,
	"jobs delete": `usage: sluice jobs delete ID [--json]

Forgets a finished (completed, cancelled or failed) job, so that its id may
be used again; prints its last view.
` + jsonFlag + adminEnv,
}

type adminClient struct {
	base, token string
	http        *http.Client
	// ctx, if set, ends every call (sluice top's Ctrl-C).
	ctx context.Context
	// skew is how far the sidecar's clock is ahead of this machine's, by
	// the Date of its latest answer; 0 within maxSkewIgnored.
	skew time.Duration
}

// maxSkewIgnored is the clock difference the commands ignore: a Date
// header says whole seconds, so a smaller difference is its rounding.
const maxSkewIgnored = 2 * time.Second

// now is the sidecar's time as well as this machine can tell: ages the
// commands print ("5s ago") are counted from it, since the operator's
// machine (behind kubectl port-forward) may be minutes off the pod's.
func (c *adminClient) now() time.Time { return time.Now().Add(c.skew) }

// learnSkew reads the sidecar's clock from an answer's Date header.
func (c *adminClient) learnSkew(h http.Header, received time.Time) {
	d, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return
	}
	// The header is truncated to the second: the middle of that second.
	skew := d.Add(500 * time.Millisecond).Sub(received)
	if skew.Abs() <= maxSkewIgnored {
		skew = 0
	}
	c.skew = skew
}

// shown is the admin API's URL as the commands show it: credentials in
// SLUICE_ADMIN_URL (for a proxy in front of the API) hidden. Errors of
// net/url and net/http quote the whole URL, so they are shown without it.
func (c *adminClient) shown() string { return redact.URL(c.base) }

// maxAnswer bounds what the client reads of an answer.
const maxAnswer = 16 << 20

func (c *adminClient) do(method, path string, body any) (json.RawMessage, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx := c.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("the admin API's URL %s (SLUICE_ADMIN_URL): %w", c.shown(), redact.URLError(err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin API at %s (SLUICE_ADMIN_URL): %s %s: %w", c.shown(), method, path, redact.URLError(err))
	}
	defer resp.Body.Close()
	c.learnSkew(resp.Header, time.Now())
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxAnswer {
		// Cut short it would read as a broken answer, or with --json be
		// printed as if it were the whole one.
		return nil, fmt.Errorf("%s %s: the answer is over %d MiB", method, path, maxAnswer>>20)
	}
	if resp.StatusCode >= 300 {
		var e apierror.Body
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			return nil, fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Error, e.Message)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return b, nil
}

func printStatus(w io.Writer, raw json.RawMessage, now time.Time) error {
	var s admin.Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	now = sidecarNow(s, now)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("readiness", s.Readiness)
	row("upstream", s.Upstream)
	row("profile", s.Profile)
	row("phase", s.Limiter.Phase)
	row("rate limit", fmt.Sprintf("%.1f %s/s", s.Limiter.RateLimit, s.RateUnit))
	row("concurrency", fmt.Sprintf("%d in flight / %d limit", s.Limiter.InFlight, s.Limiter.Concurrency))
	row("queue", s.Limiter.Queued)
	for _, c := range s.Limiter.Classes {
		row("class "+c.Priority, fmt.Sprintf("%d queued, %d granted", c.Queued, c.Grants))
	}
	for _, f := range s.Limiter.Flows {
		row("job "+orDash(f.Job), fmt.Sprintf("%s, weight %g: %s of recent grants, mean wait %s, %d queued",
			f.Priority, f.Weight, shareCell(f.Share), waitCell(f.QueueWaitSeconds), f.Queued))
	}
	if !s.Limiter.PausedUntil.IsZero() && s.Limiter.PausedUntil.After(now) {
		row("paused until", s.Limiter.PausedUntil.Format(time.RFC3339))
	}
	if !s.Limiter.LastThrottle.IsZero() {
		row("last throttle", fmt.Sprintf("%s (%s)", s.Limiter.LastThrottle.Format(time.RFC3339), s.Limiter.LastReason))
	}
	row("latency", fmt.Sprintf("baseline %s, recent %s", s.Limiter.LatencyBaseline, s.Limiter.LatencyRecent))
	if s.Scopes != nil {
		row("scopes", fmt.Sprintf("%d with a limiter of their own (at most %d), %d evicted, %d retired",
			len(s.Scopes.Active), s.Scopes.Max, s.Scopes.Evictions, s.Scopes.Retired))
		for _, sc := range s.Scopes.Active {
			v := fmt.Sprintf("%s, %.1f %s/s, %d in flight / %d limit, %d queued, %d throttles",
				sc.Phase, sc.RateLimit, s.RateUnit, sc.InFlight, sc.Concurrency, sc.Queued, sc.Throttles)
			if !sc.LastThrottle.IsZero() {
				v += fmt.Sprintf(", last %s (%s)", sc.LastThrottle.Format(time.RFC3339), sc.LastReason)
			}
			row("scope "+oneLine(sc.Scope), v)
		}
	}
	if m, ok := s.Signals["attempts_by_kind"].(map[string]any); ok {
		row("attempts", joinCounts(m))
	}
	row("jobs", joinCounts(toAnyMap(s.Jobs)))
	row("uptime", s.Uptime)
	if err := tw.Flush(); err != nil || s.Fleet == nil {
		return err
	}
	return printFleet(w, s.Fleet, s.RateUnit, now)
}

// sidecarNow is the sidecar's time when it answered s, which a sidecar
// of this version says to the millisecond; else fallback, the time as the
// client reckons it.
func sidecarNow(s admin.Status, fallback time.Time) time.Time {
	if s.Now.IsZero() {
		return fallback
	}
	return s.Now
}

func toAnyMap(m map[string]int) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func joinCounts(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if f, ok := v.(float64); ok && f == 0 {
			continue
		}
		if n, ok := v.(int); ok && n == 0 {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := fmt.Sprint(m[k])
		if f, ok := m[k].(float64); ok {
			// A count decoded from JSON is a float64, which %v prints in
			// exponent notation from a million on (1.234567e+06).
			v = strconv.FormatFloat(f, 'f', -1, 64)
		}
		parts[i] = k + "=" + v
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func printJobList(w io.Writer, raw json.RawMessage, now time.Time) error {
	var l struct {
		Jobs []state.JobSummary `json:"jobs"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATE\tSINCE\tCLASS\tWEIGHT\tSHARE\tWAIT\tREQUESTS\tBYTES\tITEMS\tPROGRESS\tETA\tLAST PROGRESS\tREASON")
	for _, j := range l.Jobs {
		reason := oneLine(j.Reason)
		if j.StallCause != "" {
			reason = strings.TrimSpace(reason + " " + string(j.StallCause))
		}
		var last time.Time
		if j.LastProgress != nil {
			last = *j.LastProgress
		}
		pct, eta := progressCells(j.Progress)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%g\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", j.ID, j.State, ago(j.Since, now),
			orDash(j.Priority), j.Weight, shareCell(j.Share), waitCell(j.QueueWaitSeconds), j.Totals.Requests,
			j.Totals.Bytes, j.Totals.Items, pct, eta, ago(last, now), orDash(reason))
	}
	return tw.Flush()
}

// shareCell is a job's share of the limiter's recent grants, as a
// percentage; waitCell its writes' mean queue wait there.
func shareCell(share float64) string { return fmt.Sprintf("%.1f%%", 100*share) }

func waitCell(seconds float64) string {
	return time.Duration(seconds * float64(time.Second)).Round(10 * time.Microsecond).String()
}

func printJob(w io.Writer, raw json.RawMessage, now time.Time) error {
	var v state.JobView
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	return writeJob(w, v, now)
}

// writeJob prints a job as aligned tables: what it is now, its settings,
// then its history, action attempts and checkpoints in full, oldest
// first. Nothing is printed as JSON: the checkpoints a loader stored are
// shown as key=value pairs.
func writeJob(w io.Writer, v state.JobView, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, val string) { fmt.Fprintf(tw, "%s\t%s\n", k, val) }
	row("job", v.ID)
	row("state", fmt.Sprintf("%s since %s", v.State, when(v.Since, now)))
	if v.Reason != "" {
		row("reason", oneLine(v.Reason))
	}
	if v.StallCause != "" {
		row("stall cause", string(v.StallCause)+": "+causeWords(v.StallCause))
	}
	if v.State == state.Stalled {
		row("remedy", remedy(v, now))
	}
	if v.ProbeAt != nil {
		row("next probe", when(*v.ProbeAt, now))
	}
	if v.Force {
		row("forced", "yes: the cleanup runs even if the cancel action fails")
	}
	if len(v.Labels) > 0 {
		row("labels", joinLabels(v.Labels))
	}
	row("created", when(v.Created, now))
	if v.LastProgress != nil {
		row("last progress", when(*v.LastProgress, now))
	} else {
		row("last progress", "never")
	}
	t := v.Totals
	row("acknowledged", fmt.Sprintf("%d requests, %s, %d items", t.Requests, sizeString(t.Bytes), t.Items))
	row("refused", fmt.Sprintf("%d throttled, %d timed out, %d errors", t.Throttled, t.Timeouts, t.Errors))
	if l := v.Loader; l.Records != 0 || l.Bytes != 0 || l.ProbeValue != 0 {
		reported := fmt.Sprintf("%d records, %s", l.Records, sizeString(l.Bytes))
		if l.ProbeValue != 0 {
			reported += fmt.Sprintf(", probe value %g", l.ProbeValue)
		}
		row("loader reported", reported)
	}
	if p := v.Progress; p != nil {
		pct, eta := progressCells(p)
		row("progress", fmt.Sprintf("%s: %d of %d %s, at %.1f %s/s", pct, p.Done, p.Total, p.Unit, p.RatePerSecond, p.Unit))
		if p.ETAAt != nil {
			eta += " (" + p.ETAAt.UTC().Format(time.RFC3339) + ")"
		}
		row("eta", eta)
	}
	r := v.Rate
	row("recent rate", fmt.Sprintf("%.1f requests/s, %s/s, %.1f items/s, %.1f records/s",
		r.Requests, sizeString(int64(math.Round(r.Bytes))), r.Items, r.Records))
	row("in flight", strconv.Itoa(v.InFlight))
	row("fair queue", fmt.Sprintf("%s, weight %g: %s of recent grants, mean wait %s (longest %s), %d queued",
		orDash(v.Priority), v.Weight, shareCell(v.Share), waitCell(v.QueueWaitSeconds), waitCell(v.QueueWaitMaxSeconds), v.Queued))
	row("stalls", strconv.FormatUint(v.Stalls, 10))
	if err := tw.Flush(); err != nil {
		return err
	}

	s := v.Settings
	fmt.Fprintln(w, "\nsettings")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row("  stall after", s.StallAfter)
	row("  cancel grace", s.CancelGrace)
	row("  deadline", orNone(s.Deadline))
	row("  auto-cancel", autoCancel(s))
	row("  heartbeat interval", orNone(s.HeartbeatInterval))
	if s.Stream {
		row("  stream", "yes: never completes, reopens after a cancel of sluice's own")
	}
	row("  cancel action", actionString(s.Cancel))
	row("  cleanup action", actionString(s.Cleanup))
	if s.ProbeURL != "" {
		row("  progress probe", s.ProbeURL+" at "+orDash(s.ProbePointer))
	} else {
		row("  progress probe", "none")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	table := func(title, header string, n int, line func(i int) string) error {
		if n == 0 {
			fmt.Fprintf(w, "\n%s: none\n", title)
			return nil
		}
		fmt.Fprintf(w, "\n%s\n", title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  "+header)
		for i := range n {
			fmt.Fprintln(tw, "  "+line(i))
		}
		return tw.Flush()
	}
	if err := table("history", "TIME\tFROM → TO\tREASON", len(v.History), func(i int) string {
		h := v.History[i]
		return fmt.Sprintf("%s\t%s → %s\t%s", stamp(h.At), h.From, h.To, orDash(oneLine(h.Reason)))
	}); err != nil {
		return err
	}
	if err := table("action attempts", "ACTION\tATTEMPT\tRESULT\tTIME\tTOOK\tDETAIL", len(v.Attempts), func(i int) string {
		a := v.Attempts[i]
		return fmt.Sprintf("%s\t%d\t%s\t%s\t%s\t%s", a.Action, a.N, a.Result, stamp(a.At),
			a.Duration.Round(time.Millisecond), attemptDetail(a))
	}); err != nil {
		return err
	}
	return table("checkpoints", "SEQ\tTIME\tRECORDS\tBYTES\tDATA", len(v.Checkpoints), func(i int) string {
		c := v.Checkpoints[i]
		return fmt.Sprintf("%d\t%s\t%d\t%s\t%s", c.Seq, stamp(c.At), c.Records, sizeString(c.Bytes), checkpointData(c.Data))
	})
}

// causeWords says what a stall cause means, in the terms of what the job's
// writes got.
func causeWords(c state.StallCause) string {
	switch c {
	case state.CauseStoreThrottling:
		return "the store throttled the job's writes (429, 503 overloaded or refused items) and acknowledged none"
	case state.CauseUpstreamTimeouts:
		return "the job's writes timed out and the store acknowledged none"
	case state.CauseUpstreamErrors:
		return "the store answered the job's writes with errors (5xx, or a 4xx such as an expired credential)"
	case state.CauseUpstreamUnreachable:
		return "the store could not be reached"
	case state.CauseLoaderIdle:
		return "the loader neither wrote nor reported progress within its heartbeat interval: it hung"
	case state.CauseProbeNoProgress:
		return "the progress probe showed no progress, and no write through sluice failed"
	}
	return "a cause this client does not know; the sidecar is newer"
}

// remedy says what happens to a stalled job: a cancel after the cancel
// grace when its cause is among its auto-cancel causes, else only the alert.
func remedy(v state.JobView, now time.Time) string {
	s := v.Settings
	if !s.AutoCancel || !slices.Contains(s.AutoCancelCauses, v.StallCause) {
		return "alert only: " + string(v.StallCause) + " does not cancel this job"
	}
	grace, err := time.ParseDuration(s.CancelGrace)
	if err != nil {
		return "cancelled after the cancel grace (" + s.CancelGrace + ") unless it recovers"
	}
	return "cancelled " + when(v.Since.Add(grace), now) + " unless it recovers"
}

func autoCancel(s state.EffectiveSettings) string {
	switch {
	case !s.AutoCancel:
		return "off: a stall only alerts"
	case len(s.AutoCancelCauses) == 0:
		return "on, for no stall cause: a stall only alerts"
	}
	names := make([]string, len(s.AutoCancelCauses))
	for i, c := range s.AutoCancelCauses {
		names[i] = string(c)
	}
	return "when stalled by " + strings.Join(names, ", ")
}

// actionString shows an action as it would run, its credentials already
// redacted by the sidecar.
func actionString(a *state.ActionSpec) string {
	if a == nil {
		return "none (skipped)"
	}
	if a.Kind == state.KindCommand {
		argv := make([]string, len(a.Argv))
		for i, arg := range a.Argv {
			argv[i] = arg
			if arg == "" || strings.ContainsAny(arg, " \t\n'\"\\") {
				argv[i] = strconv.Quote(arg)
			}
		}
		return "run " + strings.Join(argv, " ")
	}
	method := a.Method
	if method == "" {
		method = http.MethodPost
	}
	out := method + " " + a.URL
	if len(a.Headers) > 0 {
		names := make([]string, 0, len(a.Headers))
		for k := range a.Headers {
			names = append(names, k)
		}
		sort.Strings(names)
		out += ", headers " + strings.Join(names, ", ")
	}
	if a.Body != "" {
		out += ", body " + a.Body
	}
	return out
}

func attemptDetail(a state.Attempt) string {
	var parts []string
	if a.Status != 0 {
		parts = append(parts, fmt.Sprintf("HTTP %d", a.Status))
	}
	if a.ExitCode != nil {
		parts = append(parts, fmt.Sprintf("exit %d", *a.ExitCode))
	}
	if a.Error != "" {
		parts = append(parts, apierror.Truncate(oneLine(a.Error), 200))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ": ")
}

// checkpointData shows a loader's checkpoint: an object as its leaves,
// key=value with dotted paths, in key order; anything else as its value.
func checkpointData(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "-"
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return "-"
	}
	var parts []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(joinPath(prefix, k), x[k])
			}
		case []any:
			for i, e := range x {
				walk(joinPath(prefix, strconv.Itoa(i)), e)
			}
		default:
			val := scalarString(x)
			if prefix != "" {
				val = prefix + "=" + val
			}
			parts = append(parts, val)
		}
	}
	walk("", v)
	if len(parts) == 0 {
		return "-"
	}
	return apierror.Truncate(oneLine(strings.Join(parts, " ")), 200)
}

func joinPath(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func scalarString(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if x == "" || strings.ContainsAny(x, " \t\n\"=") {
			return strconv.Quote(x)
		}
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// oneLine is text a caller sent (a reason, a label, an error) fit for one
// cell of a table: line breaks and tabs would start rows or columns of
// their own, and other control characters (escape sequences) would be
// obeyed by the terminal.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)), " ")
}

func joinLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + oneLine(m[k])
	}
	return strings.Join(parts, ", ")
}

// sizeString shows a byte count in the units the configuration takes.
func sizeString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), -1
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[i])
}

// stamp is a time in a table: to the second, as the sidecar sent it.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// when is a time and how far it is from now.
func when(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d > 0:
		return fmt.Sprintf("%s (%s ago)", stamp(t), d)
	case d < 0:
		return fmt.Sprintf("%s (in %s)", stamp(t), -d)
	}
	return stamp(t) + " (now)"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return max(now.Sub(t), 0).Round(time.Second).String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// progressCells are a job's fraction done and its ETA as the tables show
// them: "-" without a declared total, and the reason when the ETA is
// unknown.
func progressCells(p *state.JobProgress) (pct, eta string) {
	if p == nil {
		return "-", "-"
	}
	pct = fmt.Sprintf("%.1f%%", 100*p.Fraction)
	switch {
	case p.ETASeconds != nil:
		eta = (time.Duration(*p.ETASeconds) * time.Second).String()
	case p.ETAUnknown != "":
		eta = "unknown (" + string(p.ETAUnknown) + ")"
	default:
		eta = "unknown"
	}
	return pct, eta
}
