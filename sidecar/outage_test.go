package sidecar

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/internal/logbuf"
	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/state"
)

// headerWriteID names a write in the outage and hold tests, so that the
// store can say how often it stored each.
const headerWriteID = "X-Write-Id"

// outageStore is a store double for the outage and hold tests, as a
// RoundTripper (no sockets: synctest runs it). Until downUntil every
// attempt's connection is refused; until hangUntil it answers nothing
// (the attempt runs into its deadline) but stores the write all the same;
// until throttleUntil it answers 429 (with retryAfter, if set); otherwise
// it stores each write under its X-Write-Id and answers 200.
type outageStore struct {
	mu            sync.Mutex
	downUntil     time.Time
	hangUntil     time.Time
	throttleUntil time.Time
	retryAfter    string
	refusedAt     []time.Time // attempts whose connection was refused
	attempts      int         // attempts that reached it
	throttled     int
	stored        map[string]int // write id → times stored
}

func newOutageStore() *outageStore { return &outageStore{stored: map[string]int{}} }

func (s *outageStore) RoundTrip(r *http.Request) (*http.Response, error) {
	now := time.Now()
	s.mu.Lock()
	if now.Before(s.hangUntil) {
		s.attempts++
		s.stored[r.Header.Get(headerWriteID)]++ // it may land: the answer is what is lost
		s.mu.Unlock()
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	defer s.mu.Unlock()
	if now.Before(s.downUntil) {
		if r.Body != nil {
			r.Body.Close()
		}
		s.refusedAt = append(s.refusedAt, now)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body.Close()
	}
	s.attempts++
	rec := httptest.NewRecorder()
	if now.Before(s.throttleUntil) {
		s.throttled++
		if s.retryAfter != "" {
			rec.Header().Set("Retry-After", s.retryAfter)
		}
		rec.WriteHeader(http.StatusTooManyRequests)
	} else {
		s.stored[r.Header.Get(headerWriteID)]++
		rec.WriteHeader(http.StatusOK)
		_, _ = rec.Write(body)
	}
	resp := wholeResult(rec)
	resp.Request = r
	return resp, nil
}

// refusedBetween counts the refused attempts in [from, to).
func (s *outageStore) refusedBetween(from, to time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, at := range s.refusedAt {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// counts returns the attempts that reached the store and the 429s it answered.
func (s *outageStore) counts() (attempts, throttled int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts, s.throttled
}

func (s *outageStore) timesStored(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored[id]
}

// newStoreServer is newTestServer with the attempts carried by rt and the
// logs in logs (JSON, debug level up), if not nil.
func newStoreServer(t *testing.T, rt http.RoundTripper, logs io.Writer, env ...string) *Server {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if logs != nil {
		log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := NewServer(testConfig(t, env...), Options{Logger: log, Store: &state.MemStore{}, Transport: rt})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	t.Cleanup(s.StartLoops())
	return s
}

// seriesValue is the value of the series of name with label=value.
func seriesValue(t *testing.T, s *Server, name, label, value string) float64 {
	t.Helper()
	v, _ := series(t, s, name, label, value)
	return v
}

// series is the value of the series of name with label=value, and whether
// s's registry has it.
func series(t *testing.T, s *Server, name, label, value string) (float64, bool) {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// answer is what a loader got for one request.
type answer struct {
	at         time.Time
	status     int
	retryAfter string
	body       apierror.Body
}

// retryingLoader sends write id through h until it is acknowledged (2xx) or
// until gives up, and returns every answer it got. A polite loader waits the
// Retry-After of a refusal; an impatient one 50ms whatever it says.
func retryingLoader(h http.Handler, id string, polite bool, until time.Time) []answer {
	var out []answer
	for time.Now().Before(until) {
		rec := send(h, context.Background(), http.MethodPut, "/doc/"+id, "payload-"+id, headerWriteID, id)
		a := answer{at: time.Now(), status: rec.Code, retryAfter: rec.Header().Get("Retry-After")}
		_ = json.Unmarshal(rec.Body.Bytes(), &a.body)
		out = append(out, a)
		if rec.Code/100 == 2 {
			return out
		}
		wait := 50 * time.Millisecond
		if secs, err := strconv.Atoi(a.retryAfter); polite && err == nil {
			wait = time.Duration(secs) * time.Second
		}
		time.Sleep(wait)
	}
	return out
}

// A store whose connections are refused for 30s, behind loaders that keep
// writing (half of them honour Retry-After, half retry every 50ms): the
// store sees at most one attempt per probe interval, the loaders get
// sluice's pushback with a Retry-After, never a 502, and when the store
// is back the first probe's success lets every write through, each stored
// once. The outage is counted as kind unreachable and logged as a WARN
// naming the upstream (without its query's key) and the error, a few times.
func TestUnreachableStoreIsProbedNotFlooded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const outage = 30 * time.Second
		store := newOutageStore()
		start := time.Now()
		store.downUntil = start.Add(outage)
		logs := &logbuf.Buffer{}
		const upstream = "http://store.test/?api_key=k3y-s3cret"
		s := newStoreServer(t, store, logs, "UPSTREAM_URL="+upstream, "QUEUE_TIMEOUT=2s")
		h := s.ProxyHandler()

		const loaders = 16
		answers := make([][]answer, loaders)
		var wg sync.WaitGroup
		for i := range loaders {
			wg.Go(func() {
				answers[i] = retryingLoader(h, "w"+strconv.Itoa(i), i%2 == 0, start.Add(outage+time.Minute))
			})
		}
		var phaseInOutage string
		wg.Go(func() {
			time.Sleep(outage / 2)
			var st admin.Status
			_ = json.Unmarshal(adminCall(s.AdminHandler(), "GET", "/v1/status", "").Body.Bytes(), &st)
			phaseInOutage = st.Limiter.Phase
		})
		wg.Wait()
		if phaseInOutage != limiter.PhaseUnreachable {
			t.Errorf("/v1/status phase during the outage = %q, want %q", phaseInOutage, limiter.PhaseUnreachable)
		}

		var pushedBack int
		lastAck := start
		for i, as := range answers {
			for _, a := range as {
				switch {
				case a.status == http.StatusOK:
					if a.at.After(lastAck) {
						lastAck = a.at
					}
				case a.status == http.StatusTooManyRequests && a.retryAfter != "" && a.body.Details["reason"] == "unreachable":
					pushedBack++
				case a.status == http.StatusTooManyRequests && a.retryAfter != "" && a.body.Error == "backpressure" && !a.at.Before(start.Add(outage)):
					// Queued as the store came back, and not admitted
					// in time once it had: an ordinary queue timeout.
				default:
					t.Errorf("loader %d at +%v: %d %+v (Retry-After %q), want 200, or 429 with a Retry-After (unreachable while the store is down)",
						i, a.at.Sub(start), a.status, a.body, a.retryAfter)
				}
			}
			if id := "w" + strconv.Itoa(i); store.timesStored(id) != 1 {
				t.Errorf("write %s stored %d times, want once", id, store.timesStored(id))
			}
		}
		refused := store.refusedBetween(start, start.Add(outage))
		t.Logf("%d attempts refused in %v, %d pushbacks to the loaders, last write acknowledged %v after the store came back",
			refused, outage, pushedBack, lastAck.Sub(start.Add(outage)))
		// Two writes at most before the store was ever seen, then one
		// probe per interval, never sooner than 250ms after the last.
		if limit := 2 + int(outage/limiter.DefaultProbeMin); refused > limit {
			t.Errorf("%d attempts reached the dead store in %v, want at most %d", refused, outage, limit)
		}
		if pushedBack == 0 {
			t.Error("no loader was pushed back while the store was down")
		}
		if back := lastAck.Sub(start.Add(outage)); back > limiter.DefaultProbeMax+2*time.Second {
			t.Errorf("the last write was acknowledged %v after the store came back, want within a probe interval and a Retry-After", back)
		}
		if got := seriesValue(t, s, "sluice_upstream_attempts_total", "kind", "unreachable"); got != float64(refused) {
			t.Errorf("sluice_upstream_attempts_total{kind=unreachable} = %v, want %d", got, refused)
		}
		if got := seriesValue(t, s, "sluice_proxy_backpressure_total", "reason", "unreachable"); got == 0 {
			t.Error("sluice_proxy_backpressure_total{reason=unreachable} = 0")
		}
		if s.lim.Unreachable() {
			t.Error("the limiter still takes the store for unreachable")
		}

		var warns int
		for _, l := range strings.Split(logs.String(), "\n") {
			if !strings.Contains(l, `"level":"WARN"`) || !strings.Contains(l, "store unreachable") {
				continue
			}
			warns++
			var line struct{ Upstream, Err string }
			// As the startup line and /v1/status show it: the query's
			// values hidden.
			if err := json.Unmarshal([]byte(l), &line); err != nil || line.Upstream != redact.URL(upstream) || !strings.Contains(line.Err, "connection refused") {
				t.Errorf("WARN line without the redacted upstream %q or the error: %s", redact.URL(upstream), l)
			}
		}
		if warns == 0 || warns > int(outage/(10*time.Second))+1 {
			t.Errorf("%d WARN lines about the unreachable store in %v, want one per 10s at most, and one", warns, outage)
		}
		if strings.Contains(logs.String(), "s3cret") {
			t.Error("the logs show the upstream's query's key")
		}
	})
}
