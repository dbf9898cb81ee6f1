// Package cli is the client side of the sluice command: `sluice status` and
// `sluice jobs …`, which call a running sidecar's admin API and print what
// it answers. It is a program that uses the library's types, not part of it.
package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/state"
)

// Run runs `sluice status` and `sluice jobs …` against a running
// sidecar's admin API (SLUICE_ADMIN_URL, with SLUICE_ADMIN_TOKEN if set) and
// returns the exit status: 0, 1 when the call failed, 2 for bad usage.
func Run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	force := fs.Bool("force", false, "cancel: force (like cancel_bulk_load -f)")
	cmd, rest := args[0], args[1:]
	sub := ""
	if cmd == "jobs" {
		if len(rest) == 0 {
			fmt.Fprintln(stderr, "usage: sluice jobs list|show ID|cancel ID [--force]|complete ID|reopen ID|delete ID [--json]")
			return 2
		}
		sub, rest = rest[0], rest[1:]
	}
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
	base := getenv("SLUICE_ADMIN_URL")
	if base == "" {
		base = "http://127.0.0.1:9090"
	}
	c := &adminClient{base: strings.TrimRight(base, "/"), token: getenv("SLUICE_ADMIN_TOKEN"),
		http: &http.Client{Timeout: 10 * time.Second}}

	needID := func() (string, bool) {
		if len(pos) != 1 {
			fmt.Fprintf(stderr, "usage: sluice jobs %s ID\n", sub)
			return "", false
		}
		return pos[0], true
	}
	var (
		out   json.RawMessage
		err   error
		print func(io.Writer, json.RawMessage) error
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
		fmt.Fprintf(stderr, "sluice jobs: unknown subcommand %q (list, show, cancel, complete, reopen, delete)\n", sub)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice:", err)
		return 1
	}
	if *asJSON {
		var buf bytes.Buffer
		if json.Indent(&buf, out, "", "  ") == nil {
			out = buf.Bytes()
		}
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	if err := print(stdout, out); err != nil {
		fmt.Fprintln(stderr, "sluice: unexpected answer:", err)
		return 1
	}
	return 0
}

type adminClient struct {
	base, token string
	http        *http.Client
}

func (c *adminClient) do(method, path string, body any) (json.RawMessage, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin API at %s (SLUICE_ADMIN_URL): %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
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

func printStatus(w io.Writer, raw json.RawMessage) error {
	var s admin.Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("readiness", s.Readiness)
	row("upstream", s.Upstream)
	row("profile", s.Profile)
	row("phase", s.Limiter.Phase)
	row("rate limit", fmt.Sprintf("%.1f %s/s", s.Limiter.RateLimit, s.RateUnit))
	row("concurrency", fmt.Sprintf("%d in flight / %d limit", s.Limiter.InFlight, s.Limiter.Concurrency))
	row("queue", s.Limiter.Queued)
	if !s.Limiter.PausedUntil.IsZero() && s.Limiter.PausedUntil.After(time.Now()) {
		row("paused until", s.Limiter.PausedUntil.Format(time.RFC3339))
	}
	if !s.Limiter.LastThrottle.IsZero() {
		row("last throttle", fmt.Sprintf("%s (%s)", s.Limiter.LastThrottle.Format(time.RFC3339), s.Limiter.LastReason))
	}
	row("latency", fmt.Sprintf("baseline %s, recent %s", s.Limiter.LatencyBaseline, s.Limiter.LatencyRecent))
	if m, ok := s.Signals["attempts_by_kind"].(map[string]any); ok {
		row("attempts", joinCounts(m))
	}
	row("jobs", joinCounts(toAnyMap(s.Jobs)))
	row("uptime", s.Uptime)
	return tw.Flush()
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
		parts[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func printJobList(w io.Writer, raw json.RawMessage) error {
	var l struct {
		Jobs []state.JobSummary `json:"jobs"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATE\tSINCE\tREQUESTS\tBYTES\tITEMS\tLAST PROGRESS\tREASON")
	for _, j := range l.Jobs {
		reason := j.Reason
		if j.StallCause != "" {
			reason = strings.TrimSpace(reason + " " + string(j.StallCause))
		}
		var last time.Time
		if j.LastProgress != nil {
			last = *j.LastProgress
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", j.ID, j.State, ago(j.Since), j.Totals.Requests,
			j.Totals.Bytes, j.Totals.Items, ago(last), orDash(reason))
	}
	return tw.Flush()
}

func printJob(w io.Writer, raw json.RawMessage) error {
	var j map[string]any
	if err := json.Unmarshal(raw, &j); err != nil {
		return err
	}
	keys := make([]string, 0, len(j))
	for k := range j {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, k := range keys {
		v := j[k]
		switch v.(type) {
		case map[string]any, []any:
			b, _ := json.Marshal(v)
			fmt.Fprintf(tw, "%s\t%s\n", k, apierror.Truncate(string(b), 400))
		default:
			fmt.Fprintf(tw, "%s\t%v\n", k, v)
		}
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
