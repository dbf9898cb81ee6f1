package proxy

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/sidecar/classify"
)

// TestRefusedShare: only throttled and overloaded attempts add to
// sluice_upstream_refused_share_total, each its share of refused work; a
// share the classifier could not bound counts the whole attempt, as the
// limiter reads it, never more than one.
func TestRefusedShare(t *testing.T) {
	f := func(name string, k classify.Kind, share float64, throttled, overloaded float64) {
		t.Helper()
		m := newMetrics(prometheus.NewRegistry())
		m.refused(k, share)
		if got := testutil.ToFloat64(m.refusedShare.WithLabelValues("throttled")); got != throttled {
			t.Errorf("%s: throttled %v, want %v", name, got, throttled)
		}
		if got := testutil.ToFloat64(m.refusedShare.WithLabelValues("overloaded")); got != overloaded {
			t.Errorf("%s: overloaded %v, want %v", name, got, overloaded)
		}
	}
	f("partial bulk", classify.Throttled, 0.003, 0.003, 0)
	f("whole request", classify.Overloaded, 1, 0, 1)
	f("no share", classify.Throttled, 0, 1, 0)
	f("over one", classify.Throttled, 1.5, 1, 0)
	f("NaN", classify.Overloaded, math.NaN(), 0, 1)
	f("timeout", classify.Timeout, 1, 0, 0)
	f("server error", classify.ServerError, 1, 0, 0)
	f("ok", classify.OK, 0, 0, 0)
}
