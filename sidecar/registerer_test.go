package sidecar

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBothRegisterer: a collector lands in both registries, or, when the
// second refuses it, in neither.
func TestBothRegisterer(t *testing.T) {
	all, counters := prometheus.NewRegistry(), prometheus.NewRegistry()
	r := bothRegisterer{all, counters}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_writes_total", Help: "h"})
	r.MustRegister(c)
	c.Add(3)
	for name, g := range map[string]prometheus.Gatherer{"all": all, "counters": counters} {
		if n, err := testutil.GatherAndCount(g, "sluice_test_writes_total"); n != 1 || err != nil {
			t.Errorf("%s: %d series (%v), want 1", name, n, err)
		}
	}

	clash := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_other_total", Help: "h"})
	counters.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_test_other_total", Help: "another"}))
	if err := r.Register(clash); err == nil {
		t.Fatal("Register of a name the second registry holds: no error")
	}
	if n, _ := testutil.GatherAndCount(all, "sluice_test_other_total"); n != 0 {
		t.Errorf("the first registry kept a collector the second refused")
	}
	if !r.Unregister(c) {
		t.Error("Unregister: false, want true")
	}
}
