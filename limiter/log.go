package limiter

import "time"

// Limit changes and pauses are logged once each with their reason; repeats
// of the same (limit, reason) are throttled to one per logEvery, with a
// count of those left out, so that a store that throttles every second
// does not flood the log while the first of each kind still shows.

// logEvery throttles repeats of one kind of limit change in the log.
const logEvery = 10 * time.Second

// limitKind is the limit a logged change is of.
type limitKind uint8

const (
	limitRate limitKind = iota
	limitConc
	numLimits
)

var limitNames = [numLimits]string{"rate", "concurrency"}

// reason is why a limit changed: the log line's "reason".
type reason uint8

const (
	reasonStartup reason = iota
	reasonProbe
	reasonCongestion
	reasonLatency
	reasonLittle
	reasonPause
	reasonLatencyUndo
	reasonUnused
	reasonNoGain
	reasonHeadroom
	numReasons
)

var reasonNames = [numReasons]string{"startup_growth", "probe_growth", "congestion", "latency", "littles_law", "retry_after_pause", "latency_is_load", "unused", "no_gain", "store_headroom"}

// logState throttles the log lines of one (limit, reason).
type logState struct {
	last       time.Time
	suppressed int
}

// logChangeLocked logs a limit change unless one of the same kind was
// logged less than logEvery ago (see logEventLocked). Requires that c.mu is
// held.
func (c *Controller) logChangeLocked(l limitKind, from, to float64, r reason, cause string, now time.Time) {
	if from == to {
		return
	}
	attrs := []any{"limit", limitNames[l], "from", from, "to", to, "reason", reasonNames[r]}
	if cause != "" {
		attrs = append(attrs, "cause", cause)
	}
	c.logEventLocked(&c.logs[l][r], now, "limit changed", attrs...)
}

// logPauseLocked logs a pause until until, unless one was logged less than
// logEvery ago (see logEventLocked). Requires that c.mu is held.
func (c *Controller) logPauseLocked(until time.Time, retryAfter time.Duration, cause string, now time.Time) {
	c.logEventLocked(&c.logs[limitRate][reasonPause], now, "pausing sends", "until", until, "retry_after", retryAfter, "cause", cause)
}

// logEventLocked logs msg with attrs at info level unless st logged less
// than logEvery ago; then it counts the record as suppressed, and the next
// one logged at info level says how many were. The suppressed ones are
// still logged at debug level, so that whoever traces the law sees every
// step. Requires that c.mu is held.
func (c *Controller) logEventLocked(st *logState, now time.Time, msg string, attrs ...any) {
	if !st.last.IsZero() && now.Sub(st.last) < logEvery {
		st.suppressed++
		c.log.Debug(msg, attrs...)
		return
	}
	if st.suppressed > 0 {
		attrs = append(attrs, "suppressed", st.suppressed)
	}
	c.log.Info(msg, attrs...)
	st.last, st.suppressed = now, 0
}
