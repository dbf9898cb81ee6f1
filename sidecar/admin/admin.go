// Package admin is sluice's admin HTTP surface: liveness and readiness,
// /metrics, GET /v1/status, the jobs API (/v1/jobs), /quitquitquit, the
// authorization of the endpoints that change something, and their JSON
// errors; and the status page (GET /) with the recent history it charts
// (GET /v1/history). It reads the limiter, the job manager and the credential source;
// it owns none of them, nor the listener it is served on (package sidecar
// wires and serves it).
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/sidecar/auth"
	"github.com/sluice-dev/sluice/state"
)

// Config is how the admin API behaves, as the operator set it.
type Config struct {
	// Token, when set, is the bearer token that the endpoints that change
	// something require; unset, they answer loopback callers only.
	Token string
	// HeartbeatMaxAge is how old the control loop's heartbeat may be
	// before /healthz says the sidecar is stuck.
	HeartbeatMaxAge time.Duration
	Info            Info
}

// Info is what /v1/status says of sluice's setup.
type Info struct {
	Version      string
	Upstream     string // redacted
	Profile      string
	RateUnit     string
	Backpressure string
}

// Deps are the parts the admin API reads and drives.
type Deps struct {
	Gatherer prometheus.Gatherer
	// Counters, if set, gathers the proxy's metrics alone: what the
	// history sampler (once a second) and /v1/status read back. Gathering
	// all of Gatherer also reads the process's /proc files and the
	// runtime's metrics, a millisecond or more of CPU each second taken
	// from the write path. nil: Gatherer.
	Counters prometheus.Gatherer
	Limiter  *limiter.Controller
	Jobs     *state.Manager
	Auth     *auth.Authenticator // nil when sluice does not authenticate to the store
	Budget   interface {
		InUse() int64
		Max() int64
	}
	Lifecycle *Lifecycle
	Stop      func(reason string) // starts a graceful shutdown
	Started   time.Time
	History   *History // what the status page charts; nil keeps none

	// Fleet, if set, is fleet mode's part of /v1/status (fleet.go); it
	// returns nil when fleet mode is off.
	Fleet func() *FleetStatus

	// Scopes are the per-scope limiters (scopes.go); nil when scopes are
	// off.
	Scopes *limiter.Scopes
}

// API serves the admin endpoints. It is safe for concurrent use.
type API struct {
	cfg Config
	d   Deps
}

// New returns the admin API over d.
func New(cfg Config, d Deps) *API { return &API{cfg: cfg, d: d} }

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

// Lifecycle holds sluice's Readiness. The zero value is NotReady. It is
// safe for concurrent use.
type Lifecycle struct{ v atomic.Int32 }

// Get is the readiness now.
func (r *Lifecycle) Get() Readiness { return Readiness(r.v.Load()) }

// Set moves to to, unless already Stopping.
func (r *Lifecycle) Set(to Readiness) {
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
func (s *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.d.Gatherer, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("POST /quitquitquit", s.handleQuit)
	s.jobsAPI(mux)
	s.pageRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, http.StatusNotFound, "not_found", "no such endpoint: "+apierror.Truncate(r.URL.Path, 200), nil)
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
			apierror.Write(w, http.StatusNotFound, "not_found", "no such endpoint: "+apierror.Truncate(p, 200), nil)
			return
		}
		if _, pattern := mux.Handler(r); pattern == "/" {
			// No pattern matches this method: probe with the methods the
			// API serves to tell 405 from 404.
			var allow []string
			for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
				probe := r.Clone(r.Context())
				probe.Method = m
				if _, p := mux.Handler(probe); p != "" && p != "/" {
					allow = append(allow, m)
					if m == http.MethodGet {
						allow = append(allow, http.MethodHead) // the mux serves HEAD wherever GET
					}
				}
			}
			if len(allow) > 0 {
				w.Header().Set("Allow", strings.Join(allow, ", "))
				apierror.Write(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+apierror.Truncate(r.URL.Path, 200), nil)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// handleHealthz is liveness: the control loop's own heartbeat, never a store
// call, so a hung store never makes the sidecar look dead.
func (s *API) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	hb := s.d.Limiter.Snapshot().Heartbeat
	age := time.Since(hb)
	if hb.IsZero() {
		// No heartbeat to count from: the age would be the longest
		// duration there is.
		apierror.Write(w, http.StatusServiceUnavailable, "control_loop_stuck", "the control loop has not run yet", nil)
		return
	}
	if age > s.cfg.HeartbeatMaxAge {
		apierror.Write(w, http.StatusServiceUnavailable, "control_loop_stuck",
			"the control loop has not run for "+age.Round(time.Millisecond).String(), nil)
		return
	}
	apierror.WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "heartbeat": hb})
}

func (s *API) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	r := s.d.Lifecycle.Get()
	if r == Ready && s.d.Auth != nil && !s.d.Auth.Ready() {
		r = NotReady
	}
	status := http.StatusOK
	if r != Ready {
		status = http.StatusServiceUnavailable
	}
	apierror.WriteJSON(w, status, map[string]any{"status": r.String()})
}

// handleQuit starts the same shutdown as SIGTERM. Loopback callers only: it
// is for the loader in the same pod (Istio's convention), never the network.
func (s *API) handleQuit(w http.ResponseWriter, r *http.Request) {
	if refuseCrossSite(w, r) {
		return
	}
	if !isLoopback(r.RemoteAddr) {
		apierror.Write(w, http.StatusForbidden, "forbidden", "/quitquitquit is accepted from loopback only", nil)
		return
	}
	if refuseRebound(w, r, "") { // a token does not open /quitquitquit to a browser either
		return
	}
	s.d.Stop("quitquitquit")
	apierror.WriteJSON(w, http.StatusAccepted, map[string]any{"status": Stopping.String()})
}

// authorize guards mutating admin endpoints: with SLUICE_ADMIN_TOKEN set a
// matching bearer token (constant-time compare), otherwise a loopback caller.
func (s *API) authorize(w http.ResponseWriter, r *http.Request) bool {
	if refuseCrossSite(w, r) {
		return false
	}
	if s.cfg.Token == "" {
		if isLoopback(r.RemoteAddr) {
			return !refuseRebound(w, r, "; or set SLUICE_ADMIN_TOKEN")
		}
		apierror.Write(w, http.StatusForbidden, "forbidden", "mutating endpoints accept loopback callers only when SLUICE_ADMIN_TOKEN is unset", nil)
		return false
	}
	// The scheme's name is case-insensitive (RFC 9110, 11.1): curl's
	// --oauth2-bearer and most clients send "Bearer", some "bearer".
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	ok = ok && strings.EqualFold(scheme, "Bearer")
	// Hashes of equal length, so the compare's time does not reveal the
	// token's length either.
	gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.cfg.Token))
	if !ok || subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
		apierror.Write(w, http.StatusUnauthorized, "unauthorized", "a valid Authorization: Bearer token is required", nil)
		return false
	}
	return true
}

// refuseCrossSite answers 403 to a request a browser sent on behalf of
// another site. Without a token, mutating endpoints trust any loopback
// caller, and an operator's browser behind `kubectl port-forward` is one:
// a page from anywhere could otherwise post a form to 127.0.0.1:9090 and
// cancel a job or stop the sidecar. Browsers say where a request comes
// from (Sec-Fetch-Site, Origin); the status page's own requests are
// same-origin, and clients that are not browsers (curl, sluice jobs) send
// neither header.
func refuseCrossSite(w http.ResponseWriter, r *http.Request) bool {
	site := r.Header.Get("Sec-Fetch-Site")
	cross := site != "" && site != "same-origin" && site != "none"
	if origin := r.Header.Get("Origin"); origin != "" && !cross {
		u, err := url.Parse(origin)
		cross = err != nil || u.Host != r.Host
	}
	if cross {
		apierror.Write(w, http.StatusForbidden, "cross_origin", "requests from another site's page are refused; use the status page served here, the CLI or curl", nil)
	}
	return cross
}

// refuseRebound answers 403 to a browser's request to loopback for a host
// name other than localhost. A page on a name whose DNS its owner points
// at 127.0.0.1 once the page is loaded (DNS rebinding) is same-origin
// with itself, so Origin and Sec-Fetch-Site cannot tell it from the status
// page, and it reaches sluice from loopback. An IP address or localhost
// cannot be rebound; clients that are not browsers send neither header.
func refuseRebound(w http.ResponseWriter, r *http.Request, hint string) bool {
	if !rebindable(r) {
		return false
	}
	apierror.Write(w, http.StatusForbidden, "cross_origin", "a browser's request to loopback is accepted for an IP address or localhost only, not "+strconv.Quote(apierror.Truncate(r.Host, 100))+hint, nil)
	return true
}

// rebindable reports whether r is a browser's request for a host name
// other than localhost (see refuseRebound).
func rebindable(r *http.Request) bool {
	if r.Header.Get("Origin") == "" && r.Header.Get("Sec-Fetch-Site") == "" {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	return net.ParseIP(host) == nil && host != "localhost" && !strings.HasSuffix(host, ".localhost")
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
	// JobsHeartbeat is when the job loop last finished a round (see
	// state.Manager.Heartbeat).
	JobsHeartbeat time.Time `json:"jobs_heartbeat,omitzero"`
	Auth          any       `json:"auth,omitempty"`
	Uptime        string    `json:"uptime"`
	// Now is the sidecar's clock as it answered: the status page counts
	// ages and its chart's time from it, since the browser's clock may
	// be minutes off the sidecar's.
	Now time.Time `json:"now"`

	Fleet  *FleetStatus  `json:"fleet,omitempty"`
	Scopes *ScopesStatus `json:"scopes,omitempty"`
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
	// Classes and Flows are the fair queue between jobs (flows.go).
	Classes []ClassStatus `json:"classes"`
	Flows   []FlowStatus  `json:"flows"`
}

// Status is what GET /v1/status answers now.
func (s *API) Status() Status {
	snap := s.d.Limiter.Snapshot()
	st := Status{
		Version:      s.cfg.Info.Version,
		Readiness:    s.d.Lifecycle.Get().String(),
		Upstream:     s.cfg.Info.Upstream,
		Profile:      s.cfg.Info.Profile,
		RateUnit:     s.cfg.Info.RateUnit,
		Backpressure: s.cfg.Info.Backpressure,
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
			Classes:         classStatuses(snap),
			Flows:           flowStatuses(s.flows(snap)),
		},
		Signals:      s.signalCounts(),
		BufferBytes:  s.d.Budget.InUse(),
		BufferBudget: s.d.Budget.Max(),
		Jobs:         s.jobCounts(),
		Uptime:       time.Since(s.d.Started).Round(time.Second).String(),
		Now:          time.Now(),
	}
	if s.d.Jobs != nil {
		st.JobsHeartbeat = s.d.Jobs.Heartbeat()
	}
	if s.d.Auth != nil {
		st.Auth = s.d.Auth.Status()
	}
	if s.d.Fleet != nil {
		st.Fleet = s.d.Fleet()
	}
	st.Scopes = scopesStatus(s.d.Scopes)
	return st
}

func (s *API) handleStatus(w http.ResponseWriter, _ *http.Request) {
	apierror.WriteJSON(w, http.StatusOK, s.Status())
}

// signalCounts reads the attempt counters by kind back from the registry's
// metrics, so /v1/status and /metrics can never disagree.
func (s *API) signalCounts() map[string]any {
	out := map[string]any{}
	mfs, err := s.counters().Gather()
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

// counters gathers what signalCounts and historyValues read back.
func (s *API) counters() prometheus.Gatherer {
	if s.d.Counters != nil {
		return s.d.Counters
	}
	return s.d.Gatherer
}

func (s *API) jobCounts() map[string]int {
	out := map[string]int{}
	for st, n := range s.d.Jobs.Counts() {
		out[st.String()] = n
	}
	return out
}

// cancelRetryAfter is the Retry-After of a cancel (reopen, delete) that
// could not be recorded, or of a request the state store did not answer in
// time: a few seconds, since the job manager writes its records again
// every second and so finds a usable state dir again at once.
const cancelRetryAfter = 5 * time.Second

// jobsAPI registers the /v1/jobs endpoints.
func (s *API) jobsAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		apierror.WriteJSON(w, http.StatusOK, map[string]any{"jobs": s.jobsWithFlows()})
	})
	mux.HandleFunc("POST /v1/jobs", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		var req registerRequest
		if !decodeBody(w, r, &req, false) {
			return
		}
		settings, err := req.settings()
		if err != nil {
			apierror.Write(w, http.StatusBadRequest, "invalid_request", err.Error(), nil)
			return
		}
		if req.Total != nil {
			s.jobResult(w, http.StatusCreated, "")(s.d.Jobs.RegisterWithTotal(req.ID, settings, *req.Total))
			return
		}
		s.jobResult(w, http.StatusCreated, "")(s.d.Jobs.Register(req.ID, settings))
	}))
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.jobResult(w, http.StatusOK, "")(s.d.Jobs.Get(r.PathValue("id")))
	})
	// Forgets a finished job's record (and its metric series); a later
	// write for the id starts a new job. Answers the job's last view.
	mux.HandleFunc("DELETE /v1/jobs/{id}", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		s.jobResult(w, http.StatusOK, "delete_not_recorded")(s.d.Jobs.Delete(r.PathValue("id")))
	}))
	mux.HandleFunc("POST /v1/jobs/{id}/progress", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		var req progressRequest
		if !decodeBody(w, r, &req, false) {
			return
		}
		if req.Records < 0 || req.Bytes < 0 {
			apierror.Write(w, http.StatusBadRequest, "invalid_request", "records and bytes must not be negative", nil)
			return
		}
		s.jobResult(w, http.StatusOK, "")(s.d.Jobs.ReportProgress(r.PathValue("id"), state.Progress{
			Records: req.Records, Bytes: req.Bytes, Checkpoint: req.Checkpoint,
		}))
	}))
	// Declares or replaces the job's total, {"records"|"bytes"|"items": N},
	// for a loader that learns it after registering, or an operator.
	mux.HandleFunc("POST /v1/jobs/{id}/total", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		var t state.Total
		if !decodeBody(w, r, &t, false) {
			return
		}
		s.jobResult(w, http.StatusOK, "")(s.d.Jobs.SetTotal(r.PathValue("id"), t))
	}))
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		var req cancelRequest
		if !decodeBody(w, r, &req, true) {
			return
		}
		force := req.Force
		if q := r.URL.Query(); q.Has("force") {
			// ?force=1 taken for false would cancel without the cleanup
			// the operator asked for: what is not a boolean is refused.
			f, err := strconv.ParseBool(q.Get("force"))
			if err != nil {
				apierror.Write(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("force must be true or false, got %q", q.Get("force")), nil)
				return
			}
			force = force || f
		}
		reason := req.Reason
		if reason == "" {
			reason = "requested"
		}
		s.jobResult(w, http.StatusAccepted, "")(s.d.Jobs.Cancel(r.PathValue("id"), force, reason))
	}))
	mux.HandleFunc("POST /v1/jobs/{id}/complete", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		s.jobResult(w, http.StatusOK, "")(s.d.Jobs.Complete(r.PathValue("id")))
	}))
	// A cancelled or failed job takes writes again, as a new run.
	mux.HandleFunc("POST /v1/jobs/{id}/reopen", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		var req reopenRequest
		if !decodeBody(w, r, &req, true) {
			return
		}
		s.jobResult(w, http.StatusOK, "reopen_not_recorded")(s.d.Jobs.Reopen(r.PathValue("id"), req.Reason))
	}))
}

// mutating wraps a handler that changes state with the admin authorization.
func (s *API) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.authorize(w, r) {
			h(w, r)
		}
	}
}

// jobResult answers a job manager call: the view with okStatus, or the
// error. notRecorded, if set, is the code of a request that could not be
// recorded (ErrNotDurable), when it is not a cancel.
func (s *API) jobResult(w http.ResponseWriter, okStatus int, notRecorded string) func(state.JobView, error) {
	return func(v state.JobView, err error) {
		if err != nil {
			status, code := apierror.ForJob(err)
			if slow := errors.Is(err, state.ErrStoreSlow); slow || errors.Is(err, state.ErrNotDurable) {
				// Not done, or not known yet: ask again soon.
				apierror.SetRetryAfter(w.Header(), cancelRetryAfter)
				if !slow && notRecorded != "" {
					code = notRecorded
				}
			}
			apierror.Write(w, status, code, err.Error(), nil)
			return
		}
		withFlow(&v.JobSummary, s.flows(s.d.Limiter.Snapshot()))
		apierror.WriteJSON(w, okStatus, v)
	}
}

// decodeBody decodes a JSON request body of at most 1 MiB into v, strictly.
// It answers the error itself and reports whether to go on.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) bool {
	body := http.MaxBytesReader(w, r.Body, maxAdminBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		var mbe *http.MaxBytesError
		if dec.More() || dec.InputOffset() < 0 {
			err = errors.New("trailing data after the JSON object")
		} else if _, terr := dec.Token(); errors.As(terr, &mbe) {
			err = terr // past the limit: too large, whatever follows
		} else if terr != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.Is(err, io.EOF) && emptyOK:
		return true
	case errors.As(err, &mbe):
		apierror.Write(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body over %d bytes", maxAdminBody), nil)
	case errors.Is(err, io.EOF):
		apierror.Write(w, http.StatusBadRequest, "invalid_json", "a JSON body is required", nil)
	default:
		apierror.Write(w, http.StatusBadRequest, "invalid_json", "invalid JSON body: "+err.Error(), nil)
	}
	return false
}

// duration is a JSON duration: "90s", "5m".
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`durations are strings such as "90s" or "5m"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = duration(v)
	return nil
}

type actionRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	Command []string          `json:"command"`
}

func (a *actionRequest) spec(which string) (*state.ActionSpec, error) {
	if a == nil {
		return nil, nil
	}
	switch {
	case a.URL != "" && len(a.Command) > 0:
		return nil, fmt.Errorf("%s: give url or command, not both", which)
	case a.URL != "":
		m := a.Method
		if m == "" {
			m = http.MethodPost
		}
		if !state.ValidMethod(m) {
			return nil, fmt.Errorf("%s.method: not an HTTP method: %q", which, m)
		}
		if !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") {
			return nil, fmt.Errorf("%s.url: must be an http(s) URL", which)
		}
		return &state.ActionSpec{Kind: "http", Method: m, URL: a.URL, Headers: a.Headers, Body: a.Body}, nil
	case len(a.Command) > 0:
		if a.Command[0] == "" {
			return nil, fmt.Errorf("%s.command: empty program name", which)
		}
		return &state.ActionSpec{Kind: "command", Argv: a.Command}, nil
	}
	return nil, fmt.Errorf("%s: give url or command", which)
}

type registerRequest struct {
	ID          string   `json:"id"`
	StallAfter  duration `json:"stall_after"`
	CancelGrace duration `json:"cancel_grace"`
	Deadline    duration `json:"deadline"`
	AutoCancel  *bool    `json:"auto_cancel"`
	// AutoCancelCauses: the stall causes that cancel this job; absent,
	// SLUICE_AUTO_CANCEL_CAUSES; [] none.
	AutoCancelCauses *[]state.StallCause `json:"auto_cancel_causes"`
	// HeartbeatInterval: the loader writes or reports progress at least
	// this often; silent longer, it is hung (stall cause loader_idle).
	HeartbeatInterval duration          `json:"heartbeat_interval"`
	Cancel            *actionRequest    `json:"cancel"`
	Cleanup           *actionRequest    `json:"cleanup"`
	Labels            map[string]string `json:"labels"`
	// Weight and Priority: the job's share against other jobs of its
	// class, and its class, live or bulk (see state.Settings).
	Weight   *float64 `json:"weight"`
	Priority string   `json:"priority"`
	// Total: the job's size, {"records"|"bytes"|"items": N}; absent keeps
	// the total it has.
	Total *state.Total `json:"total"`
}

func (r *registerRequest) settings() (state.Settings, error) {
	cancel, err := r.Cancel.spec("cancel")
	if err != nil {
		return state.Settings{}, err
	}
	cleanup, err := r.Cleanup.spec("cleanup")
	if err != nil {
		return state.Settings{}, err
	}
	if len(r.Labels) > 32 {
		return state.Settings{}, errors.New("labels: at most 32")
	}
	var weight float64
	if r.Weight != nil {
		if weight = *r.Weight; !state.ValidWeight(weight) {
			return state.Settings{}, fmt.Errorf("weight: must be a number in [%v, %v], got %v", state.MinWeight, state.MaxWeight, weight)
		}
	}
	if r.Priority != "" && !state.ValidPriority(r.Priority) {
		return state.Settings{}, fmt.Errorf("priority: must be %q or %q, got %q", state.PriorityLive, state.PriorityBulk, apierror.Truncate(r.Priority, 32))
	}
	var causes []state.StallCause
	if r.AutoCancelCauses != nil {
		causes = append([]state.StallCause{}, *r.AutoCancelCauses...) // [] stays "none", not "inherit"
	}
	return state.Settings{
		StallAfter:        time.Duration(r.StallAfter),
		CancelGrace:       time.Duration(r.CancelGrace),
		Deadline:          time.Duration(r.Deadline),
		AutoCancel:        r.AutoCancel,
		AutoCancelCauses:  causes,
		HeartbeatInterval: time.Duration(r.HeartbeatInterval),
		Cancel:            cancel,
		Cleanup:           cleanup,
		Labels:            r.Labels,
		Weight:            weight,
		Priority:          r.Priority,
	}, nil
}

type progressRequest struct {
	Records    int64           `json:"records"`
	Bytes      int64           `json:"bytes"`
	Checkpoint json.RawMessage `json:"checkpoint"`
}

type cancelRequest struct {
	Force  bool   `json:"force"`
	Reason string `json:"reason"`
}

type reopenRequest struct {
	Reason string `json:"reason"`
}
