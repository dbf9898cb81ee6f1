package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/sidecar/classify"

	"github.com/sluice-dev/sluice/state"
)

// jobsConfig is the job manager's configuration from SLUICE_* variables.
func (s *Server) jobsConfig(store state.Store, reg prometheus.Registerer) state.Config {
	c := s.cfg
	auto := c.AutoCancel
	defaults := state.Settings{
		StallAfter:  c.StallAfter,
		CancelGrace: c.CancelGrace,
		Deadline:    c.JobDeadline,
		AutoCancel:  &auto,
		Cancel:      actionFromEnv(c.CancelURL, c.CancelMethod, c.CancelCommand),
		Cleanup:     actionFromEnv(c.CleanupURL, c.CleanupMethod, c.CleanupCommand),
	}
	return state.Config{
		Store:               store,
		Defaults:            defaults,
		MaxJobs:             c.MaxJobs,
		ActionTimeout:       c.ActionTimeout,
		ActionRetries:       c.ActionRetries,
		Retention:           c.JobRetention,
		CheckpointsRetained: c.CheckpointsRetained,
		ProbeURL:            c.ProgressProbeURL,
		ProbePointer:        c.ProgressProbePtr,
		Logger:              s.log, // the manager scopes it
		Registerer:          reg,
	}
}

// actionFromEnv builds the default cancel or cleanup action; nil when none
// is configured (the step is then recorded as skipped).
func actionFromEnv(u, method, command string) *state.ActionSpec {
	switch {
	case u != "":
		return &state.ActionSpec{Kind: "http", Method: method, URL: u}
	case command != "":
		argv, err := ParseArgv(command) // validated with the configuration
		if err != nil {
			return nil
		}
		return &state.ActionSpec{Kind: "command", Argv: argv}
	}
	return nil
}

// jobsAdapter lets the proxy report to the job manager.
type jobsAdapter struct{ m *state.Manager }

func (a jobsAdapter) Admit(ctx context.Context, job string, maxWait time.Duration) (context.Context, func(), error) {
	return a.m.AdmitWithin(ctx, job, maxWait)
}

func (a jobsAdapter) Observe(job string, o Observation) {
	a.m.Observe(job, state.Observation{Kind: o.Kind.String(), Bytes: o.Bytes, Items: o.Items, RetryAfter: o.RetryAfter})
	if o.Kind == classify.Throttled && o.Items > 0 {
		// A partially throttled bulk write also acknowledged items: that is
		// progress (it keeps the job from stalling, and a running or
		// throttled job from being held; a held job's hold ends only with
		// its probe).
		a.m.Observe(job, state.Observation{Kind: state.ObsOK, Bytes: o.Bytes, Items: o.Items})
	}
}

func (s *Server) jobCounts() map[string]int {
	out := map[string]int{}
	for st, n := range s.jobs.Counts() {
		out[st.String()] = n
	}
	return out
}

// writeAdmitError answers a write the job manager refused and returns the
// status written.
func writeAdmitError(w http.ResponseWriter, job string, err error) int {
	status, code := jobErrorStatus(err)
	details := map[string]any{"job": truncate(job, 140)}
	var na *state.NotAcceptingError
	if errors.As(err, &na) {
		details["state"] = na.State.String()
		details["reason"] = na.Reason
	}
	if status == http.StatusTooManyRequests {
		setRetryAfter(w.Header(), 30*time.Second)
	}
	writeError(w, status, code, err.Error(), details)
	return status
}

// jobErrorStatus maps the job manager's errors to HTTP.
func jobErrorStatus(err error) (int, string) {
	var (
		na *state.NotAcceptingError
		te *state.TransitionError
	)
	switch {
	case errors.Is(err, state.ErrInvalidJobID):
		return http.StatusBadRequest, "invalid_job_id"
	case errors.Is(err, state.ErrTooManyJobs):
		// Too many live jobs: like any backpressure, come back later.
		return http.StatusTooManyRequests, "too_many_jobs"
	case errors.As(err, &na):
		// The job is being cancelled or has ended: writing to it is a conflict.
		return http.StatusConflict, "job_not_accepting_writes"
	case errors.Is(err, state.ErrNotFound):
		return http.StatusNotFound, "job_not_found"
	case errors.As(err, &te):
		return http.StatusConflict, "illegal_transition"
	case errors.Is(err, state.ErrInvalid):
		return http.StatusBadRequest, "invalid_request"
	case errors.Is(err, state.ErrClosed):
		return http.StatusServiceUnavailable, "shutting_down"
	case errors.Is(err, state.ErrNotDurable):
		// The cancel could not be recorded (state dir full or read-only),
		// so it was not done: the job goes on. Retry it.
		return http.StatusServiceUnavailable, "cancel_not_recorded"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// Held in backoff past the queue timeout: come back later.
		return http.StatusTooManyRequests, "job_backoff"
	}
	// A store write error (the checkpoint is not durable): retry later.
	return http.StatusServiceUnavailable, "state_write_failed"
}

// cancelRetryAfter is the Retry-After of a cancel that could not be
// recorded: a few seconds, since the job manager writes its records again
// every second and so finds a usable state dir again at once.
const cancelRetryAfter = 5 * time.Second

// jobsAPI registers the /v1/jobs endpoints.
func (s *Server) jobsAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"jobs": s.jobs.List()})
	})
	mux.HandleFunc("POST /v1/jobs", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		var req registerRequest
		if !decodeBody(w, r, &req, false) {
			return
		}
		settings, err := req.settings()
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", err.Error(), nil)
			return
		}
		s.jobResult(w, http.StatusCreated)(s.jobs.Register(req.ID, settings))
	}))
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.jobResult(w, http.StatusOK)(s.jobs.Get(r.PathValue("id")))
	})
	mux.HandleFunc("POST /v1/jobs/{id}/progress", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		var req progressRequest
		if !decodeBody(w, r, &req, false) {
			return
		}
		if req.Records < 0 || req.Bytes < 0 {
			writeError(w, http.StatusBadRequest, "invalid_request", "records and bytes must not be negative", nil)
			return
		}
		s.jobResult(w, http.StatusOK)(s.jobs.ReportProgress(r.PathValue("id"), state.Progress{
			Records: req.Records, Bytes: req.Bytes, Checkpoint: req.Checkpoint,
		}))
	}))
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		var req cancelRequest
		if !decodeBody(w, r, &req, true) {
			return
		}
		force := req.Force || r.URL.Query().Get("force") == "true"
		reason := req.Reason
		if reason == "" {
			reason = "requested"
		}
		s.jobResult(w, http.StatusAccepted)(s.jobs.Cancel(r.PathValue("id"), force, reason))
	}))
	mux.HandleFunc("POST /v1/jobs/{id}/complete", s.mutating(func(w http.ResponseWriter, r *http.Request) {
		s.jobResult(w, http.StatusOK)(s.jobs.Complete(r.PathValue("id")))
	}))
}

// mutating wraps a handler that changes state with the admin authorization.
func (s *Server) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.authorize(w, r) {
			h(w, r)
		}
	}
}

func (s *Server) jobResult(w http.ResponseWriter, okStatus int) func(state.JobView, error) {
	return func(v state.JobView, err error) {
		if err != nil {
			status, code := jobErrorStatus(err)
			if errors.Is(err, state.ErrNotDurable) {
				setRetryAfter(w.Header(), cancelRetryAfter)
			}
			writeError(w, status, code, err.Error(), nil)
			return
		}
		writeJSON(w, okStatus, v)
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
		if dec.More() || dec.InputOffset() < 0 {
			err = errors.New("trailing data after the JSON object")
		} else if _, terr := dec.Token(); terr != io.EOF {
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
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body over %d bytes", maxAdminBody), nil)
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "invalid_json", "a JSON body is required", nil)
	default:
		writeError(w, http.StatusBadRequest, "invalid_json", "invalid JSON body: "+err.Error(), nil)
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
		if !validMethod(m) {
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
	ID          string            `json:"id"`
	StallAfter  duration          `json:"stall_after"`
	CancelGrace duration          `json:"cancel_grace"`
	Deadline    duration          `json:"deadline"`
	AutoCancel  *bool             `json:"auto_cancel"`
	Cancel      *actionRequest    `json:"cancel"`
	Cleanup     *actionRequest    `json:"cleanup"`
	Labels      map[string]string `json:"labels"`
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
	return state.Settings{
		StallAfter:  time.Duration(r.StallAfter),
		CancelGrace: time.Duration(r.CancelGrace),
		Deadline:    time.Duration(r.Deadline),
		AutoCancel:  r.AutoCancel,
		Cancel:      cancel,
		Cleanup:     cleanup,
		Labels:      r.Labels,
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
