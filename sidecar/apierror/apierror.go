// Package apierror writes the JSON errors sluice answers with on both of its
// listeners: the proxy's own refusals (backpressure, a job that takes no
// writes, a body too large to sign) and the admin API's. It owns the shape
// of the error body and the mapping of the job manager's errors to HTTP;
// deciding which error a request gets is its callers'.
package apierror

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/state"
)

// Body is the JSON body of every error sluice itself answers with.
type Body struct {
	Error   string         `json:"error"`   // stable snake_case code
	Message string         `json:"message"` // for humans
	Details map[string]any `json:"details,omitempty"`
}

// Writer writes an error answer: Write, or one that speaks a store's
// dialect (a proxy's pushback, which the loader's SDK must read as the
// store's throttling).
type Writer func(w http.ResponseWriter, status int, code, msg string, details map[string]any)

// Write answers with status and a JSON error body.
func Write(w http.ResponseWriter, status int, code, msg string, details map[string]any) {
	SetHeader(w.Header(), "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Body{Error: code, Message: msg, Details: details})
}

// SetHeader sets the headers of an error answer whose body is of
// contentType: never sniffed, never cached.
func SetHeader(h http.Header, contentType string) {
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
}

// SetRetryAfter sets a Retry-After header of whole seconds, at least 1.
func SetRetryAfter(h http.Header, d time.Duration) {
	secs := int64(math.Ceil(d.Seconds()))
	if secs < 1 {
		secs = 1
	}
	h.Set("Retry-After", strconv.FormatInt(secs, 10))
}

// WriteJSON answers with status and v encoded as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteJob answers a write that the job manager refused and returns the
// status written. A refusal that asks the loader to come back later (too
// many jobs, a job held in backoff) carries pushback, sluice's pushback
// status (429 or 503, whichever the loader retries), with a Retry-After.
func WriteJob(w http.ResponseWriter, job string, err error, pushback int) int {
	return WriteJobWith(w, job, err, pushback, Write)
}

// WriteJobWith is WriteJob with the answer written by write.
func WriteJobWith(w http.ResponseWriter, job string, err error, pushback int, write Writer) int {
	status, code := ForJob(err)
	if status == http.StatusTooManyRequests && pushback != 0 {
		status = pushback
	}
	details := map[string]any{"job": Truncate(job, 140)}
	var na *state.NotAcceptingError
	if errors.As(err, &na) {
		details["state"] = na.State.String()
		details["reason"] = na.Reason
	}
	if code == "too_many_jobs" || code == "job_backoff" {
		SetRetryAfter(w.Header(), 30*time.Second)
	}
	write(w, status, code, err.Error(), details)
	return status
}

// ForJob maps the job manager's errors to a status and an error code.
func ForJob(err error) (status int, code string) {
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
	case errors.Is(err, state.ErrStoreSlow):
		// A write to the state volume hangs: the request was not done, or
		// is decided once the store answers (the message says which).
		return http.StatusServiceUnavailable, "state_store_slow"
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

// Truncate shortens s to n bytes and marks the cut, so that an error never
// echoes a huge input back.
func Truncate(s string, n int) string { return redact.Truncate(s, n) }
