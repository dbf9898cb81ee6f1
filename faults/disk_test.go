package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// smallTmpfs mounts a tmpfs of size bytes on a fresh directory and unmounts
// it when the test ends. It skips the test when mounting is not permitted.
func smallTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("SKIPPED: cannot mount a small tmpfs to fill or make read-only (needs root with CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

// immutable sets or clears the immutable attribute (chattr +i) of dir and
// the database in it: writes to the open file then fail with EPERM, which
// is how sluice sees a state dir turned read-only under it (a busy tmpfs
// cannot be remounted read-only). It skips the test where chattr is not
// permitted.
func immutable(t *testing.T, dir string, on bool) {
	t.Helper()
	flag := "-i"
	if on {
		flag = "+i"
	}
	for _, p := range []string{filepath.Join(dir, "sluice.db"), dir} {
		if out, err := exec.Command("chattr", flag, p).CombinedOutput(); err != nil {
			if on {
				t.Skipf("SKIPPED: cannot make the state dir read-only with chattr +i (needs root on a file system with attributes): %v: %s", err, out)
			}
			t.Errorf("chattr %s %s: %v: %s", flag, p, err, out)
		}
	}
	if on {
		t.Cleanup(func() {
			for _, p := range []string{filepath.Join(dir, "sluice.db"), dir} {
				_ = exec.Command("chattr", "-i", p).Run()
			}
		})
	}
}

// cancelRecorder is a store double that counts cancel and cleanup calls per
// job and accepts writes.
type cancelRecorder struct {
	mu    sync.Mutex
	calls map[string]int // "cancel/job", "cleanup/job"
}

func (s *cancelRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := strings.TrimPrefix(r.URL.Path, "/"); strings.HasPrefix(p, "cancel/") || strings.HasPrefix(p, "cleanup/") {
		s.mu.Lock()
		s.calls[p]++
		s.mu.Unlock()
	}
	w.WriteHeader(http.StatusOK)
}

func (s *cancelRecorder) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key]
}

// TestStateDirFullOrReadOnly: the state directory fills up, or turns
// read-only, under a running sluice. What must hold: writes keep flowing
// (2xx), health stays ok, a cancel is either recorded and done or refused
// with 503 cancel_not_recorded and not done at all (the job goes on), the
// write errors are counted, a checkpoint that cannot be made durable is
// refused with 503 rather than acknowledged, and once the disk is usable
// again the records catch up and a refused cancel is accepted, so a restart
// finds the cancel.
func TestStateDirFullOrReadOnly(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"full", "read-only"} {
		t.Run(mode, func(t *testing.T) {
			var mnt, stateDir string
			if mode == "full" {
				mnt = smallTmpfs(t, 4<<20)
				stateDir = filepath.Join(mnt, "state")
			} else {
				stateDir = t.TempDir()
			}
			rec := &cancelRecorder{calls: map[string]int{}}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			env := []string{
				"SLUICE_UPSTREAM_URL=" + srv.URL,
				"SLUICE_STATE_DIR=" + stateDir,
				"SLUICE_CANCEL_URL=" + srv.URL + "/cancel/${JOB}",
				"SLUICE_CLEANUP_URL=" + srv.URL + "/cleanup/${JOB}",
				"SLUICE_STALL_AFTER=1h", "SLUICE_CANCEL_GRACE=1h",
			}
			p := startProc(t, env...)
			l := newLoader(p.proxy, mode, 5*time.Second)
			defer l.close()
			for _, job := range []string{"before-a", "before-b"} {
				if o := l.write("PUT", "/put", job, []byte("row")); !o.clean2xx() {
					t.Fatalf("write for %s: %v", job, o)
				}
			}
			var filler string
			if mode == "full" {
				filler = fill(t, mnt)
			} else {
				immutable(t, stateDir, true)
			}

			// Writes, old jobs and new ones, keep flowing.
			for i := range 20 {
				job := []string{"before-a", "during-c", fmt.Sprintf("during-%d", i)}[i%3]
				if o := l.write("PUT", "/put", job, []byte("row")); !o.clean2xx() {
					t.Errorf("write for %s with the state dir %s: %v", job, mode, o)
				}
			}
			if code := getJSON(t, p.admin+"/healthz", nil); code != http.StatusOK {
				t.Errorf("/healthz with the state dir %s: %d", mode, code)
			}
			// A cancel is done only once recorded (bbolt may still have
			// room in its file when the file system is full); one that
			// cannot be recorded is refused and changes nothing.
			cancelRefused := false
			switch code, body := call(t, "POST", p.admin+"/v1/jobs/before-b/cancel", `{}`); code {
			case http.StatusAccepted:
				if !eventually(10*time.Second, func() bool { return rec.count("cleanup/before-b") > 0 }) {
					t.Errorf("the recorded cancel's actions did not run with the state dir %s: cancel %d, cleanup %d",
						mode, rec.count("cancel/before-b"), rec.count("cleanup/before-b"))
				}
			case http.StatusServiceUnavailable:
				cancelRefused = true
				var v jobView
				getJSON(t, p.admin+"/v1/jobs/before-b", &v)
				if !strings.Contains(string(body), "cancel_not_recorded") || v.State != "running" || rec.count("cancel/before-b") > 0 {
					t.Errorf("cancel refused with the state dir %s: %s, then job %s and %d cancel calls; want cancel_not_recorded, running, none",
						mode, body, v.State, rec.count("cancel/before-b"))
				}
			default:
				t.Errorf("cancel with the state dir %s: %d %s", mode, code, body)
			}
			// A checkpoint cannot be made durable: not acknowledged.
			code, body := call(t, "POST", p.admin+"/v1/jobs/before-a/progress", `{"records":10,"checkpoint":{"offset":10}}`)
			if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "state_write_failed") {
				t.Errorf("checkpoint with the state dir %s: %d %s, want 503 state_write_failed", mode, code, body)
			}
			if !eventually(5*time.Second, func() bool {
				return metricValue(metricsText(t, p.admin), "sluice_state_write_errors_total") > 0
			}) {
				t.Errorf("no state write error counted with the state dir %s", mode)
			}
			if strings.Contains(p.stderr.String(), "panic") || strings.Contains(p.stderr.String(), "SIGBUS") {
				t.Fatalf("sluice crashed with the state dir %s:\n%s", mode, p.stderr.String())
			}

			// The disk recovers; the records catch up within a few ticks.
			if mode == "full" {
				if err := os.Remove(filler); err != nil {
					t.Fatal(err)
				}
			} else {
				immutable(t, stateDir, false)
			}
			if cancelRefused {
				if code, body := call(t, "POST", p.admin+"/v1/jobs/before-b/cancel", `{}`); code != http.StatusAccepted {
					t.Errorf("cancel retried after the disk recovered: %d %s", code, body)
				}
			}
			if !eventually(10*time.Second, func() bool {
				var v jobView
				getJSON(t, p.admin+"/v1/jobs/before-b", &v)
				return v.State == "cancelled"
			}) {
				t.Errorf("before-b not cancelled after the disk recovered")
			}
			// Dirty records are written again at the manager's next tick.
			// Two sentinel jobs that go idle at their first tick show that a
			// whole tick (with its commit) has passed since the recovery.
			awaitTick(t, p.admin, "sentinel-1")
			before := metricValue(metricsText(t, p.admin), "sluice_state_write_errors_total")
			awaitTick(t, p.admin, "sentinel-2")
			if after := metricValue(metricsText(t, p.admin), "sluice_state_write_errors_total"); after != before {
				t.Errorf("state writes keep failing after the disk recovered: %v → %v", before, after)
			}
			code, body = call(t, "POST", p.admin+"/v1/jobs/before-a/progress", `{"records":20,"checkpoint":{"offset":20}}`)
			if code != http.StatusOK {
				t.Errorf("checkpoint after the disk recovered: %d %s", code, body)
			}
			var list struct {
				Jobs []jobView `json:"jobs"`
			}
			getJSON(t, p.admin+"/v1/jobs", &list)
			t.Logf("before the restart: %d jobs", len(list.Jobs))
			p.kill(t)

			p = startProc(t, env...)
			getJSON(t, p.admin+"/v1/jobs", &list)
			t.Logf("after the restart: %d jobs", len(list.Jobs))
			for job, want := range map[string]string{"before-b": "cancelled", "during-c": "running", "before-a": "running"} {
				var v jobView
				if code := getJSON(t, p.admin+"/v1/jobs/"+job, &v); code != http.StatusOK || v.State != want {
					t.Errorf("after a restart %s is %d %q, want %q", job, code, v.State, want)
				}
			}
			var cp struct {
				Checkpoint struct {
					Data json.RawMessage `json:"data"`
				} `json:"checkpoint"`
			}
			getJSON(t, p.admin+"/v1/jobs/before-a", &cp)
			var data struct{ Offset int }
			if json.Unmarshal(cp.Checkpoint.Data, &data) != nil || data.Offset != 20 {
				t.Errorf("after a restart the durable checkpoint is %s, want {\"offset\":20}", cp.Checkpoint.Data)
			}
			p.kill(t)
		})
	}
}

// awaitTick registers a job that goes idle at the job manager's first
// tick (nothing is written for it) and waits for that: one tick has run
// since the call.
func awaitTick(t *testing.T, admin, id string) {
	t.Helper()
	code, body := call(t, "POST", admin+"/v1/jobs", `{"id":"`+id+`","stall_after":"1s","auto_cancel":false}`)
	if code != http.StatusCreated {
		t.Fatalf("register %s: %d %s", id, code, body)
	}
	if !eventually(5*time.Second, func() bool {
		var v jobView
		getJSON(t, admin+"/v1/jobs/"+id, &v)
		return v.State == "idle"
	}) {
		t.Fatalf("%s did not go idle: the job manager does not tick", id)
	}
}
