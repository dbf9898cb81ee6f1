package admin

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// HistoryPoints is how many points a History made for the status page
// keeps: 15 minutes at one point a second, about 50 KiB.
const HistoryPoints = 900

// historyInterval is how often RunHistory samples.
const historyInterval = time.Second

// HistoryValues are the readings one sample turns into a Point: two
// cumulative counters, from which the rates between samples follow, and
// the limits as they are at the sample.
type HistoryValues struct {
	// Acknowledged counts the writes the store acknowledged since start.
	Acknowledged float64
	// Throttled counts the attempts the store refused as throttled or
	// overloaded since start: the store saying "slow down".
	Throttled float64
	RateLimit float64 // in the rate unit per second
	// Concurrency is the concurrency limit, InFlight the attempts holding a
	// slot under it.
	Concurrency int
	InFlight    int
}

// Point is one sample of the history: the rates over the interval that
// ends at T, and the limits at T.
type Point struct {
	T            int64   `json:"t"` // unix milliseconds
	Acknowledged float64 `json:"acknowledged_per_second"`
	Throttled    float64 `json:"throttled_per_second"`
	RateLimit    float64 `json:"rate_limit"`
	Concurrency  int     `json:"concurrency_limit"`
	InFlight     int     `json:"in_flight"`
}

// History is a bounded ring of Points: the recent past of the controller
// that the status page charts, kept in memory only (an operator looking
// during an incident needs the last minutes, not a time-series store).
// Sample adds a point; Since reads them. A nil *History keeps nothing. It
// is safe for concurrent use.
type History struct {
	mu     sync.Mutex
	ring   []Point
	next   int // where the next point goes
	n      int // points held, at most len(ring)
	prev   HistoryValues
	prevAt time.Time // zero until the first sample
	lastT  int64     // the newest point's T
}

// NewHistory returns a History that keeps the latest n points.
func NewHistory(n int) *History {
	return &History{ring: make([]Point, max(n, 1))}
}

// Sample records the readings v taken at now. The first sample only sets
// the baseline the next one's rates are counted from. A sample not after
// the previous one (a clock stepped back) is dropped and becomes the new
// baseline, so no rate is ever computed over a negative or zero interval;
// a counter that went down (a restarted source) counts from zero. Points
// only move forward: one the wall clock would stamp at or before the
// newest (it was stepped back) goes on from the newest by the time since
// the last sample, since the page asks for the points after the newest
// it has, and would chart nothing until the clock caught up.
func (h *History) Sample(now time.Time, v HistoryValues) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, prevAt := h.prev, h.prevAt
	h.prev, h.prevAt = v, now
	if prevAt.IsZero() {
		return
	}
	elapsed := now.Sub(prevAt).Seconds()
	if elapsed <= 0 {
		return
	}
	t := now.UnixMilli()
	if t <= h.lastT {
		t = h.lastT + max(1, int64(elapsed*1000))
	}
	h.lastT = t
	h.ring[h.next] = Point{
		T:            t,
		Acknowledged: perSecond(prev.Acknowledged, v.Acknowledged, elapsed),
		Throttled:    perSecond(prev.Throttled, v.Throttled, elapsed),
		RateLimit:    v.RateLimit,
		Concurrency:  v.Concurrency,
		InFlight:     v.InFlight,
	}
	h.next = (h.next + 1) % len(h.ring)
	h.n = min(h.n+1, len(h.ring))
}

// perSecond is a counter's rate between two readings elapsed seconds
// apart; a reset (to below the earlier reading) counts from zero, as
// Prometheus' rate() does.
func perSecond(before, after, elapsed float64) float64 {
	d := after - before
	if d < 0 {
		d = after
	}
	return d / elapsed
}

// Since returns the points later than afterMillis (unix milliseconds),
// oldest first; 0 returns them all.
func (h *History) Since(afterMillis int64) []Point {
	if h == nil {
		return []Point{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Point, 0, h.n)
	for i := range h.n {
		p := h.ring[(h.next-h.n+i+len(h.ring))%len(h.ring)]
		if p.T > afterMillis {
			out = append(out, p)
		}
	}
	return out
}

// RunHistory samples the limiter and the attempt counters into
// Deps.History once a second until ctx ends. It returns at once when
// there is no History.
func (s *API) RunHistory(ctx context.Context) {
	if s.d.History == nil {
		return
	}
	t := time.NewTicker(historyInterval)
	defer t.Stop()
	sample := func() {
		// Stamped when the counters have been read, not with the tick's
		// time: a tick received late (the process was paused, or this
		// goroutine or the gather did not run for a while) carries the
		// time it was due, and the counts of the whole stall would be
		// charted as one second's. The reset drops a tick that came due
		// meanwhile, which would otherwise sample again at once: a rate
		// over a millisecond is a spike or a zero.
		v := s.historyValues()
		s.d.History.Sample(time.Now(), v)
		t.Reset(historyInterval)
	}
	sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sample()
		}
	}
}

// historyValues reads the counters back from the registry, as
// signalCounts does, so the chart and /metrics can never disagree.
func (s *API) historyValues() HistoryValues {
	snap := s.d.Limiter.Snapshot()
	v := HistoryValues{RateLimit: snap.Rate, Concurrency: snap.Concurrency, InFlight: snap.InFlight}
	mfs, err := s.counters().Gather()
	if err != nil {
		return v
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "sluice_upstream_acknowledged_requests_total":
			for _, m := range mf.GetMetric() {
				v.Acknowledged += m.GetCounter().GetValue()
			}
		case "sluice_upstream_attempts_total":
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "kind" && (l.GetValue() == classify.Throttled.String() || l.GetValue() == classify.Overloaded.String()) {
						v.Throttled += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return v
}

// HistoryFeed is the JSON of GET /v1/history.
type HistoryFeed struct {
	IntervalSeconds float64 `json:"interval_seconds"`
	Capacity        int     `json:"capacity"` // the most points kept
	RateUnit        string  `json:"rate_unit"`
	Points          []Point `json:"points"`
}

// handleHistory answers GET /v1/history[?after=unix-ms]: the points
// after the given time, so that a page polling once a second fetches one
// point rather than all of them.
func (s *API) handleHistory(w http.ResponseWriter, r *http.Request) {
	var after int64
	if a := r.URL.Query().Get("after"); a != "" {
		var err error
		if after, err = strconv.ParseInt(a, 10, 64); err != nil {
			apierror.Write(w, http.StatusBadRequest, "invalid_request", "after: unix milliseconds expected, got "+strconv.Quote(apierror.Truncate(a, 40)), nil)
			return
		}
	}
	feed := HistoryFeed{IntervalSeconds: historyInterval.Seconds(), RateUnit: s.cfg.Info.RateUnit, Points: s.d.History.Since(after)}
	if s.d.History != nil {
		feed.Capacity = len(s.d.History.ring)
	}
	apierror.WriteJSON(w, http.StatusOK, feed)
}
