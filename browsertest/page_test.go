package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

const (
	job   = "backfill-1"
	token = "3f9c0a7e5b21d84c6e0f1a9b7d2c4e85"
)

// store accepts writes after a few milliseconds, or throttles every one
// (429, Retry-After: 1) while throttle is set.
type store struct{ throttle atomic.Bool }

func (s *store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if s.throttle.Load() {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	time.Sleep(5 * time.Millisecond)
	w.WriteHeader(http.StatusOK)
}

// sluiceUnderTest is a real sluice on loopback listeners in front of st,
// with the admin token set, and a loader writing as job until its job is
// cancelled or the test ends.
func sluiceUnderTest(t *testing.T, st *store) (adminURL string) {
	t.Helper()
	storeSrv := httptest.NewServer(st)
	t.Cleanup(storeSrv.Close)
	proxyAddr, adminAddr := serveSluice(t,
		"SLUICE_UPSTREAM_URL="+storeSrv.URL,
		"SLUICE_ADMIN_TOKEN="+token,
		"SLUICE_INITIAL_RATE=100",
		"SLUICE_RETRY_MAX=0",
	)

	loadCtx, stopLoad := context.WithCancel(context.Background())
	var loaders sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for range 4 {
		loaders.Go(func() {
			for loadCtx.Err() == nil {
				req, _ := http.NewRequestWithContext(loadCtx, http.MethodPut, "http://"+proxyAddr+"/rows", strings.NewReader(`{"v":1}`))
				req.Header.Set(proxy.HeaderJob, job)
				resp, err := client.Do(req)
				if err != nil {
					pause(loadCtx, 100*time.Millisecond)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusConflict:
					return // cancelled: the loader gives up
				case resp.StatusCode >= 300:
					pause(loadCtx, 250*time.Millisecond)
				}
			}
		})
	}
	t.Cleanup(func() { // before sluice stops: cleanups run last first
		stopLoad()
		loaders.Wait()
	})
	return "http://" + adminAddr
}

// serveSluice runs a real sluice (env: its SLUICE_ variables) on loopback
// listeners until the test and its later cleanups end, and returns the
// proxy's and the admin listener's addresses.
func serveSluice(t *testing.T, env ...string) (proxyAddr, adminAddr string) {
	t.Helper()
	cfg, _, err := sidecar.LoadConfig(env)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sidecar.NewServer(cfg, sidecar.Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}})
	if err != nil {
		t.Fatal(err)
	}
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, proxyLn, adminLn) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("sluice: %v", err)
		}
	})
	return proxyLn.Addr().String(), adminLn.Addr().String()
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// chromium returns the browser to drive (SLUICE_BROWSER), or skips the
// test where none was given.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("SLUICE_BROWSER")
	if path == "" {
		t.Skip("SKIPPED: SLUICE_BROWSER is not set; .ci/browser.sh installs Chromium and sets it")
	}
	return path
}

// sluiceOverStore runs sluice in front of a store that takes every write,
// and returns its proxy's address and its admin API's URL.
func sluiceOverStore(t *testing.T) (proxyAddr, adminURL string) {
	t.Helper()
	storeSrv := httptest.NewServer(&store{})
	t.Cleanup(storeSrv.Close)
	proxyAddr, adminAddr := serveSluice(t, "SLUICE_UPSTREAM_URL="+storeSrv.URL)
	return proxyAddr, "http://" + adminAddr
}

// browser starts Chromium (SLUICE_BROWSER) headless with a fresh profile
// and returns a tab's context.
func browser(t *testing.T, path string) context.Context {
	t.Helper()
	profile := t.TempDir()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // CI runs as root, where Chromium's sandbox cannot start
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1400, 1000),
	)
	ctx, cancelTab := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// console keeps what the page writes to the console: its own calls, its
// uncaught exceptions and the browser's log (failed loads, policy
// violations).
type console struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

func (c *console) listen(ctx context.Context) {
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		}
	}()
}

// errors are the messages that are errors, except those allow accepts.
func (c *console) errors(allow func(chromedp.ConsoleMessage) bool) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if (m.Type == chromedp.ConsoleError || m.IsException() || m.Type == "assert") && (allow == nil || !allow(m)) {
			out = append(out, fmt.Sprintf("%s (%s:%d, source %q)", m, m.URL, m.Line, m.Source))
		}
	}
	return out
}

// eval evaluates a JavaScript expression in the page. DevTools'
// evaluation is not bound by the page's policy, which refuses eval.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript predicate every 100 ms, from Go rather than
// with chromedp.Poll, whose page function is built with new Function,
// which the page's policy refuses.
func waitFor(t *testing.T, ctx context.Context, what, predicate string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+predicate+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s (%s): %v", timeout, what, predicate, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// screenshot writes the whole page as a PNG and says where.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("SLUICE_SCREENSHOT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// jobState is the job's state as the API says it, not the page.
func jobState(t *testing.T, adminURL string) string {
	t.Helper()
	var v struct {
		State string `json:"state"`
	}
	getJSON(t, adminURL+"/v1/jobs/"+job, &v)
	return v.State
}

const (
	jobRow       = `document.querySelector('#jobs-table tr[data-job="` + job + `"]')`
	jobRowState  = jobRow + `?.querySelector('.state')?.textContent`
	chartPoints  = `Number(document.getElementById('chart-writes').dataset.points || 0)`
	chartThrottl = `Number(document.getElementById('chart-writes').dataset.throttled || 0)`
	actionMsg    = `document.getElementById('action-msg').textContent`
)

// TestStatusPage drives the status page in Chromium while sluice runs in
// front of a store that starts throttling: the page loads cleanly, charts
// the throttle as it happens, follows the job's state, and refuses a
// cancel without the admin token but performs it with one.
func TestStatusPage(t *testing.T) {
	path := chromium(t)
	st := &store{}
	adminURL := sluiceUnderTest(t, st)
	ctx := browser(t, path)
	var cons console
	cons.listen(ctx)

	do(t, ctx, "loading the page", chromedp.Navigate(adminURL+"/"))
	waitFor(t, ctx, "the controller's phase", `document.getElementById('phase').textContent !== '…'`, 10*time.Second)
	if note := eval[string](t, ctx, `document.getElementById('token-note').textContent`); !strings.Contains(note, "No admin token given") {
		t.Errorf("without a token the page says %q; want it to say that none is given", note)
	}

	// The chart gains a point a second; the job appears with its writes.
	// Ten seconds of them give the screenshots a line to look at.
	waitFor(t, ctx, "the first points", chartPoints+` >= 2`, 10*time.Second)
	before := eval[int](t, ctx, chartPoints)
	waitFor(t, ctx, "more points", chartPoints+` >= `+fmt.Sprint(max(before+2, 10)), 20*time.Second)
	waitFor(t, ctx, "the job, running", jobRowState+` === 'running'`, 10*time.Second)
	if n := eval[int](t, ctx, chartThrottl); n != 0 {
		t.Errorf("%d throttled seconds charted before the store throttled", n)
	}
	if errs := cons.errors(nil); len(errs) > 0 {
		t.Errorf("console errors while the page loads and refreshes:\n%s", strings.Join(errs, "\n"))
	}

	// The store throttles: the chart shows it within seconds, the
	// controller reports it, and the job changes state.
	st.throttle.Store(true)
	waitFor(t, ctx, "throttled seconds on the chart", chartThrottl+` > 0`, 10*time.Second)
	waitFor(t, ctx, "the throttle in the controller", `document.getElementById('last-throttle').textContent.includes('status_429')`, 5*time.Second)
	waitFor(t, ctx, "the job's state to change", jobRowState+` !== 'running'`, 10*time.Second)
	if got := eval[string](t, ctx, jobRowState); got != "throttled" && got != "backoff" {
		t.Errorf("the job is shown %q while the store throttles it, want throttled or backoff", got)
	}
	waitFor(t, ctx, "a few throttled seconds", chartThrottl+` >= 3`, 10*time.Second)
	screenshot(t, ctx, "sluice-status-page-throttled.png")
	st.throttle.Store(false)

	// The job's detail, then a cancel without the token: refused, and
	// the page says why.
	do(t, ctx, "opening the job", chromedp.Click(chromedp.CSS(`#jobs-table tr[data-job="`+job+`"] a`)))
	waitFor(t, ctx, "the job's detail", `!document.getElementById('job').hidden && document.querySelectorAll('#job-history tbody tr').length >= 2`, 10*time.Second)
	do(t, ctx, "cancel without a token",
		chromedp.Click(chromedp.CSS(`#actions [data-action="cancel"]`)),
		chromedp.Click(chromedp.ID("confirm-yes")))
	waitFor(t, ctx, "the refusal", actionMsg+`.includes('refused')`, 10*time.Second)
	if msg := eval[string](t, ctx, actionMsg); !strings.Contains(msg, "401") || !strings.Contains(msg, "No admin token given") {
		t.Errorf("the refusal reads %q; want the 401 and that no token was given", msg)
	}
	if s := jobState(t, adminURL); s == "cancelling" || s == "cleaning" || s == "cancelled" {
		t.Fatalf("a cancel without the token went through: the job is %s", s)
	}

	// With the token: accepted, and the job goes to cancelled.
	do(t, ctx, "giving the token",
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	waitFor(t, ctx, "the token note", `document.getElementById('token-note').textContent.includes('Admin token set')`, 5*time.Second)
	if v := eval[string](t, ctx, `document.getElementById('token').value`); v != "" {
		t.Errorf("the token stays visible in its field: %q", v)
	}
	do(t, ctx, "cancel with the token",
		chromedp.Click(chromedp.CSS(`#actions [data-action="cancel"]`)),
		chromedp.Click(chromedp.ID("confirm-yes")))
	waitFor(t, ctx, "the cancel accepted", actionMsg+`.includes('cancel accepted')`, 10*time.Second)
	waitFor(t, ctx, "the job cancelled", `document.getElementById('job-state').textContent === 'cancelled'`, 30*time.Second)
	waitFor(t, ctx, "the job list to follow", jobRowState+` === 'cancelled'`, 10*time.Second)
	if s := jobState(t, adminURL); s != "cancelled" {
		t.Errorf("after the cancel the API says the job is %s", s)
	}
	var info struct {
		Actions map[string]bool `json:"actions"`
	}
	getJSON(t, adminURL+"/ui/page.json", &info)
	if shown := eval[bool](t, ctx, `!document.querySelector('#actions [data-action="reopen"]').hidden`); shown != info.Actions["reopen"] {
		t.Errorf("reopen button shown = %v, but sluice has a reopen endpoint = %v", shown, info.Actions["reopen"])
	}
	screenshot(t, ctx, "sluice-status-page.png")

	// The one error the browser logs is the refused cancel's 401.
	refused := func(m chromedp.ConsoleMessage) bool {
		return m.Source == "network" && strings.Contains(m.URL, "/v1/jobs/"+job+"/cancel") && strings.Contains(m.Text, "401")
	}
	if errs := cons.errors(refused); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestStatusPageBadLink: a link to the page whose job part is not valid
// percent-encoding (cut short, or typed by hand) opens the page all the
// same, on no job, rather than stop it before its first refresh.
func TestStatusPageBadLink(t *testing.T) {
	path := chromium(t)
	proxyAddr, adminURL := sluiceOverStore(t)
	// A job the good link below can show.
	req, _ := http.NewRequest(http.MethodPut, "http://"+proxyAddr+"/rows", strings.NewReader(`{"v":1}`))
	req.Header.Set(proxy.HeaderJob, "load-2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a write of job load-2: %s", resp.Status)
	}
	ctx := browser(t, path)
	var cons console
	cons.listen(ctx)
	do(t, ctx, "loading the page", chromedp.Navigate(adminURL+"/#job/load%E0%A4"))
	waitFor(t, ctx, "the controller's phase", `document.getElementById('phase').textContent !== '…'`, 10*time.Second)
	if hidden := eval[bool](t, ctx, `document.getElementById('job').hidden`); !hidden {
		t.Errorf("the page opened a job for a link that names none")
	}
	// A bad link followed from a page showing a job (a hash change, not a
	// load) closes the job: the page must have taken it in, not stopped
	// in its handler, which only the job panel shows; the console's
	// exception would arrive too late to be checked.
	do(t, ctx, "following a good link", chromedp.Navigate(adminURL+"/#job/load-2"))
	waitFor(t, ctx, "the job named by the link", `!document.getElementById('job').hidden && document.getElementById('job-id').textContent === 'load-2' && document.getElementById('job-state').textContent === 'running'`, 10*time.Second)
	do(t, ctx, "following another bad link", chromedp.Navigate(adminURL+"/#job/%"))
	waitFor(t, ctx, "no job for the bad link", `document.getElementById('job').hidden`, 10*time.Second)
	// A link whose id is no job id (a path segment the API would resolve)
	// names no job either.
	for _, bad := range []string{"..", "a%2Fb", "-rf"} {
		do(t, ctx, "following a good link", chromedp.Navigate(adminURL+"/#job/load-2"))
		waitFor(t, ctx, "the job named by the link", `!document.getElementById('job').hidden && document.getElementById('job-id').textContent === 'load-2'`, 10*time.Second)
		do(t, ctx, "following a link to "+bad, chromedp.Navigate(adminURL+"/#job/"+bad))
		waitFor(t, ctx, "no job for "+bad, `document.getElementById('job').hidden`, 10*time.Second)
	}
	if errs := cons.errors(nil); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestStatusPageUnknownJob: a link to a job this sluice does not know (a
// deleted job, or one on another sidecar) says so, and shows nothing of
// the job that was open before: its labels, settings and history are not
// the unknown job's.
func TestStatusPageUnknownJob(t *testing.T) {
	path := chromium(t)
	_, adminURL := sluiceOverStore(t)
	register(t, adminURL, `{"id":"alpha","labels":{"team":"ingest"}}`)
	ctx := browser(t, path)

	do(t, ctx, "opening a job", chromedp.Navigate(adminURL+"/#job/alpha"))
	waitFor(t, ctx, "the job's detail", `document.getElementById('job-fields').textContent.includes('team=ingest')`, 10*time.Second)
	do(t, ctx, "following a link to an unknown job", chromedp.Navigate(adminURL+"/#job/ghost"))
	waitFor(t, ctx, "the unknown job", `document.getElementById('job-state').textContent === 'not found'`, 10*time.Second)
	if shown := eval[string](t, ctx, `document.getElementById('job').textContent`); strings.Contains(shown, "team=ingest") {
		t.Errorf("the unknown job ghost is shown with alpha's detail: %q", shown)
	}
}

// register registers a job through the admin API (from loopback, no
// token).
func register(t *testing.T, adminURL, body string) {
	t.Helper()
	resp, err := http.Post(adminURL+"/v1/jobs", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("register %s: %d %s", body, resp.StatusCode, b)
	}
}

// TestStatusPageRefreshKeepsWhatIsUnchanged: the page refreshes once a
// second, and a refresh must leave alone what did not change. Otherwise
// the job id an operator selects to copy (for sluice jobs cancel) is
// unselected within a second, and a click on a job whose button goes
// down before a refresh and up after it opens nothing.
func TestStatusPageRefreshKeepsWhatIsUnchanged(t *testing.T) {
	path := chromium(t)
	_, adminURL := sluiceOverStore(t)
	register(t, adminURL, `{"id":"alpha","labels":{"team":"ingest"}}`)
	ctx := browser(t, path)
	const link = `document.querySelector('#jobs-table tr[data-job="alpha"] a')`
	// refreshed waits for the page's next refresh: uptime, in whole
	// seconds, is drawn in the same step as the tables.
	refreshed := func() {
		t.Helper()
		before := eval[string](t, ctx, `document.getElementById('uptime').textContent`)
		waitFor(t, ctx, "a refresh", `document.getElementById('uptime').textContent !== `+jsString(before), 10*time.Second)
	}

	do(t, ctx, "loading the page", chromedp.Navigate(adminURL+"/"))
	waitFor(t, ctx, "the job", link+` !== null`, 10*time.Second)
	eval[bool](t, ctx, `(() => { const r = document.createRange(); r.selectNodeContents(`+link+`);
		getSelection().removeAllRanges(); getSelection().addRange(r); return true })()`)
	refreshed()
	refreshed()
	if sel := eval[string](t, ctx, `getSelection().toString()`); sel != "alpha" {
		t.Errorf("the job id selected before two refreshes reads %q after them, want alpha", sel)
	}

	x := eval[float64](t, ctx, `(() => { const r = `+link+`.getBoundingClientRect(); return r.x + r.width / 2 })()`)
	y := eval[float64](t, ctx, `(() => { const r = `+link+`.getBoundingClientRect(); return r.y + r.height / 2 })()`)
	do(t, ctx, "pressing the job's link", chromedp.MouseEvent("mousePressed", x, y, chromedp.ButtonType("left"), chromedp.ClickCount(1)))
	refreshed()
	do(t, ctx, "releasing it", chromedp.MouseEvent("mouseReleased", x, y, chromedp.ButtonType("left"), chromedp.ClickCount(1)))
	waitFor(t, ctx, "the job opened by the click", `location.hash === '#job/alpha' && !document.getElementById('job').hidden`, 5*time.Second)
	waitFor(t, ctx, "the job's detail", `document.getElementById('job-fields').textContent.includes('team=ingest')`, 10*time.Second)
	if n := eval[int](t, ctx, `document.querySelectorAll('#jobs-table tbody tr.selected').length`); n != 1 {
		t.Errorf("%d rows marked selected after the click, want 1", n)
	}
}

func jsString(s string) string { b, _ := json.Marshal(s); return string(b) }
