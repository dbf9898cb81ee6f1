package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/limiter"
)

// TestHealthzBeforeTheFirstTick: before the control loop's first tick
// there is no heartbeat to count from; /healthz says the loop has not run
// yet, not that it has been stuck for the longest duration there is.
func TestHealthzBeforeTheFirstTick(t *testing.T) {
	lim, err := limiter.New(limiter.Config{InitialRate: 100, MinRate: 1, MaxRate: 100, InitialConcurrency: 2, MaxConcurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	api := New(Config{HeartbeatMaxAge: 5 * time.Second}, Deps{Limiter: lim})
	rec := httptest.NewRecorder()
	api.handleHealthz(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not run yet") {
		t.Errorf("/healthz before the first tick: %d %s, want 503 saying the loop has not run yet", rec.Code, rec.Body)
	}
}
