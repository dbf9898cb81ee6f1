package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/state"
)

const topUsage = `usage: sluice top [--once] [--plain] [--interval 1s]

A live view of a running sidecar, read from its admin API (SLUICE_ADMIN_URL,
default http://127.0.0.1:9090) once a second: the controller's phase and
limits, acknowledged and throttled writes per second, the queue, and the
jobs. It redraws one screen on a terminal and prints one line per refresh
otherwise. It changes nothing, so it needs no SLUICE_ADMIN_TOKEN.

  --once       print one screen and exit (1 if the admin API cannot be read)
  --plain      print one line per refresh even on a terminal
  --interval   time between refreshes (default 1s)
`

// sparkWidth is how many seconds of acknowledged writes the sparkline shows.
const sparkWidth = 60

// clearScreen moves the cursor home and clears the terminal, so each
// refresh draws one screen rather than scrolling.
const clearScreen = "\x1b[H\x1b[2J"

// Top runs `sluice top` and returns the exit status: 0, 1 when --once
// could not read the admin API, 2 for bad usage.
func Top(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice top", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // usage goes where it is asked for, below
	once := fs.Bool("once", false, "")
	plain := fs.Bool("plain", false, "")
	interval := fs.Duration("interval", time.Second, "")
	switch err := fs.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, topUsage)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "sluice top: %v\n\n%s", err, topUsage)
		return 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "sluice top: unexpected argument %q\n\n%s", fs.Arg(0), topUsage)
		return 2
	case *interval < 100*time.Millisecond:
		fmt.Fprintln(stderr, "sluice top: --interval must be at least 100ms")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t := &topView{
		client:   newAdminClient(getenv),
		terminal: !*plain && isTerminal(stdout),
		interval: *interval,
	}
	return t.run(ctx, *once, stdout, stderr)
}

func newAdminClient(getenv func(string) string) *adminClient {
	// As status and jobs read it: a bare host:port is http://host:port.
	base := sidecar.AdminBaseURL(getenv("SLUICE_ADMIN_URL"))
	if base == "" {
		base = "http://127.0.0.1:9090"
	}
	return &adminClient{base: strings.TrimRight(base, "/"), http: &http.Client{Timeout: 5 * time.Second}}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// topView is what `sluice top` keeps between refreshes: the recent
// history, so the sparkline and the bars' scale need one fetch of one
// point a second.
type topView struct {
	client   *adminClient
	terminal bool
	interval time.Duration

	points []admin.Point // the last sparkWidth seconds
	lastT  int64
	noFeed bool // the sidecar has no /v1/history (an older sluice)
}

// topData is one refresh's reading of the admin API.
type topData struct {
	status admin.Status
	jobs   []state.JobSummary
}

func (t *topView) run(ctx context.Context, once bool, stdout, stderr io.Writer) int {
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	// A refresh under way ends with ctx: Ctrl-C never waits for an admin
	// API that does not answer.
	t.client.ctx = ctx
	for {
		d, err := t.read()
		if ctx.Err() != nil {
			return 0
		}
		switch {
		case err != nil && once:
			fmt.Fprintln(stderr, "sluice top:", err)
			return 1
		case err != nil && t.terminal:
			fmt.Fprint(stdout, clearScreen+"sluice top  "+t.client.shown()+"\n\n  "+err.Error()+"\n  (retrying every "+t.interval.String()+"; Ctrl-C to stop)\n")
		case err != nil:
			fmt.Fprintf(stderr, "%s sluice top: %v\n", time.Now().Format("15:04:05"), err)
		case t.terminal:
			fmt.Fprint(stdout, clearScreen+t.screen(d, sidecarNow(d.status, t.client.now())))
		default:
			fmt.Fprintln(stdout, t.line(d, sidecarNow(d.status, t.client.now())))
		}
		if once {
			return 0
		}
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
	}
}

// read fetches the status, the history since the last refresh and the jobs.
func (t *topView) read() (topData, error) {
	var d topData
	raw, err := t.client.do("GET", "/v1/status", nil)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(raw, &d.status); err != nil {
		return d, fmt.Errorf("GET /v1/status: unexpected answer: %w", err)
	}
	// A job list that cannot be read is an error, not an empty list: the
	// screen would say "no jobs" of a sidecar that has some.
	if raw, err = t.client.do("GET", "/v1/jobs", nil); err != nil {
		return d, err
	}
	var l struct {
		Jobs []state.JobSummary `json:"jobs"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return d, fmt.Errorf("GET /v1/jobs: unexpected answer: %w", err)
	}
	d.jobs = l.Jobs
	if !t.noFeed {
		raw, err := t.client.do("GET", "/v1/history?after="+strconv.FormatInt(t.lastT, 10), nil)
		var feed admin.HistoryFeed
		switch {
		case err != nil && strings.Contains(err.Error(), ": 404 "):
			t.noFeed = true
		case err == nil && json.Unmarshal(raw, &feed) == nil:
			t.add(feed.Points)
		}
	}
	return d, nil
}

func (t *topView) add(points []admin.Point) {
	for _, p := range points {
		if p.T > t.lastT {
			t.points, t.lastT = append(t.points, p), p.T
		}
	}
	if n := len(t.points) - sparkWidth; n > 0 {
		t.points = append(t.points[:0], t.points[n:]...)
	}
}

// last is the newest history point, if any.
func (t *topView) last() (admin.Point, bool) {
	if len(t.points) == 0 {
		return admin.Point{}, false
	}
	return t.points[len(t.points)-1], true
}

// screen is the terminal view, laid out like `sluice demo`'s.
func (t *topView) screen(d topData, now time.Time) string {
	s, l := d.status, d.status.Limiter
	var b strings.Builder
	fmt.Fprintf(&b, "sluice top  %s  %s  up %s  %s   (Ctrl-C to stop)\n\n", t.client.shown(), s.Readiness, s.Uptime, now.Format("15:04:05"))
	row := func(k, v string) { fmt.Fprintf(&b, "  %-18s %s\n", k, v) }
	row("upstream", fmt.Sprintf("%s (%s)", s.Upstream, s.Profile))
	controller := l.Phase
	if l.PausedUntil.After(now) {
		controller += " until " + l.PausedUntil.Format("15:04:05")
	}
	if !l.LastThrottle.IsZero() {
		controller += fmt.Sprintf(", last throttle %s ago (%s)", now.Sub(l.LastThrottle).Round(time.Second), l.LastReason)
	}
	row("controller", controller)
	// In bytes the limit and the acknowledged writes have no common
	// scale: only the limit gets a bar.
	bytesUnit := s.RateUnit == "bytes"
	full := t.scale(l.RateLimit, !bytesUnit)
	row("sluice limit", fmt.Sprintf("%-16s %s", perSecond(l.RateLimit, s.RateUnit), bar(l.RateLimit, full)))
	if p, ok := t.last(); ok {
		acked := perSecond(p.Acknowledged, "requests")
		if !bytesUnit {
			acked = fmt.Sprintf("%-16s %s", acked, bar(p.Acknowledged, full))
		}
		row("acknowledged", acked)
		row("throttled", fmt.Sprintf("%.1f/s", p.Throttled))
	} else {
		row("acknowledged", "- (no history yet)")
	}
	row("concurrency", fmt.Sprintf("%d in flight / limit %d", l.InFlight, l.Concurrency))
	row("queue", fmt.Sprintf("%d waiting", l.Queued))
	if len(t.points) > 1 {
		row(fmt.Sprintf("last %ds", len(t.points)), t.spark()+"  acknowledged/s")
		row("", t.throttleMarks()+"  ! = throttled")
	}
	if s.Scopes != nil && len(s.Scopes.Active) > 0 {
		// A scoped throttle cuts its scope's limiter, not the store's:
		// without these rows a throttled table would not show here.
		const maxScopes = 5
		for i, sc := range s.Scopes.Active {
			if i == maxScopes {
				row("", fmt.Sprintf("… and %d more scopes (sluice status)", len(s.Scopes.Active)-maxScopes))
				break
			}
			v := fmt.Sprintf("%-16s %s", perSecond(sc.RateLimit, s.RateUnit), sc.Phase)
			if !sc.LastThrottle.IsZero() {
				v += fmt.Sprintf(", last throttle %s ago (%s)", now.Sub(sc.LastThrottle).Round(time.Second), sc.LastReason)
			}
			row("scope "+clip(oneLine(sc.Scope), 12), v)
		}
	}
	b.WriteString("\n")
	if len(d.jobs) == 0 {
		b.WriteString("  no jobs\n")
		return b.String()
	}
	fmt.Fprintf(&b, "  %-24s %-30s %12s  %s\n", "JOB", "STATE", "RATE", "LAST PROGRESS")
	const maxJobs = 12
	for i, j := range d.jobs {
		if i == maxJobs {
			fmt.Fprintf(&b, "  … and %d more (sluice jobs list)\n", len(d.jobs)-maxJobs)
			break
		}
		last := "-"
		if j.LastProgress != nil {
			last = now.Sub(*j.LastProgress).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(&b, "  %-24s %-30s %10.1f/s  %s\n", clip(j.ID, 24), clip(jobState(j), 30), j.Rate.Requests, last)
	}
	return b.String()
}

// line is one refresh as a plain line, for logs and pipes.
func (t *topView) line(d topData, now time.Time) string {
	l := d.status.Limiter
	acked, throttled := "-", "-"
	if p, ok := t.last(); ok {
		acked, throttled = fmt.Sprintf("%.1f/s", p.Acknowledged), fmt.Sprintf("%.1f/s", p.Throttled)
	}
	jobs := make([]string, 0, len(d.jobs))
	for _, j := range d.jobs {
		jobs = append(jobs, j.ID+"="+strings.ReplaceAll(jobState(j), " ", ""))
	}
	return fmt.Sprintf("%s phase=%s limit=%s conc=%d/%d acked=%s throttled=%s queue=%d jobs=%s",
		now.Format("15:04:05"), l.Phase, perSecond(l.RateLimit, d.status.RateUnit), l.InFlight, l.Concurrency,
		acked, throttled, l.Queued, orDash(strings.Join(jobs, ",")))
}

// scale is the bars' full width: the largest limit, or goodput with
// withAcked, seen in the kept history, rounded up, so the bars compare
// with each other.
func (t *topView) scale(rateLimit float64, withAcked bool) float64 {
	m := rateLimit
	for _, p := range t.points {
		m = max(m, p.RateLimit)
		if withAcked {
			m = max(m, p.Acknowledged)
		}
	}
	if m <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(m)))
	for _, f := range []float64{1, 2, 2.5, 5, 10} {
		if f*p >= m {
			return f * p
		}
	}
	return 10 * p
}

var sparkBlocks = []rune("▁▂▃▄▅▆▇█")

// spark draws the kept seconds of acknowledged writes, one character each.
func (t *topView) spark() string {
	top := 0.0
	for _, p := range t.points {
		top = max(top, p.Acknowledged)
	}
	var b strings.Builder
	for _, p := range t.points {
		i := 0
		if top > 0 {
			i = int(math.Round(p.Acknowledged / top * float64(len(sparkBlocks)-1)))
		}
		b.WriteRune(sparkBlocks[max(0, min(len(sparkBlocks)-1, i))])
	}
	return b.String()
}

// throttleMarks marks, under the sparkline, the seconds the store throttled.
func (t *topView) throttleMarks() string {
	var b strings.Builder
	for _, p := range t.points {
		if p.Throttled > 0 {
			b.WriteByte('!')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

func jobState(j state.JobSummary) string {
	why := string(j.StallCause)
	if why == "" && j.State != state.Running && j.State != state.Pending {
		why = oneLine(j.Reason)
	}
	if why == "" {
		return j.State.String()
	}
	return j.State.String() + " (" + why + ")"
}

func perSecond(v float64, unit string) string {
	if unit == "bytes" {
		return fmt.Sprintf("%.0f bytes/s", v)
	}
	return fmt.Sprintf("%.1f writes/s", v)
}

func bar(v, full float64) string {
	const width = 40
	n := 0
	if full > 0 {
		n = int(width * v / full)
	}
	n = max(0, min(width, n))
	return "[" + strings.Repeat("#", n) + strings.Repeat(" ", width-n) + "]"
}

// clip cuts s to n characters, not bytes: a cut inside a character would
// print an invalid one, and fmt pads the columns by characters.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
