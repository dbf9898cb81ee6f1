package proxy

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// Backoffs of heldProxy: a re-send waits at least holdMinWait, a
// Retry-After at most holdMaxRetryAfter.
const holdMinWait, holdMaxRetryAfter = 100 * time.Millisecond, 5 * time.Second

// heldProxy is a Proxy in hold mode for retryPolicy's tests: a minute's
// hold, two retries, and the retry budget bc.
func heldProxy(t *testing.T, bc limiter.RetryBudgetConfig) *Proxy {
	t.Helper()
	lim, err := limiter.New(limiter.Config{InitialRate: 10, MinRate: 1, MaxRate: 100, MaxConcurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	budget, err := limiter.NewRetryBudget(bc)
	if err != nil {
		t.Fatal(err)
	}
	return &Proxy{
		retryMax:    2,
		hold:        time.Minute,
		lim:         lim,
		retryBudget: budget,
		m:           newMetrics(prometheus.NewRegistry()),
		backoff:     limiter.Backoff{Min: holdMinWait, Max: time.Second},
		honour:      limiter.Backoff{Min: holdMinWait, Max: holdMaxRetryAfter},
	}
}

// retryPolicy in hold mode, case by case: what is held, how long a re-send
// waits, and what ends the hold.
func TestRetryPolicyHold(t *testing.T) {
	const minWait, maxRetryAfter = holdMinWait, holdMaxRetryAfter
	// A budget that allows one retry in its window: held re-sends do not
	// spend it, and are not refused by it.
	p := heldProxy(t, limiter.RetryBudgetConfig{Ratio: 0.01, MinRetries: 1})
	answer := &http.Response{StatusCode: http.StatusTooManyRequests}
	timedOut := context.DeadlineExceeded
	type want struct {
		retry            bool
		waitMin, waitMax time.Duration // [waitMin, waitMax) when retry
		reason           string        // the pushback's, when it stops with one
	}
	f := func(name string, ex exchange, resp *http.Response, err error, w want) {
		t.Helper()
		ex.loader, ex.cost = context.Background(), 1
		retry, wait, stop := p.retryPolicy(context.Background(), &ex, resp, err)
		var pb *pushbackError
		switch {
		case retry != w.retry:
			t.Errorf("%s: retry %v (stop %v), want %v", name, retry, stop, w.retry)
		case retry && (wait < w.waitMin || wait >= w.waitMax):
			t.Errorf("%s: wait %v, want [%v, %v)", name, wait, w.waitMin, w.waitMax)
		case w.reason != "" && (!errors.As(stop, &pb) || pb.reason != w.reason):
			t.Errorf("%s: stop %v, want a pushback %s", name, stop, w.reason)
		}
	}
	now := time.Now()
	held := func(attempts int, last classify.Result) exchange {
		return exchange{retryable: true, attempts: attempts, last: last, arrived: now, holdUntil: now.Add(time.Minute)}
	}
	throttled := classify.Result{Kind: classify.Throttled, Reason: "status_429"}
	withRA := classify.Result{Kind: classify.Throttled, Reason: "status_429", RetryAfter: 2 * time.Second}
	refused := classify.Result{Kind: classify.Unreachable, Reason: reasonConnectionRefused}
	timeout := classify.Result{Kind: classify.Timeout, Reason: reasonTimeout}
	server := classify.Result{Kind: classify.ServerError, Reason: "status_500"}

	// Throttled, overloaded, timed out or unreachable: held however many
	// attempts it took, after the store's Retry-After or the first
	// backoff step, which does not grow.
	for _, n := range []int{1, 3, 50} {
		f("throttled", held(n, throttled), answer, nil, want{retry: true, waitMin: minWait, waitMax: 2 * minWait})
	}
	f("Retry-After", held(7, withRA), answer, nil, want{retry: true, waitMin: 2 * time.Second, waitMax: 2200*time.Millisecond + 1})
	f("overloaded", held(4, classify.Result{Kind: classify.Overloaded, Reason: "status_503"}), answer, nil,
		want{retry: true, waitMin: minWait, waitMax: 2 * minWait})
	f("unreachable", held(9, refused), nil, errors.New("connection refused"), want{retry: true, waitMin: minWait, waitMax: 2 * minWait})
	f("timed out, and may be repeated", held(2, timeout), nil, timedOut, want{retry: true, waitMin: minWait, waitMax: 2 * minWait})
	if got := testutil.ToFloat64(p.m.retryBudgetExhausted); got != 0 {
		t.Errorf("held re-sends refused by the retry budget %v times, want none: they wait for permits", got)
	}

	// A server error is not held: the usual retries, within the budget
	// (one in this window) and SLUICE_RETRY_MAX.
	f("server error, first retry", held(1, server), answer, nil, want{retry: true, waitMin: minWait, waitMax: 2 * minWait})
	f("server error, budget spent", held(1, server), answer, nil, want{})
	f("server error, retries spent", held(3, server), answer, nil, want{})

	// The hold ends the wait: a re-send whose wait would end past it is
	// not made, and the loader is pushed back.
	late := held(5, withRA)
	late.holdUntil = time.Now().Add(time.Second)
	f("Retry-After past the hold", late, answer, nil, want{reason: reasonHoldExpired})
	late = held(5, throttled)
	late.holdUntil = time.Now()
	f("hold over", late, answer, nil, want{reason: reasonHoldExpired})
	if got := testutil.ToFloat64(p.m.rejected.WithLabelValues(reasonHoldExpired)); got != 2 {
		t.Errorf("sluice_proxy_backpressure_total{reason=hold_expired} = %v, want 2", got)
	}

	// Not held: a body that streamed once, and outside hold mode a
	// timeout (the write may have landed) or the last of the retries.
	streamed := held(1, throttled)
	streamed.retryable, streamed.holdUntil = false, time.Time{}
	f("streamed", streamed, answer, nil, want{})
	free := held(1, timeout)
	free.holdUntil = time.Time{}
	f("timed out, not held", free, nil, timedOut, want{})
	free = held(3, throttled)
	free.holdUntil = time.Time{}
	f("throttled, not held, retries spent", free, answer, nil, want{})
}

// The pushback's status is the operator's, always with a Retry-After; an
// invalid one is refused when the proxy is made.
func TestPushbackStatusIsChecked(t *testing.T) {
	for _, status := range []int{200, 404, 502} {
		if _, err := New(Config{PushbackStatus: status}, Deps{}); err == nil {
			t.Errorf("PushbackStatus %d accepted", status)
		}
	}
	if _, err := New(Config{HoldMax: -time.Second}, Deps{}); err == nil {
		t.Error("a negative HoldMax accepted")
	}
}

// A held write pipelined behind a write whose connection broke (or whose
// leader was not written in time) was not answered: the store did not take
// it up. It stays held, like a write that found the store unreachable,
// however many attempts its hold took and whatever the retry budget says.
// Otherwise a held write that a throttle window had sent RETRY_MAX times,
// then queued behind a 429 that closed its connection, would get a 502.
func TestRetryPolicyHoldsAPipelinedWriteNotAnswered(t *testing.T) {
	const minWait = holdMinWait
	p := heldProxy(t, limiter.RetryBudgetConfig{Ratio: 0.01, MinRetries: 1})
	if !p.retryBudget.TryRetry(time.Now()) { // spent
		t.Fatal("the budget allows no retry at all")
	}
	broken := errors.New("sluice: pipelined connection broke before the answer") // a pipeline.BrokenError
	now := time.Now()
	for _, n := range []int{1, 3, 9} {
		ex := exchange{retryable: true, pipelined: true, attempts: n, loader: context.Background(), cost: 1,
			last:    classify.Result{Kind: classify.ServerError, Reason: reasonPipelineBroken, Items: -1},
			arrived: now, holdUntil: now.Add(time.Minute)}
		retry, wait, stop := p.retryPolicy(context.Background(), &ex, nil, broken)
		if !retry || stop != nil || wait < minWait || wait >= 2*minWait {
			t.Errorf("attempt %d, not answered behind a broken connection: retry %v after %v, stop %v; want held, sent again after [%v, %v)",
				n, retry, wait, stop, minWait, 2*minWait)
		}
	}
}

// A held write's re-sends are not retries of SLUICE_RETRY_MAX: a write
// held through a throttle window that then gets a server error (which is
// not held) still has the usual retries for it, as a write that was never
// held has, with the usual backoff.
func TestHeldResendsAreNotRetries(t *testing.T) {
	const minWait = holdMinWait
	p := heldProxy(t, limiter.RetryBudgetConfig{})
	now := time.Now()
	ex := exchange{retryable: true, loader: context.Background(), cost: 1, arrived: now, holdUntil: now.Add(time.Minute)}
	answer := &http.Response{StatusCode: http.StatusTooManyRequests}
	for range 5 { // held through a throttle window
		ex.attempts++
		ex.last = classify.Result{Kind: classify.Throttled, Reason: "status_429"}
		if retry, _, stop := p.retryPolicy(context.Background(), &ex, answer, nil); !retry {
			t.Fatalf("attempt %d throttled: not held (stop %v)", ex.attempts, stop)
		}
	}
	answer = &http.Response{StatusCode: http.StatusInternalServerError}
	for i := range p.retryMax + 1 {
		ex.attempts++
		ex.last = classify.Result{Kind: classify.ServerError, Reason: "status_500"}
		retry, wait, stop := p.retryPolicy(context.Background(), &ex, answer, nil)
		switch {
		case i < p.retryMax && (!retry || wait < minWait || wait >= minWait<<(i+1)):
			t.Errorf("server error %d after the hold's re-sends: retry %v after %v (stop %v); want retry %d of %d after [%v, %v)",
				i+1, retry, wait, stop, i+1, p.retryMax, minWait, minWait<<(i+1))
		case i == p.retryMax && retry:
			t.Errorf("server error %d: sent again, want the retries spent", i+1)
		}
	}
}
