package apierror

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sluice-dev/sluice/state"
)

// A refusal that asks the loader to come back later carries sluice's
// pushback status, whichever it is, with a Retry-After; the others keep
// theirs.
func TestWriteJobPushbackStatus(t *testing.T) {
	f := func(name string, err error, pushback, want int, retryAfter bool) {
		t.Helper()
		rec := httptest.NewRecorder()
		if got := WriteJob(rec, "j", err, pushback); got != want || rec.Code != want {
			t.Errorf("%s: status %d (written %d), want %d", name, got, rec.Code, want)
		}
		if got := rec.Header().Get("Retry-After") != ""; got != retryAfter {
			t.Errorf("%s: Retry-After set %v, want %v", name, got, retryAfter)
		}
	}
	tooMany := fmt.Errorf("%w: limit 1", state.ErrTooManyJobs)
	held := fmt.Errorf("held: %w", context.DeadlineExceeded)
	f("too many jobs, 429", tooMany, http.StatusTooManyRequests, http.StatusTooManyRequests, true)
	f("too many jobs, 503", tooMany, http.StatusServiceUnavailable, http.StatusServiceUnavailable, true)
	f("held in backoff, 503", held, http.StatusServiceUnavailable, http.StatusServiceUnavailable, true)
	f("job cancelled", &state.NotAcceptingError{Job: "j", State: state.Cancelled}, http.StatusServiceUnavailable, http.StatusConflict, false)
	f("bad id", fmt.Errorf("%w: x", state.ErrInvalidJobID), http.StatusServiceUnavailable, http.StatusBadRequest, false)
	f("closed", errors.Join(state.ErrClosed), http.StatusTooManyRequests, http.StatusServiceUnavailable, false)
}
