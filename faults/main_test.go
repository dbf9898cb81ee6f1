package faults

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/internal/logbuf"
	"github.com/sluice-dev/sluice/internal/testbin"
	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/admin"
)

var soakFlag = flag.Bool("soak", false, "run the 10-minute soak test (also SLUICE_SOAK=1)")

// helperArgv is the first argument that makes the test binary record its
// own argv (as JSON, to the file named next) and exit 0: the command action
// used by the ${JOB} injection tests.
const helperArgv = "faults-helper-record-argv"

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == helperArgv {
		b, _ := json.Marshal(os.Args[3:])
		f, err := os.OpenFile(os.Args[2], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintf(f, "%s\n", b)
		f.Close()
		os.Exit(0)
	}
	flag.Parse()
	code := 0
	func() {
		defer testbin.Cleanup()
		goleak.VerifyTestMain(exitCatcher{m, &code})
	}()
	os.Exit(code)
}

// exitCatcher lets TestMain clean up the built binary after goleak has
// checked: goleak.VerifyTestMain calls os.Exit itself otherwise.
type exitCatcher struct {
	m    *testing.M
	code *int
}

func (e exitCatcher) Run() int { *e.code = e.m.Run(); return *e.code }

// sluiceBinary is the sluice command built from this module, once.
func sluiceBinary(t *testing.T) string { return testbin.Sluice(t) }

// inproc is sluice served in the test process on loopback listeners.
type inproc struct {
	srv      *sidecar.Server
	cfg      sidecar.Config
	proxyURL string
	adminURL string
	logs     *logbuf.Buffer
	stopOnce sync.Once
	stop     func()
}

// startInproc serves sluice configured by env (KEY=value, SLUICE_ prefix
// included) on 127.0.0.1 ports until the test ends (or stop is called), and
// waits until it is ready.
func startInproc(t *testing.T, env ...string) *inproc {
	t.Helper()
	return startInprocListeners(t, "127.0.0.1:0", "127.0.0.1:0", env...)
}

func startInprocListeners(t *testing.T, proxyAddr, adminAddr string, env ...string) *inproc {
	t.Helper()
	cfg, _, err := sidecar.LoadConfig(append([]string{"SLUICE_LOG_LEVEL=debug"}, env...))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &logbuf.Buffer{}
	srv, err := sidecar.NewServer(cfg, sidecar.Options{Logger: sidecar.NewLogger(cfg, logs)})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	proxyLn, err := net.Listen("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, proxyLn, adminLn) }()
	p := &inproc{srv: srv, cfg: cfg, proxyURL: "http://" + dialable(proxyLn.Addr()),
		adminURL: "http://" + dialable(adminLn.Addr()), logs: logs}
	p.stop = func() {
		p.stopOnce.Do(func() {
			cancel()
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(cfg.ShutdownTimeout + 10*time.Second):
				t.Errorf("Serve did not return after its context ended")
			}
		})
	}
	t.Cleanup(p.stop)
	waitReady(t, p.adminURL, func() string { return logs.String() })
	return p
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, adminURL string, logs func() string) {
	t.Helper()
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if !eventually(10*time.Second, func() bool {
		resp, err := c.Get(adminURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("sluice did not become ready at %s; logs:\n%s", adminURL, logs())
	}
}

// eventually polls cond every 20ms until it holds or timeout passes. The
// tests use it only to wait for another process or the network (a
// subprocess restarting, a connection closing), never to let time pass.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// adminClient talks to an admin API without keeping connections.
var adminClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// getJSON GETs url and decodes the JSON answer into v; it returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := adminClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %d, not JSON: %v: %q", url, resp.StatusCode, err, b)
		}
	}
	return resp.StatusCode
}

// call makes an admin request and returns the status and the body.
func call(t *testing.T, method, url, body string, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func status(t *testing.T, adminURL string) admin.Status {
	t.Helper()
	var s admin.Status
	if code := getJSON(t, adminURL+"/v1/status", &s); code != http.StatusOK {
		t.Fatalf("/v1/status: %d", code)
	}
	return s
}

// metricsText returns the /metrics exposition.
func metricsText(t *testing.T, adminURL string) string {
	t.Helper()
	code, b := call(t, http.MethodGet, adminURL+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	return string(b)
}

// series returns the sample lines of a text exposition.
func series(exposition string) []string {
	var out []string
	for _, l := range strings.Split(exposition, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// metricValue sums the samples of name whose line contains every one of
// the label matchers (`kind="timeout"`).
func metricValue(exposition, name string, matchers ...string) float64 {
	var sum float64
	for _, l := range series(exposition) {
		metric, value, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(metric, "{")
		if n != name {
			continue
		}
		match := true
		for _, m := range matchers {
			if !strings.Contains(metric, m) {
				match = false
			}
		}
		if match {
			var v float64
			fmt.Sscan(value, &v)
			sum += v
		}
	}
	return sum
}

// countFDs counts this process's open file descriptors.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// dialable turns a listener's address into one a client can dial: an
// unspecified host (0.0.0.0, ::) becomes loopback.
func dialable(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ip.To4() != nil {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}
