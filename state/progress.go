package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// Unit is what a job's declared total counts. Each unit is a count sluice
// already keeps for the job, so declaring a total adds no new counting.
type Unit string

const (
	// UnitRecords counts the records the loader reports (ReportProgress):
	// only the loader knows its source records.
	UnitRecords Unit = "records"
	// UnitBytes counts the request bytes of the job's writes that the store
	// acknowledged (Totals.Bytes), bulk action lines included; not the
	// bytes the loader reports.
	UnitBytes Unit = "bytes"
	// UnitItems counts the bulk items the store acknowledged (Totals.Items),
	// where the store's answers count them.
	UnitItems Unit = "items"
)

var units = []Unit{UnitRecords, UnitBytes, UnitItems}

// Total is a job's declared size: N of Unit. The zero value is "no total".
// In JSON it is an object with exactly one member, named after its unit:
// {"records": 1000000}.
type Total struct {
	Unit Unit
	N    int64
}

// Validate reports a total that cannot be used, wrapping ErrInvalid.
func (t Total) Validate() error {
	if !slices.Contains(units, t.Unit) {
		return fmt.Errorf("%w: total: unit %q is not one of records, bytes, items", ErrInvalid, t.Unit)
	}
	if t.N <= 0 {
		return fmt.Errorf("%w: total: %s must be positive, got %d", ErrInvalid, t.Unit, t.N)
	}
	return nil
}

// MarshalJSON implements json.Marshaler.
func (t Total) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[Unit]int64{t.Unit: t.N})
}

// UnmarshalJSON implements json.Unmarshaler. It accepts exactly one of
// records, bytes or items, a positive integer; anything else is an error,
// so a typo never declares a total nobody meant.
func (t *Total) UnmarshalJSON(b []byte) error {
	var v struct {
		Records, Bytes, Items *int64
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf(`state: total: want {"records"|"bytes"|"items": N}: %w`, err)
	}
	var got []Total
	for _, c := range []struct {
		u Unit
		n *int64
	}{{UnitRecords, v.Records}, {UnitBytes, v.Bytes}, {UnitItems, v.Items}} {
		if c.n != nil {
			got = append(got, Total{c.u, *c.n})
		}
	}
	if len(got) != 1 {
		return fmt.Errorf(`state: total: want exactly one of "records", "bytes", "items"; got %d`, len(got))
	}
	if err := got[0].Validate(); err != nil {
		return err
	}
	*t = got[0]
	return nil
}

// ETAUnknown says why a job's ETA is not known; "" when it is.
type ETAUnknown string

const (
	// ETANoTotal: no total was declared, so there is nothing to finish.
	ETANoTotal ETAUnknown = "no_total"
	// ETACompleted: the job was declared complete.
	ETACompleted ETAUnknown = "completed"
	// ETAStopped: the job is cancelling, cleaning, cancelled or failed; it
	// takes no writes, so it will not get closer.
	ETAStopped ETAUnknown = "stopped"
	// ETATotalReached: done has reached the total; the job may still write
	// (a total is an estimate), but there is no time left to estimate.
	ETATotalReached ETAUnknown = "total_reached"
	// ETADoneDecreasing: the loader's last report counted fewer records
	// than the one before (a loader that started counting again); the
	// remaining work is unknown until a report counts more than the one
	// before it.
	ETADoneDecreasing ETAUnknown = "done_decreasing"
	// ETARateZero: nothing was acknowledged in the unit within the rate
	// window.
	ETARateZero ETAUnknown = "rate_zero"
	// ETARateTooLow: at the recent rate the job would take longer than
	// maxETA, which is no estimate anyone can use.
	ETARateTooLow ETAUnknown = "rate_too_low"
)

// maxETA bounds a useful ETA, well inside time.Duration's range.
const maxETA = 10 * 365 * 24 * time.Hour

// rateSpan is the longest span of the recent rate: the rate window.
const rateSpan = time.Duration(len(rateWindow{})) * time.Second

// JobProgress is how far a job with a declared total is, and when it
// finishes at its recent rate. Done is the job's count in Unit, Fraction
// is Done/Total capped at 1, and RatePerSecond is the recent rate in Unit:
// over the last minute, or over the time sluice has watched the job (since
// it was created or sluice started) when that is shorter, so that a young
// job's rate is not diluted by a minute it did not exist. ETASeconds and
// ETAAt are set together, when the ETA is known; otherwise ETAUnknown says
// why.
type JobProgress struct {
	Unit          Unit       `json:"unit"`
	Total         int64      `json:"total"`
	Done          int64      `json:"done"`
	Fraction      float64    `json:"fraction"`
	RatePerSecond float64    `json:"rate_per_second"`
	ETASeconds    *int64     `json:"eta_seconds,omitempty"`
	ETAAt         *time.Time `json:"eta_at,omitempty"`
	ETAUnknown    ETAUnknown `json:"eta_unknown,omitempty"`
}

// progressInput is what estimate needs of a job.
type progressInput struct {
	total      Total
	done       int64
	decreasing bool // the loader's records went down (UnitRecords only)
	state      State
	recent     int64         // units counted within the rate window
	watched    time.Duration // how long the window has been counting
}

// estimate is the progress and ETA arithmetic: pure, time passed in.
func estimate(in progressInput, now time.Time) JobProgress {
	p := JobProgress{Unit: in.total.Unit, Total: in.total.N, Done: in.done}
	if in.total.N <= 0 {
		p.ETAUnknown = ETANoTotal
		return p
	}
	p.Fraction = min(max(float64(in.done)/float64(in.total.N), 0), 1)
	span := min(max(in.watched, time.Second), rateSpan)
	p.RatePerSecond = float64(max(in.recent, 0)) / span.Seconds()
	remaining := in.total.N - in.done
	switch {
	case in.state == Completed:
		p.ETAUnknown = ETACompleted
	case !in.state.Accepting():
		p.ETAUnknown = ETAStopped
	case remaining <= 0:
		p.ETAUnknown = ETATotalReached
	case in.decreasing:
		p.ETAUnknown = ETADoneDecreasing
	case p.RatePerSecond <= 0:
		p.ETAUnknown = ETARateZero
	}
	if p.ETAUnknown != "" {
		return p
	}
	secs := math.Ceil(float64(remaining) / p.RatePerSecond)
	if secs > maxETA.Seconds() {
		p.ETAUnknown = ETARateTooLow
		return p
	}
	n := int64(secs)
	at := now.Add(time.Duration(n) * time.Second)
	p.ETASeconds, p.ETAAt = &n, &at
	return p
}

// count returns what the window counted in unit u over its span at now.
func (w *rateWindow) count(now time.Time, u Unit) int64 {
	s := now.Unix()
	var n int64
	for _, b := range w {
		if age := s - b.sec; age >= 0 && age < int64(len(w)) {
			switch u {
			case UnitRecords:
				n += b.records
			case UnitBytes:
				n += b.bytes
			case UnitItems:
				n += b.items
			}
		}
	}
	return n
}

// progressLocked is e's progress, nil without a total. It requires that
// Manager.mu is held.
func (e *entry) progressLocked(now time.Time) *JobProgress {
	if e.total.Unit == "" {
		return nil
	}
	in := progressInput{total: e.total, state: e.job.State, recent: e.win.count(now, e.total.Unit), watched: now.Sub(e.winSince)}
	switch e.total.Unit {
	case UnitRecords:
		in.done, in.decreasing = e.loader.Records, e.recordsFell
	case UnitBytes:
		in.done = e.totals.Bytes
	case UnitItems:
		in.done = e.totals.Items
	}
	p := estimate(in, now)
	return &p
}

// SetTotal declares job id's total: its progress and ETA are shown from
// now on, in t's unit. A later total replaces it. Any job may have one,
// a finished one too (its fraction is then still shown). The total is
// committed before SetTotal returns; if the commit fails the error says so,
// the total holds in memory and is written again at the next tick.
// Errors: ErrNotFound, ErrInvalid, ErrClosed.
func (m *Manager) SetTotal(id string, t Total) (JobView, error) {
	if err := t.Validate(); err != nil {
		return JobView{}, err
	}
	var fx effects
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return JobView{}, ErrClosed
	}
	e, err := m.getLocked(id)
	if err != nil {
		m.mu.Unlock()
		return JobView{}, err
	}
	if e.total != t {
		e.total = t
		e.version++
	}
	// Committed even when unchanged: the same total again may be the
	// retry of one whose commit failed.
	fx.ids = append(fx.ids, id)
	m.mu.Unlock()
	if err := m.finishWithin(fx, requestWait); err != nil {
		v, _ := m.Get(id)
		return v, fmt.Errorf("state: job %q: total not durable: %w", id, err)
	}
	return m.Get(id)
}
