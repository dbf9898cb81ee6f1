package state

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHelperProcess is not a test: it is the command run by the command
// action tests (os.Args[0] re-executed). It writes its arguments and
// SLUICE_JOB as JSON to the file named by HELPER_OUT, then sleeps
// HELPER_SLEEP and exits with HELPER_EXIT.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("HELPER_OUT") == "" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	b, _ := json.Marshal(map[string]any{"args": args, "job": os.Getenv("SLUICE_JOB")})
	_ = os.WriteFile(os.Getenv("HELPER_OUT"), b, 0o600)
	if d, _ := time.ParseDuration(os.Getenv("HELPER_SLEEP")); d > 0 {
		time.Sleep(d)
	}
	code, _ := strconv.Atoi(os.Getenv("HELPER_EXIT"))
	fmt.Fprintf(os.Stderr, "helper exiting %d", code)
	os.Exit(code)
}

func helperSpec(t *testing.T, exit int, sleep time.Duration, args ...string) (*ActionSpec, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.json")
	t.Setenv("HELPER_OUT", out)
	t.Setenv("HELPER_EXIT", strconv.Itoa(exit))
	t.Setenv("HELPER_SLEEP", sleep.String())
	argv := append([]string{os.Args[0], "-test.run=^TestHelperProcess$", "--"}, args...)
	return &ActionSpec{Kind: KindCommand, Argv: argv}, out
}

func testRunner(timeout time.Duration) *runner {
	return &runner{client: http.DefaultClient, timeout: timeout, now: time.Now}
}

// TestCommandAction: ${JOB} is substituted as plain text inside argv
// elements, no shell ever sees it; exit codes map to results.
func TestCommandAction(t *testing.T) {
	f := func(exit int, wantResult string, wantOK bool) {
		t.Helper()
		hostile := "x; touch /tmp/pwned-${JOB} $(id) `id` | cat"
		spec, out := helperSpec(t, exit, 0, "--job=${JOB}", hostile, "${JOB}")
		if err := spec.Validate(); err != nil {
			t.Fatal(err)
		}
		a, ok := testRunner(10*time.Second).attempt(context.Background(), spec, "load:7.a-b_c", "cancel", 2)
		if ok != wantOK || a.Result != wantResult || a.ExitCode == nil || *a.ExitCode != exit || a.N != 2 || a.Action != "cancel" {
			t.Fatalf("exit %d: %+v ok=%v, want %s ok=%v", exit, a, ok, wantResult, wantOK)
		}
		if exit == 1 && !strings.Contains(a.Error, "exit status 1") {
			t.Errorf("error text %q", a.Error)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Args []string
			Job  string
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		want := []string{"--job=load:7.a-b_c", "x; touch /tmp/pwned-load:7.a-b_c $(id) `id` | cat", "load:7.a-b_c"}
		if !slices.Equal(got.Args, want) || got.Job != "load:7.a-b_c" {
			t.Fatalf("helper got %q job %q, want %q", got.Args, got.Job, want)
		}
	}
	f(0, ResultOK, true)
	f(ExitAlreadyGone, ResultAlreadyGone, true)
	f(1, ResultError, false)
}

func TestCommandActionTimeoutKills(t *testing.T) {
	spec, _ := helperSpec(t, 0, time.Minute)
	start := time.Now()
	a, ok := testRunner(200*time.Millisecond).attempt(context.Background(), spec, "j", "cleanup", 1)
	if ok || a.Result != ResultTimeout || !strings.Contains(a.Error, "timed out after 200ms") {
		t.Fatalf("%+v ok=%v", a, ok)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a timed-out command held the attempt for %s", d)
	}
}

func TestCommandActionMissingBinary(t *testing.T) {
	spec := &ActionSpec{Kind: KindCommand, Argv: []string{filepath.Join(t.TempDir(), "nope")}}
	a, ok := testRunner(time.Second).attempt(context.Background(), spec, "j", "cancel", 1)
	if ok || a.Result != ResultError || a.ExitCode != nil || !strings.Contains(a.Error, "nope") {
		t.Fatalf("%+v ok=%v", a, ok)
	}
}

func TestExpandURL(t *testing.T) {
	f := func(tmpl, id, want string) {
		t.Helper()
		s := ActionSpec{Kind: KindHTTP, URL: tmpl}
		got, err := s.ExpandURL(id)
		if want == "" {
			if err == nil {
				t.Errorf("ExpandURL(%q, %q) = %q, want an error", tmpl, id, got)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("ExpandURL(%q, %q) = %q, %v; want %q", tmpl, id, got, err, want)
		}
	}
	f("http://store/jobs/${JOB}/cancel", "load:7.a-b_c", "http://store/jobs/load:7.a-b_c/cancel")
	f("http://store/jobs/${JOB}?job=${JOB}&force=1", "load.1", "http://store/jobs/load.1?job=load.1&force=1")
	// Ids are validated before they get here; escaping is the second line of
	// defence against an id adding path segments, query parameters or
	// fragments.
	f("http://store/jobs/${JOB}/cancel", "../admin?x=1#y", "http://store/jobs/..%2Fadmin%3Fx=1%23y/cancel")
	f("http://store/cancel?job=${JOB}", "a&force=1 b", "http://store/cancel?job=a%26force%3D1+b")
	f("http://${JOB}.store/cancel", "a", "")
	f("http://store:${JOB}/cancel", "80", "")
	f("ftp://store/${JOB}", "a", "")
	f("/relative/${JOB}", "a", "")
}

func TestHTTPActionHeadersAndBody(t *testing.T) {
	s := ActionSpec{Kind: KindHTTP, URL: "http://h/x", Headers: map[string]string{"X-Job": "${JOB}"}, Body: `{"job":"${JOB}"}`}
	req, err := s.request("j1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	if req.Method != http.MethodPost || req.Header.Get("X-Job") != "j1" || string(body) != `{"job":"j1"}` {
		t.Fatalf("%s %v %s", req.Method, req.Header, body)
	}
	if _, err := s.request("j\r\nX-Admin: 1"); err == nil {
		t.Fatal("header injection through the id accepted")
	}
	for _, bad := range []ActionSpec{
		{Kind: KindHTTP, URL: "http://h/", Method: "GET /x"},
		{Kind: KindHTTP, URL: "http://h/", Headers: map[string]string{"Bad Name": "v"}},
		{Kind: KindHTTP, URL: "http://h/", Argv: []string{"x"}},
		{Kind: KindCommand, Argv: []string{"x"}, URL: "http://h/"},
		{Kind: ""},
	} {
		if err := bad.Validate(); err == nil || !strings.HasPrefix(err.Error(), "state: ") {
			t.Errorf("Validate(%+v) = %v", bad, err)
		}
	}
}

// TestHTTPAction runs real HTTP actions against a local server: 2xx is
// success, 404 and 410 are "already gone", other statuses and slow answers
// are failed attempts.
func TestHTTPAction(t *testing.T) {
	var mu sync.Mutex
	var got []string
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+string(b))
		mu.Unlock()
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		if code == 0 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.WriteHeader(code)
		fmt.Fprint(w, "store says hi")
	}))
	defer srv.Close()
	defer close(release)
	f := func(code int, wantResult string, wantOK bool) {
		t.Helper()
		spec := &ActionSpec{Kind: KindHTTP, Method: "DELETE", URL: srv.URL + "/bulk/${JOB}?code=" + strconv.Itoa(code),
			Headers: map[string]string{"Authorization": "Bearer t"}, Body: "job=${JOB}"}
		a, ok := (&runner{client: srv.Client(), timeout: 300 * time.Millisecond, now: time.Now}).attempt(context.Background(), spec, "j.1", "cleanup", 1)
		if ok != wantOK || a.Result != wantResult || code != 0 && a.Status != code {
			t.Errorf("status %d: %+v ok=%v, want %s", code, a, ok, wantResult)
		}
		if code == 500 && !strings.Contains(a.Error, "store says hi") {
			t.Errorf("error text %q lacks the body", a.Error)
		}
	}
	f(200, ResultOK, true)
	f(204, ResultOK, true)
	f(404, ResultAlreadyGone, true)
	f(410, ResultAlreadyGone, true)
	f(409, ResultError, false)
	f(500, ResultError, false)
	f(0, ResultTimeout, false) // the server never answers
	mu.Lock()
	defer mu.Unlock()
	if got[0] != "DELETE /bulk/j.1?code=200 Bearer t job=j.1" {
		t.Errorf("server saw %q", got[0])
	}
}

// TestActionEnvDropsSluicesSettings: a cancel or cleanup command sees
// none of sluice's settings, which hold its credentials: the admin token,
// but also the token URL's headers (Authorization=Bearer …) and the fleet's
// Redis URL with its password. The rest of the environment (PATH, the
// store's own credentials a cleanup may need) passes.
func TestActionEnvDropsSluicesSettings(t *testing.T) {
	got := actionEnv([]string{"PATH=/bin", "SLUICE_ADMIN_TOKEN=s3cret", "SLUICE_PROFILE=s3",
		"SLUICE_TOKEN_URL_HEADERS=Authorization=Bearer t0ken", "SLUICE_FLEET_REDIS_URL=redis://:pw@redis:6379",
		"AWS_SECRET_ACCESS_KEY=k", "SLUICE_JOB=stale"})
	if strings.Join(got, " ") != "PATH=/bin AWS_SECRET_ACCESS_KEY=k" {
		t.Errorf("actionEnv = %q", got)
	}
}

// TestActionErrorsRedactURL: what an action's URL holds besides its
// endpoint (a password, query values) never reaches an attempt's error,
// which job views show.
func TestActionErrorsRedactURL(t *testing.T) {
	const secret = "S3CR3T-hunter2"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	defer srv.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	for _, base := range []string{srv.URL, dead.URL} {
		u := strings.Replace(base, "://", "://ops:"+secret+"@", 1) + "/_tasks/${JOB}?token=" + secret
		spec := &ActionSpec{Kind: KindHTTP, URL: u}
		a, ok := (&runner{client: srv.Client(), timeout: time.Second, now: time.Now}).attempt(context.Background(), spec, "j", "cancel", 1)
		if ok || a.Error == "" {
			t.Fatalf("%s: %+v ok=%v, want a failure", base, a, ok)
		}
		if strings.Contains(a.Error, secret) || !strings.Contains(a.Error, "ops:<redacted>@") {
			t.Errorf("%s: error %q", base, a.Error)
		}
	}
	for _, bad := range []string{"http://ops:" + secret + "@h/%zz", "ftp://ops:" + secret + "@h/"} {
		if _, err := (&ActionSpec{Kind: KindHTTP, URL: bad}).ExpandURL("j"); err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("ExpandURL(%q): %v", bad, err)
		}
	}
	v := redactSpec(&ActionSpec{Kind: KindHTTP, URL: "http://ops:" + secret + "@h/", Headers: map[string]string{"Authorization": secret}, Body: secret})
	if b, _ := json.Marshal(v); strings.Contains(string(b), secret) {
		t.Errorf("redactSpec shows the secret: %s", b)
	}
}

// TestCommandActionChildKeepsOutputOpen: a command that exits 0 and
// leaves a child holding its output open (a script that starts something
// in the background) succeeded. Its exit status is what counts: the
// attempt ends once the output is given up on, and is not a failure to
// retry and, at the last retry, fail the job with.
func TestCommandActionChildKeepsOutputOpen(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	for _, c := range []struct {
		exit   int
		result string
	}{{0, ResultOK}, {ExitAlreadyGone, ResultAlreadyGone}} {
		spec := &ActionSpec{Kind: KindCommand, Argv: []string{sh, "-c", "sleep 2 & exit " + strconv.Itoa(c.exit)}}
		a, ok := testRunner(time.Minute).attempt(context.Background(), spec, "j", "cleanup", 1)
		if !ok || a.Result != c.result || a.ExitCode == nil || *a.ExitCode != c.exit {
			t.Errorf("exit %d: %+v ok=%v, want %s", c.exit, a, ok, c.result)
		}
	}
}
