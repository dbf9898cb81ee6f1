package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// storeFunc is an in-memory store: sluice's attempts never leave the process.
type storeFunc func(*http.Request) *http.Response

func (f storeFunc) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return f(r), nil
}

// topSidecar is a real sidecar over an in-memory store that throttles
// while throttle is set, with its admin API on a loopback httptest
// server. A few writes have gone through it, and its history holds at
// least one point.
func topSidecar(t *testing.T, throttle *atomic.Bool) (adminURL string, write func(job string) int) {
	t.Helper()
	store := storeFunc(func(r *http.Request) *http.Response {
		code := http.StatusOK
		h := http.Header{}
		if throttle.Load() {
			code = http.StatusTooManyRequests
			h.Set("Retry-After", "1")
		}
		return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader("{}")), Request: r}
	})
	cfg, _, err := sidecar.LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://store.test", "SLUICE_RETRY_MAX=0"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sidecar.NewServer(cfg, sidecar.Options{Store: &state.MemStore{}, Transport: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.StartLoops())
	srv := httptest.NewServer(s.AdminHandler())
	t.Cleanup(srv.Close)
	write = func(job string) int {
		req := httptest.NewRequestWithContext(t.Context(), "PUT", "/w", strings.NewReader("row"))
		req.Header.Set(proxy.HeaderJob, job)
		rec := httptest.NewRecorder()
		s.ProxyHandler().ServeHTTP(rec, req)
		return rec.Code
	}
	return srv.URL, write
}

// waitForHistory waits until the sidecar's history has a point newer
// than after (it samples once a second) and returns the newest.
func waitForHistory(t *testing.T, adminURL string, after int64) int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(adminURL + "/v1/history")
		if err != nil {
			t.Fatal(err)
		}
		var feed admin.HistoryFeed
		err = json.NewDecoder(resp.Body).Decode(&feed)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(feed.Points); n > 0 && feed.Points[n-1].T > after {
			return feed.Points[n-1].T
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no history point within 10s")
	return 0
}

func TestTopOnce(t *testing.T) {
	var throttle atomic.Bool
	adminURL, write := topSidecar(t, &throttle)
	for range 5 {
		if code := write("load-7"); code != http.StatusOK {
			t.Fatalf("write: %d", code)
		}
	}
	waitForHistory(t, adminURL, 0)
	env := map[string]string{"SLUICE_ADMIN_URL": adminURL}
	var out, errs bytes.Buffer
	// stdout is not a terminal here: one plain line.
	if code := Top([]string{"--once"}, func(k string) string { return env[k] }, &out, &errs); code != 0 {
		t.Fatalf("top --once: %d %s", code, errs.String())
	}
	line := out.String()
	if strings.Count(line, "\n") != 1 || strings.Contains(line, "\x1b") {
		t.Errorf("not a terminal: want one plain line, got %q", line)
	}
	for _, want := range []string{"phase=startup", "limit=", "conc=0/", "acked=", "throttled=0.0/s", "queue=0", "jobs=load-7=running"} {
		if !strings.Contains(line, want) {
			t.Errorf("plain line lacks %q: %q", want, line)
		}
	}

	// The terminal view: one screen, cleared first, laid out like the demo's.
	throttle.Store(true)
	if code := write("load-7"); code != http.StatusTooManyRequests {
		t.Fatalf("throttled write: %d", code)
	}
	waitForHistory(t, adminURL, waitForHistory(t, adminURL, 0))
	out.Reset()
	v := &topView{client: newAdminClient(func(k string) string { return env[k] }), terminal: true, interval: time.Second}
	if code := v.run(context.Background(), true, &out, &errs); code != 0 {
		t.Fatalf("terminal view: %d %s", code, errs.String())
	}
	screen := out.String()
	if !strings.HasPrefix(screen, clearScreen+"sluice top  "+adminURL) {
		t.Errorf("the screen does not start by clearing the terminal: %q", screen)
	}
	for _, want := range []string{"controller", "last throttle", "status_429", "sluice limit", "acknowledged", "throttled", "concurrency", "queue", "JOB", "load-7"} {
		if !strings.Contains(screen, want) {
			t.Errorf("screen lacks %q:\n%s", want, screen)
		}
	}
	if n := strings.Count(screen, "\n"); n > 24 {
		t.Errorf("the screen has %d lines; it must fit one terminal", n)
	}
}

// TestTopBareAdminURL: top reads SLUICE_ADMIN_URL as status and jobs do,
// a bare host:port meaning http://host:port, so that one variable serves
// every command.
func TestTopBareAdminURL(t *testing.T) {
	var throttle atomic.Bool
	adminURL, write := topSidecar(t, &throttle)
	if code := write("load-8"); code != http.StatusOK {
		t.Fatalf("write: %d", code)
	}
	waitForHistory(t, adminURL, 0)
	bare := strings.TrimPrefix(adminURL, "http://")
	var out, errs bytes.Buffer
	if code := Top([]string{"--once"}, func(k string) string {
		if k == "SLUICE_ADMIN_URL" {
			return bare
		}
		return ""
	}, &out, &errs); code != 0 {
		t.Fatalf("top --once with SLUICE_ADMIN_URL=%s: %d %s", bare, code, errs.String())
	}
	if !strings.Contains(out.String(), "jobs=load-8=running") {
		t.Errorf("top --once with SLUICE_ADMIN_URL=%s: %q", bare, out.String())
	}
}

func TestTopUsage(t *testing.T) {
	// An admin URL nothing listens on: --help and bad usage must not call it.
	env := func(k string) string {
		if k == "SLUICE_ADMIN_URL" {
			return "http://127.0.0.1:1"
		}
		return ""
	}
	f := func(args []string, wantCode int, wantOut, wantErr string) {
		t.Helper()
		var out, errs bytes.Buffer
		done := make(chan int, 1)
		go func() { done <- Top(args, env, &out, &errs) }()
		select {
		case code := <-done:
			if code != wantCode || !strings.Contains(out.String(), wantOut) || !strings.Contains(errs.String(), wantErr) {
				t.Errorf("top %v: %d, stdout %q, stderr %q; want %d, %q, %q", args, code, out.String(), errs.String(), wantCode, wantOut, wantErr)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("top %v did not return", args)
		}
	}
	f([]string{"--help"}, 0, "usage: sluice top", "")
	f([]string{"-h"}, 0, "usage: sluice top", "")
	f([]string{"--frob"}, 2, "", "usage: sluice top")
	f([]string{"extra"}, 2, "", "unexpected argument")
	f([]string{"--interval", "1ms"}, 2, "", "--interval")
	f([]string{"--once"}, 1, "", "SLUICE_ADMIN_URL")
}

// TestTopJobsUnreadable: when the job list cannot be read, top says so
// rather than show "no jobs" for a sidecar that has some.
func TestTopJobsUnreadable(t *testing.T) {
	var throttle atomic.Bool
	adminURL, write := topSidecar(t, &throttle)
	if code := write("load-9"); code != http.StatusOK {
		t.Fatalf("write: %d", code)
	}
	target, _ := url.Parse(adminURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/jobs" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"overloaded","message":"try later"}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(failing.Close)
	env := func(k string) string {
		if k == "SLUICE_ADMIN_URL" {
			return failing.URL
		}
		return ""
	}
	var out, errs bytes.Buffer
	code := Top([]string{"--once"}, env, &out, &errs)
	if code != 1 || strings.Contains(out.String(), "jobs=-") || !strings.Contains(errs.String(), "/v1/jobs") {
		t.Errorf("top --once with /v1/jobs failing: exit %d, stdout %q, stderr %q; want 1 and the failure named", code, out.String(), errs.String())
	}
}

// TestTopBytesUnit: with SLUICE_RATE_UNIT=bytes the limit is in bytes per
// second and the acknowledged writes in writes per second: no bar puts
// one on the other's scale.
func TestTopBytesUnit(t *testing.T) {
	st := admin.Status{RateUnit: "bytes", Limiter: admin.LimiterStatus{Phase: "steady", RateLimit: 4e6}}
	tv := &topView{client: &adminClient{base: "http://127.0.0.1:9090"}}
	tv.add([]admin.Point{{T: 1, Acknowledged: 900, RateLimit: 4e6}, {T: 2, Acknowledged: 1000, RateLimit: 4e6}})
	screen := tv.screen(topData{status: st}, time.Unix(2, 0))
	var limit, acked string
	for _, l := range strings.Split(screen, "\n") {
		switch f := strings.Fields(l); {
		case len(f) > 1 && f[0] == "sluice" && f[1] == "limit":
			limit = l
		case len(f) > 0 && f[0] == "acknowledged":
			acked = l
		}
	}
	if !strings.Contains(limit, "4000000 bytes/s  [") {
		t.Errorf("the limit: %q, want its bar", limit)
	}
	if strings.Contains(acked, "[") {
		t.Errorf("acknowledged writes drawn on the bytes limit's scale: %q", acked)
	}
	if !strings.Contains(acked, "1000.0 writes/s") {
		t.Errorf("acknowledged: %q, want 1000.0 writes/s", acked)
	}
}

// TestTopStopsWhileARefreshWaits: Ctrl-C stops sluice top at once even
// while a refresh waits on an admin API that does not answer (a sidecar
// stuck, a port-forward gone dead), rather than after the refresh's own
// timeout, which is a wait per call: the operator's first Ctrl-C is
// caught, and every later one with it.
func TestTopStopsWhileARefreshWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		asked := make(chan struct{}, 1)
		hung := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			asked <- struct{}{}
			<-r.Context().Done() // no answer, ever
			return nil, r.Context().Err()
		})
		tv := &topView{client: newAdminClient(func(string) string { return "" }), interval: time.Second}
		tv.client.http.Transport = hung
		ctx, cancel := context.WithCancel(context.Background())
		var out, errs bytes.Buffer
		code := make(chan int, 1)
		go func() { code <- tv.run(ctx, false, &out, &errs) }()
		<-asked
		cancel() // Ctrl-C
		synctest.Wait()
		select {
		case c := <-code:
			if c != 0 {
				t.Errorf("exit %d after Ctrl-C, want 0", c)
			}
		default:
			t.Error("sluice top did not stop at Ctrl-C while a refresh waited on the admin API")
			<-code // it stops at the refresh's timeout, in the bubble's time
		}
		if errs.Len() != 0 {
			t.Errorf("Ctrl-C reported as an error: %q", errs.String())
		}
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
