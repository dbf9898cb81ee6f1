package proxy

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// retryPolicy, case by case: what is sent again, after how long, and what
// the exchange ends with otherwise.
func TestRetryPolicy(t *testing.T) {
	const minWait, maxRetryAfter = 100 * time.Millisecond, 5 * time.Second
	newProxy := func(t *testing.T, budget limiter.RetryBudgetConfig) *Proxy {
		t.Helper()
		p := &Proxy{
			retryMax: 2,
			m:        newMetrics(prometheus.NewRegistry()),
			backoff:  limiter.Backoff{Min: minWait, Max: time.Second},
			honour:   limiter.Backoff{Min: minWait, Max: maxRetryAfter},
		}
		var err error
		if p.retryBudget, err = limiter.NewRetryBudget(budget); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gone, leave := context.WithCancel(context.Background())
	leave()
	transport := errors.New("connection reset")
	answer := &http.Response{StatusCode: http.StatusServiceUnavailable}
	type want struct {
		retry            bool
		waitMin, waitMax time.Duration // [waitMin, waitMax)
		stop             error
	}
	f := func(name string, ctx context.Context, ex exchange, resp *http.Response, err error, w want) {
		t.Helper()
		if ex.loader == nil {
			ex.loader = context.Background()
		}
		retry, wait, stop := newProxy(t, limiter.RetryBudgetConfig{}).retryPolicy(ctx, &ex, resp, err)
		if retry != w.retry || !errors.Is(stop, w.stop) || (w.stop == nil && stop != nil) {
			t.Errorf("%s: retry %v, stop %v; want %v, %v", name, retry, stop, w.retry, w.stop)
		}
		if retry && (wait < w.waitMin || wait >= w.waitMax) || !retry && wait != 0 {
			t.Errorf("%s: wait %v, want [%v, %v)", name, wait, w.waitMin, w.waitMax)
		}
	}
	bg := context.Background()
	retryable := func(attempts int, last classify.Result) exchange {
		return exchange{retryable: true, attempts: attempts, last: last}
	}
	throttled := classify.Result{Kind: classify.Throttled, Reason: "status_429"}
	server := classify.Result{Kind: classify.ServerError, Reason: "status_500"}

	f("job cancelled as the store answered", gone, exchange{retryable: true, attempts: 1, last: server}, answer, nil, want{})
	f("loader left", gone, exchange{retryable: true, attempts: 1, last: server, loader: gone}, answer, nil, want{stop: context.Canceled})
	full := &pushbackError{reason: reasonQueueFull}
	f("refused by sluice", bg, retryable(1, classify.Result{}), nil, full, want{stop: full})
	f("no credentials", bg, retryable(1, classify.Result{Kind: classify.ClientError, Reason: reasonAuth}), nil, transport, want{stop: transport})
	f("body streamed once", bg, exchange{attempts: 1, last: server}, answer, nil, want{})
	f("retries spent", bg, retryable(3, server), answer, nil, want{})
	f("stored", bg, retryable(1, classify.Result{Kind: classify.OK}), answer, nil, want{})
	f("the loader's fault", bg, retryable(1, classify.Result{Kind: classify.ClientError}), answer, nil, want{})
	f("timed out", bg, retryable(1, classify.Result{Kind: classify.Timeout, Reason: reasonTimeout}), nil, context.DeadlineExceeded,
		want{stop: context.DeadlineExceeded})
	f("server error, first retry", bg, retryable(1, server), answer, nil, want{retry: true, waitMin: minWait, waitMax: 2 * minWait})
	f("server error, second retry", bg, retryable(2, server), answer, nil, want{retry: true, waitMin: minWait, waitMax: 4 * minWait})
	f("transport error", bg, retryable(1, classify.Result{Kind: classify.ServerError, Reason: reasonTransportError}), nil, transport,
		want{retry: true, waitMin: minWait, waitMax: 2 * minWait})
	ra := throttled
	ra.RetryAfter = 2 * time.Second
	f("Retry-After", bg, retryable(1, ra), answer, nil, want{retry: true, waitMin: 2 * time.Second, waitMax: 2*time.Second + 200*time.Millisecond + 1})
	ra.RetryAfter = time.Hour
	f("Retry-After capped", bg, retryable(1, ra), answer, nil, want{retry: true, waitMin: maxRetryAfter, waitMax: maxRetryAfter + 1})

	// The retry budget: a second retry within its window is one too many.
	p := newProxy(t, limiter.RetryBudgetConfig{Ratio: 0.01, MinRetries: 1})
	for i, wantRetry := range []bool{true, false} {
		ex := retryable(1, throttled)
		ex.loader = bg
		if retry, _, stop := p.retryPolicy(bg, &ex, answer, nil); retry != wantRetry || stop != nil {
			t.Errorf("budget, retry %d: retry %v, stop %v; want %v, nil", i+1, retry, stop, wantRetry)
		}
	}
}

// The policy's look at an answered write, nearly every write, allocates
// nothing: the error types it tests for are looked for only in an error.
func TestRetryPolicyAnsweredWriteAllocatesNothing(t *testing.T) {
	p := &Proxy{}
	ex := &exchange{loader: context.Background(), last: classify.Result{Kind: classify.OK}}
	resp := &http.Response{StatusCode: http.StatusOK}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		if retry, _, stop := p.retryPolicy(ctx, ex, resp, nil); retry || stop != nil {
			t.Fatalf("an answered write: retry %v, stop %v", retry, stop)
		}
	})
	if allocs != 0 {
		t.Errorf("retryPolicy allocates %v times for an answered write, want none", allocs)
	}
}
