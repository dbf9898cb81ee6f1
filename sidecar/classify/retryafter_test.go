package classify

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	f := func(v string, want time.Duration, wantOK bool) {
		t.Helper()
		got, ok := ParseRetryAfter(v, testNow)
		if got != want || ok != wantOK {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", v, got, ok, want, wantOK)
		}
	}
	date := func(d time.Duration) string { return testNow.Add(d).Format(http.TimeFormat) }

	// delta-seconds
	f("0", 0, true)
	f("1", time.Second, true)
	f("120", 2*time.Minute, true)
	f("  7 ", 7*time.Second, true)
	f("007", 7*time.Second, true)
	f("3600", time.Hour, true)
	f("1.5", 1500*time.Millisecond, true)
	f("0.250", 250*time.Millisecond, true)
	f("2.0000000001", 2*time.Second, true) // beyond nanoseconds: ignored
	f("3600.0", time.Hour, true)

	// HTTP dates, all three RFC 9110 forms
	f(date(30*time.Second), 30*time.Second, true)
	f(date(time.Hour), time.Hour, true)
	f(testNow.Add(90*time.Second).Format(time.RFC850), 90*time.Second, true)
	f(testNow.Add(45*time.Second).Format(time.ANSIC), 45*time.Second, true)
	f(date(0), 0, true)
	f(date(-time.Hour), 0, true) // in the past: retry now

	// absurd
	f("3601", 0, false)
	f("3600.5", 0, false)
	f("17400000", 0, false) // milliseconds sent as seconds
	f("99999999999999999999999999", 0, false)
	f(date(time.Hour+time.Second), 0, false)
	f(date(100*365*24*time.Hour), 0, false)

	// garbage and negatives
	f("", 0, false)
	f("   ", 0, false)
	f("-1", 0, false)
	f("+5", 0, false)
	f("1e3", 0, false)
	f("0x10", 0, false)
	f("Inf", 0, false)
	f("NaN", 0, false)
	f("1.", 0, false)
	f(".5", 0, false)
	f("1.5.2", 0, false)
	f("5s", 0, false)
	f("5 s", 0, false)
	f("1,5", 0, false)
	f("soon", 0, false)
	f("Fri, 31 Dec 1999 23:59:60 GMT garbage", 0, false)
	f("Fri, 32 Dec 1999 23:59:59 GMT", 0, false)
}

func TestParseRetryAfterZeroNow(t *testing.T) {
	// A zero now makes every real date absurdly far away.
	if d, ok := ParseRetryAfter(testNow.Format(http.TimeFormat), time.Time{}); ok || d != 0 {
		t.Errorf("date relative to the zero time = %v, %v; want 0, false", d, ok)
	}
}
