package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/internal/freeport"
)

// config is the harness's run, from the flags.
type config struct {
	base, baseBin string
	sluiceBin     string
	quick         bool
	writers       int
	round, warmup time.Duration
	rounds        int
	sizes         []int
	adaptive      bool
	// retryBodyMax is sluice's SLUICE_RETRY_BODY_MAX: bodies up to it are
	// buffered, larger ones stream.
	retryBodyMax string
	// The latency phase (see pacedSpec): pairs cycles of blocks of at
	// least block and minSamples writes each.
	pairs      int
	block      time.Duration
	minSamples int
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux port Go supports).
const clockTick = 10 * time.Millisecond

// jobName is the X-Sluice-Job of the "+job" variants.
const jobName = "bench-job"

// proc is a process the harness started and stops at the end.
type proc struct {
	name string
	cmd  *exec.Cmd
	url  string // where it serves writes
	log  string // its stderr
}

// target is what one measurement drives: a proxy process, and the job
// header the load carries.
type target struct {
	name string
	p    *proc
	job  string
	bare bool
}

// tally adds up a target's measurements across rounds.
type tally struct {
	writes, errors, bytes int64
	seconds               float64
	cpu                   time.Duration
	lat                   []int64
	firstErr              string
	rounds                []round // each round's, for ratios taken round by round
}

// round is one measurement of a target.
type round struct {
	writes, bytes int64
	seconds       float64
	cpu           time.Duration
}

func (r round) cpuPerWrite() float64 { return float64(r.cpu) / float64(max(r.writes, 1)) }
func (r round) bytesPerSec() float64 { return float64(r.bytes) / r.seconds }

// ratio is the median over rounds of f(t's round) / f(b's round) (b
// measured in the same round, next to t), with its lowest and highest:
// a burst of someone else's load on the machine moves one round, not the
// median.
func ratio(t, b *tally, f func(round) float64) (med, lo, hi float64) {
	var rs []float64
	for i := range min(len(t.rounds), len(b.rounds)) {
		if d := f(b.rounds[i]); d > 0 {
			rs = append(rs, f(t.rounds[i])/d)
		}
	}
	if len(rs) == 0 {
		return 0, 0, 0
	}
	slices.Sort(rs)
	n := len(rs)
	med = rs[n/2]
	if n%2 == 0 {
		med = (rs[n/2-1] + rs[n/2]) / 2
	}
	return med, rs[0], rs[n-1]
}

func (t *tally) rate() float64        { return float64(t.writes) / t.seconds }
func (t *tally) bytesPerSec() float64 { return float64(t.bytes) / t.seconds }
func (t *tally) cpuPerWrite() time.Duration {
	if t.writes == 0 {
		return 0
	}
	return t.cpu / time.Duration(t.writes)
}

// pct is the p-th quantile of the latencies, as quantile takes it.
func (t *tally) pct(p float64) time.Duration { return quantile(t.lat, p) }

type harnessRun struct {
	cfg   config
	self  string
	tmp   string
	mu    sync.Mutex
	procs []*proc
}

func harness(cfg config) (err error) {
	if runtime.GOOS != "linux" {
		return errors.New("needs Linux: CPU time is read from /proc/<pid>/stat")
	}
	h := &harnessRun{cfg: cfg}
	if h.self, err = os.Executable(); err != nil {
		return err
	}
	if h.tmp, err = os.MkdirTemp("", "sluice-outofprocess-"); err != nil {
		return err
	}
	defer os.RemoveAll(h.tmp)
	defer h.stopAll()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		h.stopAll()
		os.RemoveAll(h.tmp)
		os.Exit(130)
	}()

	type build struct{ label, path string }
	builds := []build{{"sluice", cfg.sluiceBin}}
	if builds[0].path == "" {
		if builds[0].path, err = h.buildSluice("", "sluice"); err != nil {
			return err
		}
	}
	if cfg.baseBin != "" {
		builds = append(builds, build{"sluice@base", cfg.baseBin})
	} else if cfg.base != "" {
		rev, err := gitOutput("rev-parse", "--short", cfg.base+"^{commit}")
		if err != nil {
			return fmt.Errorf("-base %s: %w", cfg.base, err)
		}
		path, err := h.buildSluice(rev, "sluice-"+rev)
		if err != nil {
			return err
		}
		builds = append(builds, build{"sluice@" + rev, path})
	}

	store, err := h.startSelf("store", "-role=store")
	if err != nil {
		return err
	}
	bare, err := h.startSelf("bare", "-role=bare", "-upstream="+store.url)
	if err != nil {
		return err
	}
	type sluices struct{ plain, dir *proc }
	var all []sluices
	for _, b := range builds {
		plain, err := h.startSluice(b.label, b.path, store.url, false)
		if err != nil {
			return err
		}
		dir, err := h.startSluice(b.label+" +dir", b.path, store.url, true)
		if err != nil {
			return err
		}
		all = append(all, sluices{plain: plain, dir: dir})
	}

	head, _ := gitOutput("rev-parse", "--short", "HEAD")
	dirty, _ := gitOutput("status", "--porcelain", "--untracked-files=no")
	if dirty != "" {
		head += "+changes"
	}
	fmt.Printf("outofprocess: %d cores, %s, sluice from %s; %d writers, %d rounds of %v per target (after %v of warm-up), targets alternating\n",
		runtime.NumCPU(), runtime.Version(), head, cfg.writers, cfg.rounds, cfg.round, cfg.warmup)
	fmt.Printf("CPU/write: the proxy process's own utime+stime (/proc/<pid>/stat) over the measured interval, per write answered in it\n")
	if cfg.adaptive {
		fmt.Printf("limits: adaptive (SLUICE_CONTROL_INTERVAL at its default): the control law moves sluice's limits during the run\n")
	} else {
		fmt.Printf("limits: wide open and held (rate 1e9/s, concurrency 64, SLUICE_CONTROL_INTERVAL=1h: no window ends during the run)\n")
	}
	fmt.Printf("bodies: up to %s buffered for retries, larger ones streamed (SLUICE_RETRY_BODY_MAX)\n", cfg.retryBodyMax)
	fmt.Printf("+job: writes carry X-Sluice-Job; +dir: SLUICE_STATE_DIR set (jobs recorded in bbolt)\n")
	fmt.Printf("processes: no CPU affinity, GOMAXPROCS left at its default (%d) in every one, the same for every target\n", runtime.NumCPU())

	// Peak phases first, every size, then the paced ones: with -adaptive,
	// a limiter that trimmed its concurrency to a paced load would start
	// the next peak measurement below the writers' count.
	peaks := make(map[int]map[string]*tally)
	for _, size := range cfg.sizes {
		ts := []target{{name: "bare", p: bare, bare: true}}
		for i, s := range all {
			ts = append(ts, target{name: s.plain.name, p: s.plain})
			// Every variant of the build measured, one for a base build.
			if size <= smallMax && !cfg.quick && i == 0 {
				ts = append(ts,
					target{name: s.plain.name + " +job", p: s.plain, job: jobName},
					target{name: s.dir.name, p: s.dir})
			}
			ts = append(ts, target{name: s.dir.name + " +job", p: s.dir, job: jobName})
		}
		res, err := h.measure(ts, size)
		if err != nil {
			return err
		}
		peaks[size] = res
		printPeak(ts, size, res, cfg)
	}
	for _, size := range cfg.sizes {
		ts := []target{{name: "bare", p: bare, bare: true}}
		for _, s := range all {
			ts = append(ts, target{name: s.plain.name, p: s.plain})
		}
		spec := pacedSpec{Writers: cfg.writers, Size: size, Rate: peaks[size]["bare"].rate() * latencyRateFrac,
			Cycles: cfg.pairs, Warmup: cfg.warmup}
		// Long enough that a block's p99 is not its largest sample.
		spec.Block = max(cfg.block, time.Duration(float64(cfg.minSamples)/spec.Rate*float64(time.Second)))
		for _, t := range ts {
			spec.Targets = append(spec.Targets, t.p.url)
		}
		blocks, err := h.measurePaced(spec)
		if err != nil {
			return fmt.Errorf("%s, paced: %w", sizeName(size), err)
		}
		printLatency(ts, spec, blocks)
	}
	return nil
}

// measure runs cfg.rounds rounds over ts, each target once per round, the
// order rotating from round to round so that none is always first after
// another's load: the closed loop of the peak phase.
func (h *harnessRun) measure(ts []target, size int) (map[string]*tally, error) {
	res := make(map[string]*tally, len(ts))
	for _, t := range ts {
		res[t.name] = &tally{}
	}
	for r := range h.cfg.rounds {
		for i := range ts {
			t := ts[(i+r)%len(ts)]
			if err := h.measureOnce(t, size, res[t.name]); err != nil {
				return nil, fmt.Errorf("%s, %s: %w", t.name, sizeName(size), err)
			}
		}
	}
	return res, nil
}

// measurePaced runs one paced load generator over spec and returns its
// blocks.
func (h *harnessRun) measurePaced(spec pacedSpec) ([]pacedBlock, error) {
	cmd := exec.Command(h.self, "-role=paced", "-targets="+strings.Join(spec.Targets, ","), "-writers="+strconv.Itoa(spec.Writers),
		"-size="+strconv.Itoa(spec.Size), "-rate="+strconv.FormatFloat(spec.Rate, 'f', 1, 64),
		"-warmup="+spec.Warmup.String(), "-block="+spec.Block.String(), "-pairs="+strconv.Itoa(spec.Cycles))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	blocks, rerr := readPaced(sc)
	if err := errors.Join(rerr, cmd.Wait()); err != nil {
		return nil, err
	}
	if want := spec.Cycles * len(spec.Targets); len(blocks) != want {
		return nil, fmt.Errorf("paced load generator printed %d blocks, want %d", len(blocks), want)
	}
	return blocks, nil
}

// measureOnce starts a load generator against t and reads t's process CPU
// when the generator says the measured interval starts and ends.
func (h *harnessRun) measureOnce(t target, size int, into *tally) error {
	cmd := exec.Command(h.self, "-role=load", "-target="+t.p.url, "-writers="+strconv.Itoa(h.cfg.writers),
		"-size="+strconv.Itoa(size), "-job="+t.job,
		"-warmup="+h.cfg.warmup.String(), "-round="+h.cfg.round.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait() //nolint:errcheck // its exit is checked below when it matters
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	var cpu0, cpu1 time.Duration
	for _, want := range []string{"start", "stop"} {
		if !sc.Scan() {
			return fmt.Errorf("load generator ended before %q: %v", want, sc.Err())
		}
		if sc.Text() != want {
			return fmt.Errorf("load generator said %q, want %q", sc.Text(), want)
		}
		c, err := procCPU(t.p.cmd.Process.Pid)
		if err != nil {
			return err
		}
		if want == "start" {
			cpu0 = c
		} else {
			cpu1 = c
		}
	}
	if !sc.Scan() {
		return fmt.Errorf("load generator ended without its result: %v", sc.Err())
	}
	var lr loadResult
	if err := json.Unmarshal(sc.Bytes(), &lr); err != nil {
		return fmt.Errorf("load generator's result: %w", err)
	}
	into.writes += lr.Writes
	into.errors += lr.Errors
	into.bytes += lr.Bytes
	into.seconds += lr.Seconds
	into.cpu += cpu1 - cpu0
	into.rounds = append(into.rounds, round{writes: lr.Writes, bytes: lr.Bytes, seconds: lr.Seconds, cpu: cpu1 - cpu0})
	into.lat = append(into.lat, lr.LatNS...)
	if into.firstErr == "" {
		into.firstErr = lr.FirstErr
	}
	return nil
}

// procCPU is the user and system CPU time pid has used, all its threads.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: the fields
	// counted are those after it. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// startSelf runs this program with a -role that prints its URL on its
// first line of output.
func (h *harnessRun) startSelf(name string, args ...string) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(h.self, args...), log: filepath.Join(h.tmp, name+".log")}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd.Stderr = logf
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := h.start(p); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("%s did not say where it listens: %w (log: %s)", name, err, tail(p.log))
	}
	p.url = strings.TrimSpace(line)
	return p, nil
}

// startSluice runs a sluice binary with its limits wide open: what is
// measured is the write path (admission, the limiter's permit, the
// attempt and its deadline, classification, accounting), never a limit.
func (h *harnessRun) startSluice(name, bin, store string, stateDir bool) (*proc, error) {
	addrs, err := freeport.Addrs(2)
	if err != nil {
		return nil, err
	}
	listen, admin := addrs[0], addrs[1]
	env := []string{
		"SLUICE_UPSTREAM_URL=" + store,
		"SLUICE_LISTEN_ADDR=" + listen,
		"SLUICE_ADMIN_ADDR=" + admin,
		"SLUICE_INITIAL_RATE=1000000000", "SLUICE_MAX_RATE=1000000000",
		"SLUICE_INITIAL_CONCURRENCY=64", "SLUICE_MAX_CONCURRENCY=64",
		"SLUICE_QUEUE_MAX=100000",
		// By default the 4 MiB bodies stream, the others are buffered
		// for retries.
		"SLUICE_RETRY_BODY_MAX=" + h.cfg.retryBodyMax,
	}
	if !h.cfg.adaptive {
		// The limits stay where they start: the controller adapts them
		// once per window, and on a saturated 2-core machine it would
		// find latency rising with concurrency and trim it below the
		// writers' count, which measures the control law, not the path.
		env = append(env, "SLUICE_CONTROL_INTERVAL=1h")
	}
	if stateDir {
		dir := filepath.Join(h.tmp, strings.NewReplacer(" ", "", "+", "", "@", "-").Replace(name)+"-state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, err
		}
		env = append(env, "SLUICE_STATE_DIR="+dir)
	}
	// Nothing of the caller's SLUICE_* or GOMEMLIMIT reaches it: every
	// sluice measured runs as configured here.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") && !strings.HasPrefix(kv, "GOMEMLIMIT=") && !strings.HasPrefix(kv, "GOGC=") {
			env = append(env, kv)
		}
	}
	p := &proc{name: name, cmd: exec.Command(bin, "run"), url: "http://" + listen,
		log: filepath.Join(h.tmp, strings.ReplaceAll(name, " ", "")+".log")}
	p.cmd.Env = env
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd.Stderr = logf
	if err := h.start(p); err != nil {
		return nil, err
	}
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(15 * time.Second); ; {
		resp, err := c.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s not ready within 15s (log: %s)", name, tail(p.log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harnessRun) start(p *proc) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	h.procs = append(h.procs, p)
	return nil
}

// stopAll ends every process the harness started, gently first.
func (h *harnessRun) stopAll() {
	h.mu.Lock()
	procs := h.procs
	h.procs = nil
	h.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	}
}

// buildSluice builds the sluice binary: from this module's tree as it is
// (rev empty), or from git revision rev, exported into a scratch directory
// (no worktree, nothing of the repository's state changes).
func (h *harnessRun) buildSluice(rev, name string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	src := root
	if rev != "" {
		src = filepath.Join(h.tmp, "src-"+rev)
		if err := exportRevision(root, rev, src); err != nil {
			return "", fmt.Errorf("export %s: %w", rev, err)
		}
	}
	bin := filepath.Join(h.tmp, name)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", name, err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run it inside the sluice module (go run ./bench/outofprocess)")
	}
	return filepath.Dir(gomod), nil
}

// exportRevision writes the files of rev (git archive) under dst.
func exportRevision(root, rev, dst string) error {
	cmd := exec.Command("git", "-C", root, "archive", "--format=tar", rev)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	tr := tar.NewReader(out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			_ = cmd.Wait()
			return err
		}
		name := filepath.Join(dst, filepath.FromSlash(hdr.Name))
		if !strings.HasPrefix(name, filepath.Clean(dst)+string(filepath.Separator)) {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(name, 0o755)
		case tar.TypeReg:
			err = writeFile(name, tr, os.FileMode(hdr.Mode).Perm())
		}
		if err != nil {
			_ = cmd.Wait()
			return err
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%w: %s", err, stderr.String())
	}
	return nil
}

func writeFile(name string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	return errors.Join(err, f.Close())
}

func gitOutput(args ...string) (string, error) {
	out, err := exec.Command("git", args...).Output()
	return strings.TrimSpace(string(out)), err
}

// tail is the end of a log file, for an error.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}
