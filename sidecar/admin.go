package sidecar

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Readiness is sluice's readiness as a tiny state machine:
// NotReady → Ready → Stopping. Stopping is final.
type Readiness int32

const (
	// NotReady: starting, or a dependency (upstream credentials) is missing.
	NotReady Readiness = iota
	// Ready: accepting writes.
	Ready
	// Stopping: draining after SIGTERM or /quitquitquit; never ready again.
	Stopping
)

func (r Readiness) String() string {
	switch r {
	case NotReady:
		return "not_ready"
	case Ready:
		return "ready"
	case Stopping:
		return "stopping"
	}
	return "unknown"
}

type readiness struct{ v atomic.Int32 }

func (r *readiness) get() Readiness { return Readiness(r.v.Load()) }

// set moves to to, unless already Stopping.
func (r *readiness) set(to Readiness) {
	for {
		cur := r.v.Load()
		if Readiness(cur) == Stopping {
			return
		}
		if r.v.CompareAndSwap(cur, int32(to)) {
			return
		}
	}
}

// maxAdminBody bounds every admin API request body.
const maxAdminBody = 1 << 20

// adminHandler serves /metrics, /healthz, /readyz, /v1/status, the jobs API
// and /quitquitquit.
func (s *Server) adminHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("POST /quitquitquit", s.handleQuit)
	s.jobsAPI(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+truncate(r.URL.Path, 200), nil)
	})
	return methodNotAllowedAsJSON(mux)
}

// methodNotAllowedAsJSON answers what the mux would answer in plain text
// or HTML with JSON errors: 405 for a known path with the wrong method, and
// 404 for a path that is not clean ("..", ".", "//"), which the mux would
// redirect elsewhere (a traversal attempt never gets a redirect).
func methodNotAllowedAsJSON(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || path.Clean(p) != p {
			writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+truncate(p, 200), nil)
			return
		}
		if _, pattern := mux.Handler(r); pattern == "/" {
			// No pattern matches this method: probe with GET and POST to
			// tell 405 from 404.
			var allow []string
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				probe := r.Clone(r.Context())
				probe.Method = m
				if _, p := mux.Handler(probe); p != "" && p != "/" {
					allow = append(allow, m)
				}
			}
			if len(allow) > 0 {
				w.Header().Set("Allow", strings.Join(allow, ", "))
				writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+truncate(r.URL.Path, 200), nil)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// handleHealthz is liveness: the control loop's own heartbeat, never a store
// call, so a hung store never makes the sidecar look dead (incident 2).
func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	hb := s.lim.Snapshot().Heartbeat
	age := time.Since(hb)
	if hb.IsZero() || age > s.heartbeatMaxAge() {
		writeError(w, http.StatusServiceUnavailable, "control_loop_stuck",
			"the control loop has not run for "+age.Round(time.Millisecond).String(), nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "heartbeat": hb})
}

func (s *Server) heartbeatMaxAge() time.Duration { return max(10*s.cfg.ControlInterval, 5*time.Second) }

func (s *Server) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	r := s.ready.get()
	if r == Ready && s.auth != nil && !s.auth.Ready() {
		r = NotReady
	}
	status := http.StatusOK
	if r != Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"status": r.String()})
}

// handleQuit starts the same shutdown as SIGTERM. Loopback callers only: it
// is for the loader in the same pod (Istio's convention), never the network.
func (s *Server) handleQuit(w http.ResponseWriter, r *http.Request) {
	if !isLoopback(r.RemoteAddr) {
		writeError(w, http.StatusForbidden, "forbidden", "/quitquitquit is accepted from loopback only", nil)
		return
	}
	s.requestStop("quitquitquit")
	writeJSON(w, http.StatusAccepted, map[string]any{"status": Stopping.String()})
}

// authorize guards mutating admin endpoints: with SLUICE_ADMIN_TOKEN set a
// matching bearer token (constant-time compare), otherwise a loopback caller.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.AdminToken == "" {
		if isLoopback(r.RemoteAddr) {
			return true
		}
		writeError(w, http.StatusForbidden, "forbidden", "mutating endpoints accept loopback callers only when SLUICE_ADMIN_TOKEN is unset", nil)
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	// Hashes of equal length, so the compare's time does not reveal the
	// token's length either.
	gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.cfg.AdminToken))
	if !ok || subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid Authorization: Bearer token is required", nil)
		return false
	}
	return true
}

func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Status is the JSON of GET /v1/status.
type Status struct {
	Version      string         `json:"version"`
	Readiness    string         `json:"readiness"`
	Upstream     string         `json:"upstream"`
	Profile      string         `json:"profile"`
	RateUnit     string         `json:"rate_unit"`
	Backpressure string         `json:"backpressure"`
	Limiter      LimiterStatus  `json:"limiter"`
	Signals      map[string]any `json:"signals"`
	BufferBytes  int64          `json:"buffer_bytes"`
	BufferBudget int64          `json:"buffer_budget_bytes"`
	Jobs         map[string]int `json:"jobs"`
	Auth         any            `json:"auth,omitempty"`
	Uptime       string         `json:"uptime"`
}

// LimiterStatus is the controller's state in /v1/status.
type LimiterStatus struct {
	Phase           string    `json:"phase"`
	RateLimit       float64   `json:"rate_limit"`
	Concurrency     int       `json:"concurrency_limit"`
	InFlight        int       `json:"in_flight"`
	Pipelined       int       `json:"pipelined"` // staged writes sent behind one in flight (SLUICE_PIPELINE)
	Queued          int       `json:"queue_length"`
	PausedUntil     time.Time `json:"paused_until,omitzero"`
	LastThrottle    time.Time `json:"last_throttle,omitzero"`
	LastReason      string    `json:"last_throttle_reason,omitempty"`
	LatencyBaseline string    `json:"latency_baseline"`
	LatencyRecent   string    `json:"latency_recent"`
	Decreases       uint64    `json:"decreases"`
	Increases       uint64    `json:"increases"`
	// CapsConcurrency: the store said, since sluice started, that it
	// refused for too many requests in flight (not too many per second),
	// so the rate limit is kept out of the concurrency limit's way in
	// startup.
	CapsConcurrency bool      `json:"store_caps_concurrency"`
	Heartbeat       time.Time `json:"heartbeat"`
}

func (s *Server) status() Status {
	snap := s.lim.Snapshot()
	st := Status{
		Version:      Version,
		Readiness:    s.ready.get().String(),
		Upstream:     redactURL(s.cfg.UpstreamURL),
		Profile:      s.cfg.Profile,
		RateUnit:     s.cfg.RateUnit,
		Backpressure: s.cfg.Backpressure,
		Limiter: LimiterStatus{
			Phase:           snap.Phase,
			RateLimit:       snap.Rate,
			Concurrency:     snap.Concurrency,
			InFlight:        snap.InFlight,
			Pipelined:       snap.Staged,
			Queued:          snap.Queued,
			PausedUntil:     snap.PausedUntil,
			LastThrottle:    snap.LastThrottle,
			LastReason:      snap.LastReason,
			LatencyBaseline: snap.LatencyBaseline.Round(10 * time.Microsecond).String(),
			LatencyRecent:   snap.LatencyRecent.Round(10 * time.Microsecond).String(),
			Decreases:       snap.Decreases,
			Increases:       snap.Increases,
			CapsConcurrency: snap.CapsConcurrency,
			Heartbeat:       snap.Heartbeat,
		},
		Signals:      s.signalCounts(),
		BufferBytes:  s.budget.inUse(),
		BufferBudget: s.budget.max,
		Jobs:         s.jobCounts(),
		Uptime:       time.Since(s.started).Round(time.Second).String(),
	}
	if s.auth != nil {
		st.Auth = s.auth.Status()
	}
	return st
}

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.status())
}

// signalCounts reads the attempt counters by kind back from the registry's
// metrics, so /v1/status and /metrics can never disagree.
func (s *Server) signalCounts() map[string]any {
	out := map[string]any{}
	mfs, err := s.gatherer.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "sluice_upstream_attempts_total":
			byKind := map[string]float64{}
			for _, m := range mf.GetMetric() {
				byKind[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
			out["attempts_by_kind"] = byKind
		case "sluice_upstream_congestion_signals_total":
			byReason := map[string]float64{}
			for _, m := range mf.GetMetric() {
				byReason[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
			out["congestion_by_reason"] = byReason
		}
	}
	return out
}

// serveUntil runs srv until ctx ends, then shuts it down gracefully within
// timeout, with a fresh context; past the timeout it closes what is left
// and returns context.DeadlineExceeded.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Past the drain timeout: cut what is left rather than hang.
		_ = srv.Close()
	}
	<-errc
	return err
}
