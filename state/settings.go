package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Default settings, used where neither the job nor Config.Defaults says.
const (
	DefaultStallAfter = 5 * time.Minute
	// MinStallAfter bounds a stall window from below: shorter, a job is
	// stalled, and then cancelled and cleaned up, by a throttle that
	// holds its writes for a moment, which is most often a unit typed
	// wrong (5ms for 5m).
	MinStallAfter              = time.Second
	DefaultCancelGrace         = 5 * time.Minute
	DefaultMaxJobs             = 1000
	DefaultActionTimeout       = 30 * time.Second
	DefaultActionRetries       = 5
	DefaultRetention           = 24 * time.Hour
	DefaultCheckpointsRetained = 5
	DefaultProbeInterval       = 10 * time.Second
	DefaultQuietAfter          = 30 * time.Second
	DefaultBackoffAfter        = 3
	DefaultBackoffQuiet        = 2 * time.Second
	DefaultBackoffMin          = time.Second
	DefaultBackoffMax          = time.Minute
)

// Input limits.
const (
	MaxCheckpointBytes = 64 << 10
	MaxLabels          = 32
	maxLabelKey        = 64
	maxLabelValue      = 256
	maxReason          = 256
)

// A job's share of the limiter's queue (see Settings.Weight and Priority).
const (
	// MinWeight and MaxWeight bound a job's weight, registered or given
	// by a write's X-Sluice-Weight: a thousandfold between the least and
	// the most is as fine a split as anyone asks for, and keeps a typo
	// (1e9) from starving every other job.
	MinWeight = 0.1
	MaxWeight = 100
	// PriorityLive is served before PriorityBulk while both wait, except
	// for bulk's floor (SLUICE_BULK_FLOOR); bulk is the default.
	PriorityLive = "live"
	PriorityBulk = "bulk"
)

// ValidWeight reports whether w is a weight a job may have.
func ValidWeight(w float64) bool { return w >= MinWeight && w <= MaxWeight }

// ValidPriority reports whether p names a priority class.
func ValidPriority(p string) bool { return p == PriorityLive || p == PriorityBulk }

// Settings are a job's own settings; zero fields inherit the Manager's
// defaults (Config.Defaults, then the Default* constants). A negative
// Deadline means "no deadline" even if the defaults set one. In JSON,
// durations are Go duration strings ("5m", "1h30m").
type Settings struct {
	StallAfter  time.Duration
	CancelGrace time.Duration
	Deadline    time.Duration
	AutoCancel  *bool
	// AutoCancelCauses are the stall causes that cancel the job; nil
	// inherits, empty means none.
	AutoCancelCauses []StallCause
	// HeartbeatInterval > 0 asks for the job's loader to be watched: it
	// writes or reports progress (changed or not) at least this often, and
	// a job without progress whose loader fell silent longer is stalled
	// (loader_idle) instead of idle.
	HeartbeatInterval time.Duration
	Cancel            *ActionSpec
	Cleanup           *ActionSpec
	ProbeURL          string // GET; ${JOB} substituted as in ActionSpec
	ProbePointer      string // RFC 6901 pointer to a number that must increase
	Labels            map[string]string
	// Weight is the job's share of the limiter against the other jobs of
	// its priority class waiting at the same time, in [MinWeight,
	// MaxWeight]; 0 leaves it to its writes' X-Sluice-Weight, else 1.
	Weight float64
	// Priority is PriorityLive or PriorityBulk; "" leaves it to its
	// writes' X-Sluice-Priority, else bulk (the default job: the
	// operator's SLUICE_DEFAULT_JOB_PRIORITY).
	Priority string
}

type settingsJSON struct {
	StallAfter  string `json:"stall_after,omitempty"`
	CancelGrace string `json:"cancel_grace,omitempty"`
	Deadline    string `json:"deadline,omitempty"`
	AutoCancel  *bool  `json:"auto_cancel,omitempty"`
	// A pointer, so that an empty list (no cause cancels) survives a round
	// trip apart from none (inherit).
	AutoCancelCauses  *[]StallCause     `json:"auto_cancel_causes,omitempty"`
	HeartbeatInterval string            `json:"heartbeat_interval,omitempty"`
	Cancel            *ActionSpec       `json:"cancel,omitempty"`
	Cleanup           *ActionSpec       `json:"cleanup,omitempty"`
	ProbeURL          string            `json:"probe_url,omitempty"`
	ProbePointer      string            `json:"probe_pointer,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Weight            float64           `json:"weight,omitempty"`
	Priority          string            `json:"priority,omitempty"`
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// MarshalJSON implements json.Marshaler.
func (s Settings) MarshalJSON() ([]byte, error) {
	j := settingsJSON{
		StallAfter: durString(s.StallAfter), CancelGrace: durString(s.CancelGrace), Deadline: durString(s.Deadline),
		AutoCancel: s.AutoCancel, HeartbeatInterval: durString(s.HeartbeatInterval), Cancel: s.Cancel, Cleanup: s.Cleanup,
		ProbeURL: s.ProbeURL, ProbePointer: s.ProbePointer, Labels: s.Labels, Weight: s.Weight, Priority: s.Priority,
	}
	if s.AutoCancelCauses != nil {
		j.AutoCancelCauses = &s.AutoCancelCauses
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *Settings) UnmarshalJSON(b []byte) error {
	var j settingsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Settings{AutoCancel: j.AutoCancel, Cancel: j.Cancel, Cleanup: j.Cleanup,
		ProbeURL: j.ProbeURL, ProbePointer: j.ProbePointer, Labels: j.Labels, Weight: j.Weight, Priority: j.Priority}
	if j.AutoCancelCauses != nil {
		out.AutoCancelCauses = append([]StallCause{}, *j.AutoCancelCauses...)
	}
	for _, f := range []struct {
		name string
		in   string
		out  *time.Duration
	}{
		{"stall_after", j.StallAfter, &out.StallAfter}, {"cancel_grace", j.CancelGrace, &out.CancelGrace},
		{"deadline", j.Deadline, &out.Deadline}, {"heartbeat_interval", j.HeartbeatInterval, &out.HeartbeatInterval},
	} {
		if f.in == "" {
			continue
		}
		d, err := time.ParseDuration(f.in)
		if err != nil {
			return fmt.Errorf("state: %s: %w", f.name, err)
		}
		*f.out = d
	}
	*s = out
	return nil
}

// Validate checks the settings; errors wrap ErrInvalid.
func (s *Settings) Validate() error {
	if s.StallAfter < 0 {
		return fmt.Errorf("%w: stall_after %s is negative", ErrInvalid, s.StallAfter)
	}
	if s.StallAfter > 0 && s.StallAfter < MinStallAfter {
		return fmt.Errorf("%w: stall_after %s is under %s (a unit typed wrong? 5ms for 5m would cancel a job at its first throttle)", ErrInvalid, s.StallAfter, MinStallAfter)
	}
	if s.CancelGrace < 0 {
		return fmt.Errorf("%w: cancel_grace %s is negative", ErrInvalid, s.CancelGrace)
	}
	if s.HeartbeatInterval < 0 {
		return fmt.Errorf("%w: heartbeat_interval %s is negative", ErrInvalid, s.HeartbeatInterval)
	}
	if s.Weight != 0 && !ValidWeight(s.Weight) { // NaN fails the comparisons too
		return fmt.Errorf("%w: weight %v must lie in [%v, %v]", ErrInvalid, s.Weight, MinWeight, MaxWeight)
	}
	if s.Priority != "" && !ValidPriority(s.Priority) {
		return fmt.Errorf("%w: priority %q must be %q or %q", ErrInvalid, s.Priority, PriorityLive, PriorityBulk)
	}
	for _, c := range s.AutoCancelCauses {
		if _, err := ParseStallCause(string(c)); err != nil {
			return fmt.Errorf("%w: auto_cancel_causes: %w", ErrInvalid, err)
		}
	}
	for name, a := range map[string]*ActionSpec{"cancel": s.Cancel, "cleanup": s.Cleanup} {
		if a == nil {
			continue
		}
		if err := a.Validate(); err != nil {
			return fmt.Errorf("%w: %s action: %w", ErrInvalid, name, err)
		}
	}
	if s.ProbeURL != "" {
		probe := ActionSpec{Kind: KindHTTP, Method: "GET", URL: s.ProbeURL}
		if err := probe.Validate(); err != nil {
			return fmt.Errorf("%w: probe_url: %w", ErrInvalid, err)
		}
	}
	if s.ProbePointer != "" && !strings.HasPrefix(s.ProbePointer, "/") {
		return fmt.Errorf("%w: probe_pointer %q must start with /", ErrInvalid, s.ProbePointer)
	}
	if len(s.Labels) > MaxLabels {
		return fmt.Errorf("%w: %d labels, at most %d", ErrInvalid, len(s.Labels), MaxLabels)
	}
	for k, v := range s.Labels {
		if !validLabelKey(k) {
			return fmt.Errorf("%w: label name %q must match [a-zA-Z_][a-zA-Z0-9_]{0,63}", ErrInvalid, k)
		}
		if len(v) > maxLabelValue {
			return fmt.Errorf("%w: label %q value is %d bytes, at most %d", ErrInvalid, k, len(v), maxLabelValue)
		}
	}
	return nil
}

func validLabelKey(k string) bool {
	if k == "" || len(k) > maxLabelKey {
		return false
	}
	for i, c := range []byte(k) {
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// merge returns s with zero fields taken from d.
func (s Settings) merge(d Settings) Settings {
	if s.StallAfter == 0 {
		s.StallAfter = d.StallAfter
	}
	if s.CancelGrace == 0 {
		s.CancelGrace = d.CancelGrace
	}
	if s.Deadline == 0 {
		s.Deadline = d.Deadline
	}
	if s.AutoCancel == nil {
		s.AutoCancel = d.AutoCancel
	}
	if s.AutoCancelCauses == nil {
		s.AutoCancelCauses = d.AutoCancelCauses
	}
	if s.HeartbeatInterval == 0 {
		s.HeartbeatInterval = d.HeartbeatInterval
	}
	if s.Cancel == nil {
		s.Cancel = d.Cancel
	}
	if s.Cleanup == nil {
		s.Cleanup = d.Cleanup
	}
	if s.ProbeURL == "" {
		s.ProbeURL, s.ProbePointer = d.ProbeURL, d.ProbePointer
	}
	if s.Labels == nil {
		s.Labels = d.Labels
	}
	return s
}

// Errors returned by the Manager; the admin API maps them to status codes.
var (
	ErrInvalidJobID = errors.New("state: invalid job id (1-128 characters of A-Za-z0-9._:-, starting with a letter or digit)") // 400
	ErrInvalid      = errors.New("state: invalid request")                                                                     // 400
	ErrTooManyJobs  = errors.New("state: too many live jobs")                                                                  // 429
	ErrNotFound     = errors.New("state: no such job")                                                                         // 404
	ErrClosed       = errors.New("state: manager closed")                                                                      // 503
	ErrDraining     = errors.New("state: shutting down: a held job's writes are not waited for")                               // the proxy's pushback
	ErrNotDurable   = errors.New("state: not recorded in the store")                                                           // 503: the request (cancel, reopen, delete) did not take effect; retry
	// ErrStoreSlow: the state store did not answer within a request's
	// bound (requestWait), as when a write to its volume hangs. With
	// ErrNotDurable the request was not done; alone, what comes of it is
	// decided when the store answers (storeRequest, finishWithin).
	ErrStoreSlow = errors.New("state: the state store is not answering") // 503
)

// ValidJobID reports whether id is 1–128 characters of A-Za-z0-9._:-
// starting with a letter or digit. The first character rule keeps an id
// from reading as a path segment ("." or "..") in a cancel URL, or as an
// option ("-rf", "--all") in a cancel command's argv.
func ValidJobID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	if c := id[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// Observation is the outcome of one upstream attempt, reported by the proxy.
type Observation struct {
	Kind ObsKind
	// Bytes and Items acknowledged by the store (Items -1: unknown).
	Bytes int64
	Items int64
	// RetryAfter is the store's hint, 0 if none.
	RetryAfter time.Duration
}

// ObsKind is what one upstream attempt means for its job: progress, a
// throttle, or an error that may stall it. The proxy's adapter maps its
// classification to an ObsKind in one place; the Manager's Observe turns it
// into the job's totals and a machine event. The zero value is no kind:
// Observe ignores it, as it ignores any value outside the set.
type ObsKind uint8

// Observation kinds.
const (
	_              ObsKind = iota
	ObsOK                  // acknowledged: progress
	ObsThrottled           // 429 or per-item bulk rejections
	ObsOverloaded          // 503-style overload: a throttle
	ObsTimeout             // attempt deadline: a congestion signal
	ObsServerError         // 5xx: not progress, a stall cause
	ObsClientError         // 4xx: not progress, a stall cause
	ObsUnreachable         // no connection to the store: not progress, a stall cause of its own
	// ObsAbandoned: the loader gave up on a write before the store
	// answered it (its own timeout, shorter than SLUICE_UPSTREAM_TIMEOUT,
	// or it went away). Not progress; a timeout towards a stall once the
	// loader writes again (see Job.abandoned).
	ObsAbandoned
)

var obsKindNames = [...]string{
	ObsOK:          "ok",
	ObsThrottled:   "throttled",
	ObsOverloaded:  "overloaded",
	ObsTimeout:     "timeout",
	ObsServerError: "server_error",
	ObsClientError: "client_error",
	ObsUnreachable: "unreachable",
	ObsAbandoned:   "abandoned",
}

// String returns the kind's snake_case name, the same word as the proxy's
// classification of the attempt ("ok", "throttled", "overloaded",
// "timeout", "server_error", "client_error", "unreachable"), "abandoned", or
// "obs_kind(N)" for the zero value and any value outside the set.
func (k ObsKind) String() string {
	if int(k) < len(obsKindNames) && obsKindNames[k] != "" {
		return obsKindNames[k]
	}
	return "obs_kind(" + strconv.Itoa(int(k)) + ")"
}

// Progress is what a loader reports: cumulative Records and Bytes, and an
// optional opaque JSON Checkpoint (at most MaxCheckpointBytes). A report
// counts as progress when it differs from the previous one; repeating the
// same values is a heartbeat and does not hold off stall detection.
type Progress struct {
	Records    int64           `json:"records"`
	Bytes      int64           `json:"bytes"`
	Checkpoint json.RawMessage `json:"checkpoint,omitempty"`
}

// Checkpoint is one checkpoint reported by the loader.
type Checkpoint struct {
	Seq     uint64          `json:"seq"`
	At      time.Time       `json:"at"`
	Records int64           `json:"records"`
	Bytes   int64           `json:"bytes"`
	Data    json.RawMessage `json:"data"`
}

// Totals are what the store acknowledged for a job through the proxy, and
// what it refused.
type Totals struct {
	Requests  int64 `json:"requests"`
	Bytes     int64 `json:"bytes"`
	Items     int64 `json:"items"`
	Throttled int64 `json:"throttled"`
	Timeouts  int64 `json:"timeouts"`
	Errors    int64 `json:"errors"`
}

// LoaderProgress is the last progress the loader or the probe reported.
type LoaderProgress struct {
	Records    int64   `json:"records"`
	Bytes      int64   `json:"bytes"`
	ProbeValue float64 `json:"probe_value,omitempty"`
}

// Rates are per-second averages over the last minute, or over the job's
// life when it is younger.
type Rates struct {
	Requests float64 `json:"requests_per_second"`
	Bytes    float64 `json:"bytes_per_second"`
	Items    float64 `json:"items_per_second"`
	Records  float64 `json:"records_per_second"`
}

// rateWindow counts per second over the last minute.
type rateWindow [60]struct {
	sec                        int64
	req, bytes, items, records int64
}

func (w *rateWindow) add(now time.Time, req, bytes, items, records int64) {
	s := now.Unix()
	b := &w[(s%60+60)%60] // a clock stepped back before 1970 must not index out of range
	if b.sec != s {
		b.sec, b.req, b.bytes, b.items, b.records = s, 0, 0, 0, 0
	}
	b.req += req
	b.bytes += bytes
	b.items += items
	b.records += records
}

// rates returns the per-second averages over the last minute, or over
// the time since since when that is shorter. since is when the window
// began counting (the job's creation, or its restore in this process):
// a job ten seconds old that wrote 100 requests writes 10 a second, and
// dividing by the whole minute would show a sixth of that. The divisor is
// at least a second, the width of a bucket, so that a job's first write
// is not a rate without bound.
func (w *rateWindow) rates(now, since time.Time) Rates {
	s := now.Unix()
	var r Rates
	for _, b := range w {
		if age := s - b.sec; age >= 0 && age < 60 {
			r.Requests += float64(b.req)
			r.Bytes += float64(b.bytes)
			r.Items += float64(b.items)
			r.Records += float64(b.records)
		}
	}
	span := 60.0
	if age := now.Sub(since).Seconds(); age < span {
		span = max(age, 1)
	}
	r.Requests /= span
	r.Bytes /= span
	r.Items /= span
	r.Records /= span
	return r
}
