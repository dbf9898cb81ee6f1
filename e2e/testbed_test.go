//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/sluice-dev/sluice/internal/freeport"
)

// The testbed: real servers from Debian's packages, each a subprocess on a
// free 127.0.0.1 port with its data in the test's temporary directory,
// stopped by PID (with its process group) when the test ends, failed or
// not. Every wait is bounded.

// client talks to the testbed's servers. Its timeout bounds every call the
// tests make outside a Loader.
var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
}

// loaderClient is the loaders' client: a connection per writer, and a
// timeout above sluice's queue timeout and upstream timeout together.
func loaderClient(writers int) *http.Client {
	return &http.Client{
		Timeout:   90 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: writers, MaxIdleConns: 4 * writers, DisableCompression: true},
	}
}

// requireEnv, when set, makes a missing server fail the test instead of
// skipping it: .ci/e2e.sh sets it after installing them, so that CI cannot
// pass without having run the tests against them.
const requireEnv = "SLUICE_REQUIRE_E2E"

// binary returns the path of program, or skips the test naming it and the
// Debian package that ships it (fails it with requireEnv set).
func binary(t *testing.T, program, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	// nginx is in /usr/sbin, which a non-root PATH may lack.
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(dir, program)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv(requireEnv) != "" {
		t.Fatalf("e2e: %s not found in PATH or /usr/sbin and %s is set: install the Debian package %s", program, requireEnv, pkg)
	}
	t.Skipf("e2e: %s not found in PATH or /usr/sbin: install the Debian package %s (.ci/e2e.sh does it; see docs/e2e.md)", program, pkg)
	return ""
}

// requireTestbed skips the test unless every server it needs is installed
// (fails it with requireEnv set).
func requireTestbed(t *testing.T, nginx, vmagent bool) {
	t.Helper()
	binary(t, "victoria-metrics", "victoria-metrics")
	if vmagent {
		binary(t, "vmagent", "victoria-metrics")
	}
	if nginx {
		binary(t, "nginx", "nginx")
	}
}

// process is a server the test started.
type process struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error // Wait's result, once exited is closed
}

// startProcess starts argv in its own process group with output to
// dir/name.log, and stops it when the test ends.
func startProcess(t *testing.T, name, dir string, env []string, argv ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, logPath: filepath.Join(dir, name+".log")}
	p.start(env, argv)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", name, p.logTail(40))
		}
		p.keepLog()
	})
	return p
}

// keepLog copies the process's log into $E2E_LOG_DIR, when that is set,
// as <test>-<name>.log, ending with the CPU time the process used: for
// reading a run afterwards (the test's own directory is removed).
func (p *process) keepLog() {
	dir := os.Getenv("E2E_LOG_DIR")
	if dir == "" {
		return
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		p.t.Logf("e2e: E2E_LOG_DIR: %v", err)
		return
	}
	if !p.running() { // Wait has set ProcessState
		st := p.cmd.ProcessState
		b = fmt.Appendf(b, "e2e: %s used %v user, %v system CPU\n", p.name, st.UserTime(), st.SystemTime())
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name()) + "-" + p.name + ".log"
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		p.t.Logf("e2e: E2E_LOG_DIR: %v", err)
	}
}

func (p *process) start(env, argv []string) {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("e2e: %s log: %v", p.name, err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("e2e: starting %s: %v", p.name, err)
	}
	p.cmd, p.exited, p.err = cmd, make(chan struct{}), nil
	exited := p.exited
	go func() {
		p.err = cmd.Wait()
		close(exited)
	}()
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// running reports whether the process has not exited.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// signalGroup sends sig to the process's group, which it leads.
func (p *process) signalGroup(sig syscall.Signal) { _ = syscall.Kill(-p.pid(), sig) }

// stop asks the process to end (SIGTERM), and kills its group if it has
// not within 10s.
func (p *process) stop() {
	if !p.running() {
		return
	}
	p.signalGroup(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Logf("e2e: %s (pid %d) ignored SIGTERM for 10s: SIGKILL", p.name, p.pid())
		p.kill()
	}
	p.signalGroup(syscall.SIGKILL) // workers left behind, if any
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *process) kill() {
	p.signalGroup(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("e2e: %s (pid %d) survived SIGKILL for 10s", p.name, p.pid())
	}
}

func (p *process) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitFor polls check every 50ms until it returns nil, the process dies,
// or timeout passes.
func waitFor(t *testing.T, p *process, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if p != nil && !p.running() {
			t.Fatalf("e2e: %s exited (%v) while waiting for %s; log:\n%s", p.name, p.err, what, p.logTail(30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("e2e: %s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get fetches url and returns its status and up to 1 MiB of body.
func get(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

func wantStatus(url string, code int) func() error {
	return func() error {
		got, body, err := get(context.Background(), url)
		if err != nil {
			return err
		}
		if got != code {
			return fmt.Errorf("GET %s: status %d, want %d: %.200s", url, got, code, body)
		}
		return nil
	}
}

// baseEnv is this process's environment without SLUICE_* variables, so
// that a developer's own settings cannot leak into the testbed.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			env = append(env, kv)
		}
	}
	return env
}

// scrape reads a Prometheus text exposition and returns the sum of the
// samples of metric whose labels contain every one of labels (as
// `name="value"` text).
func scrape(t *testing.T, url, metric string, labels ...string) float64 {
	t.Helper()
	code, body, err := get(context.Background(), url)
	if err != nil || code != http.StatusOK {
		t.Fatalf("e2e: scraping %s: %d %v", url, code, err)
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(nil, 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		name, rest, _ := strings.Cut(line, " ")
		lbls := ""
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			j := strings.LastIndexByte(line, '}')
			name, lbls, rest = line[:i], line[i:j+1], strings.TrimSpace(line[j+1:])
		}
		if name != metric {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(lbls, l) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			t.Fatalf("e2e: %s: %q: %v", url, line, err)
		}
		sum += v
	}
	return sum
}

// victoria is a VictoriaMetrics single node.
type victoria struct {
	url  string
	p    *process
	argv []string // to start it again on the same port and data
}

// startVictoria starts VictoriaMetrics with extra flags and waits until it
// is healthy.
func startVictoria(t *testing.T, flags ...string) *victoria {
	t.Helper()
	bin := binary(t, "victoria-metrics", "victoria-metrics")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t, 1)[0])
	argv := append([]string{bin,
		"-httpListenAddr=" + addr,
		"-storageDataPath=" + filepath.Join(dir, "data"),
		"-loggerLevel=ERROR",
	}, flags...)
	v := &victoria{url: "http://" + addr, argv: argv, p: startProcess(t, "victoria-metrics", dir, baseEnv(), argv...)}
	waitFor(t, v.p, 30*time.Second, "VictoriaMetrics healthy", wantStatus(v.url+"/health", http.StatusOK))
	return v
}

// stop ends VictoriaMetrics with SIGTERM, on which it finishes the writes
// it has taken and flushes them to disk before it exits, and waits until
// nothing listens on its port.
func (v *victoria) stop(t *testing.T) {
	t.Helper()
	v.p.stop()
	waitFor(t, nil, 10*time.Second, "VictoriaMetrics' port closed", func() error {
		c, err := net.DialTimeout("tcp", v.url[len("http://"):], time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		return errors.New("still accepting connections")
	})
}

// start starts VictoriaMetrics again after stop, on the same port and
// data directory, and waits until it is healthy.
func (v *victoria) start(t *testing.T) {
	t.Helper()
	v.p.start(baseEnv(), v.argv)
	waitFor(t, v.p, 30*time.Second, "VictoriaMetrics healthy again", wantStatus(v.url+"/health", http.StatusOK))
}

// imports is what VictoriaMetrics counted on its write paths.
type imports struct {
	Requests float64 // /api/v1/import and /api/v1/write requests
	Rejected float64 // answered 503: over -maxConcurrentInserts for -insert.maxQueueDuration
	Rows     float64 // rows inserted, a retried duplicate counted again
}

// Share503 is the share of write requests the store answered with 503.
func (i imports) Share503() float64 {
	if i.Requests == 0 {
		return 0
	}
	return i.Rejected / i.Requests
}

func (v *victoria) imports(t *testing.T) imports {
	t.Helper()
	m := v.url + "/metrics"
	return imports{
		Requests: scrape(t, m, "vm_http_requests_total", `path="/api/v1/import"`) +
			scrape(t, m, "vm_http_requests_total", `path="/api/v1/write"`),
		Rejected: scrape(t, m, "vm_concurrent_insert_limit_timeout_total"),
		Rows:     scrape(t, m, "vm_rows_inserted_total"),
	}
}

// flush makes every acknowledged sample visible to queries at once.
func (v *victoria) flush(t *testing.T) {
	t.Helper()
	if code, body, err := get(context.Background(), v.url+"/internal/force_flush"); err != nil || code != http.StatusOK {
		t.Fatalf("e2e: force_flush: %d %v %s", code, err, body)
	}
}

// export reads the samples of job from the store.
func (v *victoria) export(t *testing.T, job string, from time.Time) *Stored {
	t.Helper()
	s, err := Export(context.Background(), client, v.url, fmt.Sprintf(`{job=%q}`, job), from.Add(-time.Minute), time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stored waits until the store shows at least as many samples of l's job
// as res acknowledged (data becomes visible 1-3s after the write: poll, at
// most 30s), then compares them exactly.
func (v *victoria) stored(t *testing.T, l *Loader, res Result) Check {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v.flush(t)
		s := v.export(t, l.Job, l.Start)
		if int64(s.Samples()) >= res.AckedSamples || time.Now().After(deadline) {
			// Visible in full: one more read after a flush, so that
			// nothing arriving late goes unseen.
			v.flush(t)
			return l.Check(res, v.export(t, l.Job, l.Start))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// nginxConf renders testdata/nginx.conf.tmpl.
type nginxConf struct {
	Dir        string
	Port       int
	Upstream   string // host:port of VictoriaMetrics
	Quota      bool   // limit_req on
	Rate       int    // requests per second
	Burst      int
	RetryAfter int // seconds, on 429 answers; 0: no Retry-After
	RejectAll  bool
	Root       bool
}

// gateway is nginx in front of VictoriaMetrics.
type gateway struct {
	url  string
	conf nginxConf
	p    *process
}

func startNginx(t *testing.T, conf nginxConf) *gateway {
	t.Helper()
	bin := binary(t, "nginx", "nginx")
	conf.Dir = t.TempDir()
	conf.Port = freeport.Get(t, 1)[0]
	conf.Root = os.Geteuid() == 0 // workers would run as nobody, who cannot enter conf.Dir
	if conf.Rate == 0 {
		conf.Rate = 1 // the zone needs a rate even when unused
	}
	g := &gateway{url: fmt.Sprintf("http://127.0.0.1:%d", conf.Port)}
	g.write(t, conf)
	confPath := filepath.Join(conf.Dir, "nginx.conf")
	if out, err := exec.Command(bin, "-t", "-q", "-p", conf.Dir, "-e", filepath.Join(conf.Dir, "error.log"), "-c", confPath).CombinedOutput(); err != nil {
		t.Fatalf("e2e: nginx -t: %v\n%s", err, out)
	}
	g.p = startProcess(t, "nginx", conf.Dir, baseEnv(), bin, "-p", conf.Dir, "-e", filepath.Join(conf.Dir, "error.log"), "-c", confPath)
	waitFor(t, g.p, 30*time.Second, "nginx serving", func() error {
		code, _, err := get(context.Background(), g.url+"/health")
		if err != nil {
			return err
		}
		if code != http.StatusOK && !(conf.RejectAll && code == http.StatusTooManyRequests) {
			return fmt.Errorf("GET /health through nginx: %d", code)
		}
		return nil
	})
	return g
}

func (g *gateway) write(t *testing.T, conf nginxConf) {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "nginx.conf.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(conf.Dir, "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tmpl.Execute(f, conf); err != nil {
		t.Fatal(err)
	}
	g.conf = conf
}

// rejectAll reloads nginx (SIGHUP to the master) to refuse every request
// with 429, and waits until it does.
func (g *gateway) rejectAll(t *testing.T) {
	t.Helper()
	g.reconfigure(t, func(c *nginxConf) { c.RejectAll = true })
}

// reconfigure applies change to nginx's configuration, reloads it (SIGHUP
// to the master), and waits until every request is answered by the new
// one: /health answers 429 when it refuses everything, 200 otherwise.
func (g *gateway) reconfigure(t *testing.T, change func(*nginxConf)) {
	t.Helper()
	conf := g.conf
	change(&conf)
	g.write(t, conf)
	_ = syscall.Kill(g.p.pid(), syscall.SIGHUP)
	want := http.StatusOK
	if conf.RejectAll {
		want = http.StatusTooManyRequests
	}
	waitFor(t, g.p, 15*time.Second, fmt.Sprintf("nginx reloaded (/health answering %d)", want), wantStatus(g.url+"/health", want))
	// A reload is graceful: old workers finish the requests they hold, on
	// connections sluice opened before, with the old configuration. Wait
	// for them to exit so that from here on only conf answers. Only this
	// gateway's workers count (its process group): other nginx instances,
	// of tests running in parallel, reload on their own.
	waitFor(t, g.p, 15*time.Second, "nginx's old workers gone", func() error {
		cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, f := range cmdlines {
			if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "worker process is shutting down") && processGroup(filepath.Dir(f)) == g.p.pid() {
				return fmt.Errorf("%s: %s", f, b)
			}
		}
		return nil
	})
}

// processGroup is the process group of the process whose /proc directory
// is dir, or -1 if it cannot be read (the process is gone).
func processGroup(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return -1
	}
	// pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return -1
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return -1
	}
	return pgrp
}

// agent is vmagent.
type agent struct {
	url string
	p   *process
}

// startVMAgent starts vmagent remote-writing to remoteWrite with
// X-Sluice-Job: job on every request (none when job is empty: its writes
// go to sluice's default job), its persistent queue in a temporary
// directory.
func startVMAgent(t *testing.T, remoteWrite, job string) *agent {
	t.Helper()
	bin := binary(t, "vmagent", "victoria-metrics")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freeport.Get(t, 1)[0])
	a := &agent{url: "http://" + addr}
	argv := []string{bin,
		"-httpListenAddr=" + addr,
		"-remoteWrite.url=" + remoteWrite,
		"-remoteWrite.tmpDataPath=" + filepath.Join(dir, "queue"),
		"-remoteWrite.flushInterval=100ms",
		"-remoteWrite.queues=16", // as many concurrent senders as the Go loader has writers
		"-loggerLevel=WARN",
	}
	if job != "" {
		argv = append(argv, "-remoteWrite.headers=X-Sluice-Job:"+job)
	}
	a.p = startProcess(t, "vmagent", dir, baseEnv(), argv...)
	waitFor(t, a.p, 30*time.Second, "vmagent healthy", wantStatus(a.url+"/health", http.StatusOK))
	return a
}

// sluice is sluice running as a subprocess.
type sluice struct {
	proxyURL, adminURL string
	env                []string
	dir                string
	p                  *process
}

// startSluice builds sluice (once) and runs `sluice run` with env (SLUICE_*
// assignments) on free ports, its job state in a temporary directory.
func startSluice(t *testing.T, env ...string) *sluice {
	t.Helper()
	bin := sluiceBinary(t)
	s := &sluice{dir: t.TempDir()}
	ports := freeport.Get(t, 2)
	proxy, admin := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	s.proxyURL, s.adminURL = "http://"+proxy, "http://"+admin
	s.env = append(baseEnv(),
		"SLUICE_LISTEN_ADDR="+proxy,
		"SLUICE_ADMIN_ADDR="+admin,
		"SLUICE_ADMIN_URL="+s.adminURL,
		"SLUICE_STATE_DIR="+filepath.Join(s.dir, "state"),
		"SLUICE_LOG_FORMAT=text",
	)
	s.env = append(s.env, env...)
	s.p = startProcess(t, "sluice", s.dir, s.env, bin, "run")
	s.waitReady(t)
	return s
}

func (s *sluice) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, s.p, 30*time.Second, "sluice ready", wantStatus(s.adminURL+"/readyz", http.StatusOK))
}

// killAndRestart sends SIGKILL to sluice, waits for it to die, and starts
// it again with the same configuration and state directory.
func (s *sluice) killAndRestart(t *testing.T) {
	t.Helper()
	s.p.kill()
	s.p.start(s.env, []string{sluiceBinary(t), "run"})
	s.waitReady(t)
}

// jobView is the part of GET /v1/jobs/{id} the tests read.
type jobView struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
	History []struct {
		From   string `json:"from"`
		To     string `json:"to"`
		Reason string `json:"reason"`
	} `json:"history"`
	Attempts []struct {
		Action string `json:"action"`
		Result string `json:"result"`
		Status int    `json:"status"`
		Error  string `json:"error"`
	} `json:"attempts"`
}

func (s *sluice) job(t *testing.T, id string) jobView {
	t.Helper()
	code, body, err := get(context.Background(), s.adminURL+"/v1/jobs/"+id)
	if err != nil || code != http.StatusOK {
		t.Fatalf("e2e: GET /v1/jobs/%s: %d %v %s", id, code, err, body)
	}
	var v jobView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("e2e: job %s: %v: %s", id, err, body)
	}
	return v
}

// complete declares job done (POST /v1/jobs/{id}/complete).
func (s *sluice) complete(t *testing.T, id string) {
	t.Helper()
	resp, err := client.Post(s.adminURL+"/v1/jobs/"+id+"/complete", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("e2e: completing job %s: %d %s", id, resp.StatusCode, body)
	}
}

// waitJob waits until job is in one of states, at most timeout.
func (s *sluice) waitJob(t *testing.T, id string, timeout time.Duration, states ...string) jobView {
	t.Helper()
	var v jobView
	waitFor(t, s.p, timeout, "job "+id+" in "+strings.Join(states, "/"), func() error {
		v = s.job(t, id)
		for _, st := range states {
			if v.State == st {
				return nil
			}
		}
		return errors.New("job " + id + " is " + v.State)
	})
	return v
}

// runLoader runs l with a bound on its duration and fails the test if it
// did not finish in time.
func runLoader(t *testing.T, l *Loader, timeout time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := l.Run(ctx)
	if err != nil {
		t.Fatalf("e2e: loader %s: %v after %v (acked %d of %d samples, pending %d; answers %v; last error %q)",
			l.Job, err, res.Elapsed, res.AckedSamples, l.Samples(), res.PendingSamples, res.Status, res.LastError)
	}
	return res
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// loadResult is how a load run in the background ended.
type loadResult struct {
	res Result
	err error
}

// runLoadInBackground runs l, giving up after timeout; how it ended
// arrives on the channel it returns.
func runLoadInBackground(l *Loader, timeout time.Duration) <-chan loadResult {
	done := make(chan loadResult, 1)
	go func() {
		ctx, cancel := contextWithTimeout(timeout)
		defer cancel()
		res, err := l.Run(ctx)
		done <- loadResult{res, err}
	}()
	return done
}
