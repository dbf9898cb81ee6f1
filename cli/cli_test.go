package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// TestCLI runs `sluice status` and `sluice jobs …` against a live admin API.
func TestCLI(t *testing.T) {
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer store.Close()
	cfg, _, err := sidecar.LoadConfig([]string{"SLUICE_UPSTREAM_URL=" + store.URL, "SLUICE_ADMIN_TOKEN=cli-token-5d1e8a3f7c20"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sidecar.NewServer(cfg, sidecar.Options{Store: &state.MemStore{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.StartLoops()()
	admin := httptest.NewServer(s.AdminHandler())
	defer admin.Close()
	req := httptest.NewRequestWithContext(t.Context(), "PUT", "/b/x", strings.NewReader("row"))
	req.Header.Set(proxy.HeaderJob, "load-7")
	rec := httptest.NewRecorder()
	s.ProxyHandler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("write: %d", rec.Code)
	}
	env := map[string]string{"SLUICE_ADMIN_URL": admin.URL, "SLUICE_ADMIN_TOKEN": "cli-token-5d1e8a3f7c20"}
	cli := func(args ...string) (string, string, int) {
		var out, errs bytes.Buffer
		code := Run(args, func(k string) string { return env[k] }, &out, &errs)
		return out.String(), errs.String(), code
	}
	out, errs, code := cli("status")
	if code != 0 || !strings.Contains(out, "readiness") || !strings.Contains(out, "rate limit") || !strings.Contains(out, "running=1") ||
		!strings.Contains(out, "class bulk") || !strings.Contains(out, "job load-7") {
		t.Errorf("status: %d %q %q", code, out, errs)
	}
	out, _, code = cli("jobs", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "JOB") || !strings.HasPrefix(lines[1], "load-7") {
		t.Errorf("jobs list: %d\n%s", code, out)
	}
	// Columns are aligned: the STATE header starts where the state does.
	if i := strings.Index(lines[0], "STATE"); i < 0 || !strings.HasPrefix(lines[1][i:], "running") {
		t.Errorf("jobs list is not aligned:\n%s", out)
	}
	// Its place in the fair queue: class, weight, share of recent grants
	// (all of them: it is alone), and wait.
	for _, col := range []struct{ head, cell string }{{"CLASS", "bulk"}, {"WEIGHT", "1"}, {"SHARE", "100.0%"}, {"WAIT", "0s"}} {
		if i := strings.Index(lines[0], col.head); i < 0 || len(lines) < 2 || !strings.HasPrefix(lines[1][i:], col.cell) {
			t.Errorf("jobs list: column %s is not %s:\n%s", col.head, col.cell, out)
		}
	}
	// show prints tables, never Go's or the API's notation for a value.
	out, errs, code = cli("jobs", "show", "load-7")
	if code != 0 {
		t.Errorf("jobs show: %d %s", code, errs)
	}
	for _, want := range []string{"job ", " load-7\n", "\nstate ", " running since ", "\nrecent rate ", " 1 requests, 3 B, 0 items\n",
		"\nsettings\n", "  auto-cancel ", "\nhistory\n", " pending → running ", "\naction attempts: none\n", "\ncheckpoints: none\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("jobs show lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"<nil>", "map[", `{"`, "[{"} {
		if strings.Contains(out, bad) {
			t.Errorf("jobs show prints %q:\n%s", bad, out)
		}
	}
	// SLUICE_ADMIN_URL as host:port, without a scheme.
	env["SLUICE_ADMIN_URL"] = strings.TrimPrefix(admin.URL, "http://")
	if out, errs, code := cli("jobs", "list"); code != 0 || !strings.Contains(out, "load-7") {
		t.Errorf("SLUICE_ADMIN_URL=%s: %d %s %s", env["SLUICE_ADMIN_URL"], code, out, errs)
	}
	env["SLUICE_ADMIN_URL"] = admin.URL
	out, _, code = cli("jobs", "show", "load-7", "--json")
	var v map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["id"] != "load-7" {
		t.Errorf("jobs show --json: %d %s", code, out)
	}
	out, _, code = cli("jobs", "cancel", "--force", "load-7")
	if code != 0 || !strings.Contains(out, "cancelling") && !strings.Contains(out, "cleaning") && !strings.Contains(out, "cancelled") {
		t.Errorf("jobs cancel: %d %s", code, out)
	}
	// The cancel's (skipped) actions run on their own; then the job is
	// reopened, refused a second reopen and a delete while it runs, and
	// cancelled and deleted.
	jobState := func(id string) string {
		out, _, _ := cli("jobs", "show", id, "--json")
		var v struct{ State string }
		_ = json.Unmarshal([]byte(out), &v)
		return v.State
	}
	awaitState := func(id, want string) {
		t.Helper()
		for range 10000 {
			if jobState(id) == want {
				return
			}
		}
		t.Fatalf("job %s is %s, want %s", id, jobState(id), want)
	}
	awaitState("load-7", "cancelled")
	if out, errs, code := cli("jobs", "reopen", "load-7"); code != 0 || !strings.Contains(out, "running") {
		t.Errorf("jobs reopen: %d %s %s", code, out, errs)
	}
	if _, errs, code := cli("jobs", "reopen", "load-7"); code != 1 || !strings.Contains(errs, "409 illegal_transition") {
		t.Errorf("jobs reopen a running job: %d %s", code, errs)
	}
	if _, errs, code := cli("jobs", "delete", "load-7"); code != 1 || !strings.Contains(errs, "409 illegal_transition") {
		t.Errorf("jobs delete a running job: %d %s", code, errs)
	}
	if _, _, code := cli("jobs", "cancel", "load-7"); code != 0 {
		t.Errorf("jobs cancel after the reopen: %d", code)
	}
	awaitState("load-7", "cancelled")
	if out, errs, code := cli("jobs", "delete", "load-7"); code != 0 || !strings.Contains(out, "cancelled") {
		t.Errorf("jobs delete: %d %s %s", code, out, errs)
	}
	if _, errs, code := cli("jobs", "show", "load-7"); code != 1 || !strings.Contains(errs, "404") {
		t.Errorf("jobs show a deleted job: %d %s", code, errs)
	}
	for _, sub := range []string{"reopen", "delete"} {
		if _, _, code := cli("jobs", sub); code != 2 {
			t.Errorf("jobs %s without id: %d, want 2", sub, code)
		}
		if _, errs, code := cli("jobs", sub, "nope"); code != 1 || !strings.Contains(errs, "404") {
			t.Errorf("jobs %s nope: %d %s", sub, code, errs)
		}
	}
	if _, errs, code = cli("jobs", "show", "nope"); code != 1 || !strings.Contains(errs, "404") {
		t.Errorf("jobs show nope: %d %s", code, errs)
	}
	if _, _, code = cli("jobs", "show"); code != 2 {
		t.Errorf("jobs show without id: %d, want 2", code)
	}
	if _, _, code = cli("jobs", "frob"); code != 2 {
		t.Errorf("jobs frob: %d, want 2", code)
	}
	env["SLUICE_ADMIN_TOKEN"] = "wrong"
	if _, errs, code = cli("jobs", "complete", "load-7"); code != 1 || !strings.Contains(errs, "401") {
		t.Errorf("wrong token: %d %s", code, errs)
	}
	for _, sub := range []string{"reopen", "delete"} {
		if _, errs, code = cli("jobs", sub, "load-7"); code != 1 || !strings.Contains(errs, "401") {
			t.Errorf("jobs %s, wrong token: %d %s", sub, code, errs)
		}
	}
	env["SLUICE_ADMIN_URL"] = "http://127.0.0.1:1"
	if _, errs, code = cli("status"); code != 1 || !strings.Contains(errs, "SLUICE_ADMIN_URL") {
		t.Errorf("unreachable admin: %d %s", code, errs)
	}
}

// TestHelp: every command answers -h and --help with its usage on stdout,
// exit 0, and calls nothing.
func TestHelp(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("help called the admin API: %s %s", r.Method, r.URL)
	}))
	defer admin.Close()
	getenv := func(k string) string {
		if k == "SLUICE_ADMIN_URL" {
			return admin.URL
		}
		return ""
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--help"}, "usage: sluice status [--json]\n"},
		{[]string{"status", "-h"}, "usage: sluice status [--json]\n"},
		{[]string{"status", "--json", "-help"}, "usage: sluice status [--json]\n"},
		{[]string{"jobs", "--help"}, "usage: sluice jobs COMMAND [ID] [--json]\n"},
		{[]string{"jobs", "-h"}, "usage: sluice jobs COMMAND [ID] [--json]\n"},
		{[]string{"jobs", "help"}, "usage: sluice jobs COMMAND [ID] [--json]\n"},
		{[]string{"jobs", "list", "--help"}, "usage: sluice jobs list [--json]\n"},
		{[]string{"jobs", "show", "--help"}, "usage: sluice jobs show ID [--json]\n"},
		{[]string{"jobs", "show", "load-7", "-h"}, "usage: sluice jobs show ID [--json]\n"},
		{[]string{"jobs", "cancel", "-h"}, "usage: sluice jobs cancel ID [--force] [--json]\n"},
		{[]string{"jobs", "cancel", "load-7", "--force", "--help"}, "usage: sluice jobs cancel ID [--force] [--json]\n"},
		{[]string{"jobs", "complete", "--help"}, "usage: sluice jobs complete ID [--json]\n"},
		{[]string{"jobs", "reopen", "--help"}, "usage: sluice jobs reopen ID [--json]\n"},
		{[]string{"jobs", "delete", "--help"}, "usage: sluice jobs delete ID [--json]\n"},
	} {
		var out, errs bytes.Buffer
		code := Run(tc.args, getenv, &out, &errs)
		if code != 0 || !strings.HasPrefix(out.String(), tc.want) || errs.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 0 and %q", tc.args, code, out.String(), errs.String(), tc.want)
		}
		if !strings.Contains(out.String(), "SLUICE_ADMIN_URL") {
			t.Errorf("%v: the usage does not say where the admin API is", tc.args)
		}
	}
	// Mistakes print the usage to stderr and exit 2.
	for _, args := range [][]string{{"jobs"}, {"jobs", "show"}, {"jobs", "cancel", "a", "b"}, {"status", "--frob"}} {
		var out, errs bytes.Buffer
		if code := Run(args, getenv, &out, &errs); code != 2 || out.Len() != 0 || !strings.Contains(errs.String(), "usage: sluice ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and the usage on stderr", args, code, out.String(), errs.String())
		}
	}
}

// TestBadUsageCallsNothing: an argument a command does not take (sluice
// status foo, sluice jobs list load-7, as if it were show) is bad usage,
// exit 2 before any call, as sluice run says of its own: never silently
// dropped while the command answers something else. So is --force given
// to a command other than jobs cancel (sluice jobs delete ID --force, read
// as a forced delete).
func TestBadUsageCallsNothing(t *testing.T) {
	var calls int
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jobs":[]}`)
	}))
	defer admin.Close()
	const unexpected, force = "unexpected argument", "--force applies to sluice jobs cancel only"
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"status", "foo"}, unexpected},
		{[]string{"jobs", "list", "load-7"}, unexpected},
		{[]string{"status", "--json", "x"}, unexpected},
		{[]string{"jobs", "delete", "j", "--force"}, force},
		{[]string{"jobs", "complete", "--force", "j"}, force},
		{[]string{"jobs", "list", "--force"}, force},
		{[]string{"status", "--force"}, force},
	} {
		var out, errs bytes.Buffer
		code := Run(tc.args, func(k string) string {
			if k == "SLUICE_ADMIN_URL" {
				return admin.URL
			}
			return ""
		}, &out, &errs)
		if code != 2 || !strings.Contains(errs.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errs.String(), tc.want)
		}
	}
	if calls != 0 {
		t.Errorf("%d calls to the admin API, want none", calls)
	}
}

// TestAdminURLCredentialsNotShown: an SLUICE_ADMIN_URL with credentials in
// it (a proxy in front of the admin API that asks for them) reaches the
// terminal redacted, whichever command fails to reach it.
func TestAdminURLCredentialsNotShown(t *testing.T) {
	ln := httptest.NewServer(http.NotFoundHandler())
	addr := ln.Listener.Addr().String()
	ln.Close() // nothing listens there now: every call fails
	for _, base := range []string{
		"http://ops:hunter2-pw@" + addr,
		"http://hunter2-tok@" + addr,
		"http://ops:hunter2 pw@" + addr, // not a valid URL: the parse error quotes it
	} {
		env := func(k string) string {
			if k == "SLUICE_ADMIN_URL" {
				return base
			}
			return ""
		}
		for _, args := range [][]string{{"status"}, {"jobs", "show", "j"}} {
			var out, errs bytes.Buffer
			if code := Run(args, env, &out, &errs); code != 1 || strings.Contains(out.String()+errs.String(), "hunter2") {
				t.Errorf("%s with %s: exit %d, stdout %q stderr %q: want 1 and the credentials hidden", args, base, code, out.String(), errs.String())
			}
		}
		var out, errs bytes.Buffer
		if code := Top([]string{"--once"}, env, &out, &errs); code != 1 || strings.Contains(out.String()+errs.String(), "hunter2") {
			t.Errorf("top --once with %s: exit %d, stdout %q stderr %q: want 1 and the credentials hidden", base, code, out.String(), errs.String())
		}
		tv := &topView{client: newAdminClient(env), terminal: true}
		if screen := tv.screen(topData{}, time.Now()); strings.Contains(screen, "hunter2") {
			t.Errorf("top's screen with %s shows the credentials:\n%s", base, screen)
		}
	}
}

// TestJSONAnswerWholeOrError: --json prints the admin API's answer for a
// script to read, so an answer that is not whole JSON (one cut at the
// client's size limit, or the page of something else answering at
// SLUICE_ADMIN_URL) is a failure, exit 1, never printed as if it were
// the answer with exit 0.
func TestJSONAnswerWholeOrError(t *testing.T) {
	job := `{"id":"load-1","state":"running","since":"2026-01-01T00:00:00Z","reason":"` + strings.Repeat("x", 1000) + `"},`
	big := `{"jobs":[` + strings.Repeat(job, 17<<10) + `{"id":"load-2","state":"running"}]}` // over 16 MiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/jobs":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, big)
		default:
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html><body>Grafana</body></html>")
		}
	}))
	defer srv.Close()
	env := func(k string) string {
		if k == "SLUICE_ADMIN_URL" {
			return srv.URL
		}
		return ""
	}
	for _, tc := range []struct {
		args []string
		why  string // in stderr: what is wrong with the answer
	}{
		{[]string{"jobs", "list", "--json"}, "over 16 MiB"},
		{[]string{"jobs", "list"}, "over 16 MiB"},
		{[]string{"status", "--json"}, "not JSON"},
	} {
		var out, errs bytes.Buffer
		code := Run(tc.args, env, &out, &errs)
		// The answer cut at the size limit is said to be too big, not
		// only found broken: cut short, its first 16 MiB could read as
		// whole JSON.
		if code != 1 || out.Len() != 0 || !strings.Contains(errs.String(), tc.why) {
			t.Errorf("sluice %s: exit %d, %d bytes on stdout (%.80q), stderr %q; want exit 1, nothing printed, and stderr saying %q",
				strings.Join(tc.args, " "), code, out.Len(), out.String(), errs.String(), tc.why)
		}
	}
}

// TestAgesFromTheSidecarsClock: the operator's machine, behind kubectl
// port-forward, may be an hour off the pod's. Ages and whether a pause is
// still on are counted from the sidecar's clock: its Date header, or the
// status's own "now". From the local clock, a job registered 5 s ago showed
// as "-59m55s ago" on a machine an hour behind, and a pause that is on was
// left out on one an hour ahead.
func TestAgesFromTheSidecarsClock(t *testing.T) {
	for _, off := range []time.Duration{time.Hour, -time.Hour} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			now := time.Now().Add(off)
			w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
			switch r.URL.Path {
			case "/v1/jobs":
				fmt.Fprintf(w, `{"jobs":[{"id":"load-1","state":"running","since":%q}]}`, now.Add(-5*time.Second).Format(time.RFC3339Nano))
			case "/v1/status":
				fmt.Fprintf(w, `{"readiness":"ready","now":%q,"limiter":{"paused_until":%q},"jobs":{}}`,
					now.Format(time.RFC3339Nano), now.Add(30*time.Second).Format(time.RFC3339Nano))
			}
		}))
		env := func(k string) string {
			if k == "SLUICE_ADMIN_URL" {
				return srv.URL
			}
			return ""
		}
		var out, errs bytes.Buffer
		if code := Run([]string{"jobs", "list"}, env, &out, &errs); code != 0 {
			t.Fatalf("jobs list: exit %d: %s", code, errs.String())
		}
		fields := strings.Fields(strings.Split(out.String(), "\n")[1])
		if since, err := time.ParseDuration(fields[2]); err != nil || since < 4*time.Second || since > 6*time.Second || fields[3] != "ago" {
			t.Errorf("clock %v off: job since %q %q, want about 5s ago:\n%s", off, fields[2], fields[3], out.String())
		}
		out.Reset()
		if code := Run([]string{"status"}, env, &out, &errs); code != 0 {
			t.Fatalf("status: exit %d: %s", code, errs.String())
		}
		if !strings.Contains(out.String(), "paused until") {
			t.Errorf("clock %v off: the pause on at the sidecar is not shown:\n%s", off, out.String())
		}
		srv.Close()
	}
}
