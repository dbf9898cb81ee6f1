package proxy

import (
	"net/http/httptest"
	"testing"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/state"
)

// fixedFlows is a job tracker's registrations, for flowOf.
type fixedFlows struct {
	openJobs
	weight   float64
	priority string
}

func (f fixedFlows) FlowSettings(string) (float64, string) { return f.weight, f.priority }

func TestFlowOf(t *testing.T) {
	f := func(name string, jobs Jobs, weight, priority string, want limiter.Flow, wantErr string) {
		t.Helper()
		r := httptest.NewRequest("PUT", "/w", nil)
		if weight != "" {
			r.Header.Set(HeaderWeight, weight)
		}
		if priority != "" {
			r.Header.Set(HeaderPriority, priority)
		}
		got, err := (&Proxy{jobs: jobs}).flowOf(r, "j")
		switch {
		case wantErr != "" && (err == nil || err.code != wantErr):
			t.Errorf("%s: error %+v, want %s", name, err, wantErr)
		case wantErr == "" && err != nil:
			t.Errorf("%s: %+v", name, err)
		case wantErr == "" && got != want:
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
	none := openJobs{}
	f("defaults", none, "", "", limiter.Flow{Key: "j", Weight: 1}, "")
	f("headers", none, "2.5", "live", limiter.Flow{Key: "j", Weight: 2.5, Class: limiter.Live}, "")
	f("registration wins", fixedFlows{weight: 3, priority: state.PriorityBulk}, "2.5", "live", limiter.Flow{Key: "j", Weight: 3}, "")
	f("registration's default job class", fixedFlows{priority: state.PriorityLive}, "", "", limiter.Flow{Key: "j", Weight: 1, Class: limiter.Live}, "")
	f("weight too big", none, "101", "", limiter.Flow{}, "invalid_weight")
	f("weight not a number", none, "Inf", "", limiter.Flow{}, "invalid_weight")
	f("bad header even when registered", fixedFlows{weight: 3}, "-1", "", limiter.Flow{}, "invalid_weight")
	f("unknown class", none, "", "urgent", limiter.Flow{}, "invalid_priority")
}

// FuzzFlowOf: whatever the headers, a write either gets a 400 or a flow
// the limiter accepts, within the documented bounds.
func FuzzFlowOf(f *testing.F) {
	for _, s := range [][2]string{{"1", "bulk"}, {"0.1", "live"}, {"1e2", ""}, {"NaN", "x"}, {"", "LIVE"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, weight, priority string) {
		r := httptest.NewRequest("PUT", "/w", nil)
		r.Header.Set(HeaderWeight, weight)
		r.Header.Set(HeaderPriority, priority)
		fl, err := (&Proxy{jobs: openJobs{}}).flowOf(r, "j")
		if err != nil {
			return
		}
		if !state.ValidWeight(fl.Weight) || (fl.Class != limiter.Live && fl.Class != limiter.Bulk) {
			t.Fatalf("flowOf(%q, %q) = %+v", weight, priority, fl)
		}
	})
}
