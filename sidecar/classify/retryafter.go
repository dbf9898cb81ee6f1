package classify

import (
	"net/http"
	"strings"
	"time"
)

// MaxRetryAfter is the longest Retry-After that ParseRetryAfter accepts.
// Longer values are treated as garbage rather than clamped: they are far
// more often a unit mistake (milliseconds sent as seconds) than a real
// instruction to stop for hours, and the caller's own backoff is the better
// guide then. Callers still clamp accepted values to their own maximum.
const MaxRetryAfter = time.Hour

// ParseRetryAfter parses a Retry-After header value (RFC 9110 §10.2.3):
// delta-seconds, also accepted with a fraction such as "1.5", or an HTTP
// date, taken relative to now. Surrounding spaces are ignored.
//
// It returns ok=false for an empty value, garbage, a negative delay (a sign,
// or any form strconv would accept but the RFC does not: "+5", "1e3",
// "0x10", "Inf") and a delay above MaxRetryAfter. A date in the past means
// "now": (0, true). It never panics.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if c := v[0]; c >= '0' && c <= '9' {
		return parseDeltaSeconds(v)
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(now) // saturates instead of overflowing
	if d <= 0 {
		return 0, true
	}
	if d > MaxRetryAfter {
		return 0, false
	}
	return d, true
}

// parseDeltaSeconds parses digits with an optional fraction: "120", "1.5",
// "0.250". Anything else is rejected.
func parseDeltaSeconds(v string) (time.Duration, bool) {
	const maxSeconds = int64(MaxRetryAfter / time.Second)
	var secs int64
	i := 0
	for ; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
		secs = secs*10 + int64(v[i]-'0')
		if secs > maxSeconds {
			return 0, false
		}
	}
	d := time.Duration(secs) * time.Second
	if i == len(v) {
		return d, true
	}
	if v[i] != '.' || i+1 == len(v) {
		return 0, false
	}
	// Fraction: keep nanosecond precision, ignore digits beyond it.
	scale := time.Second
	for i++; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		scale /= 10
		d += time.Duration(c-'0') * scale
	}
	if d > MaxRetryAfter {
		return 0, false
	}
	return d, true
}
