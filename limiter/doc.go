// Package limiter is sluice's adaptive controller: it decides how fast and
// how many writes at once may go to the store, from what the store answers.
//
// A Controller holds a send-rate limit (a token bucket, in units/s, where a
// unit is a request or a byte, the caller's choice) and a concurrency limit
// (slots), adapted together from per-attempt Samples:
//
//	p, err := ctl.Acquire(ctx, cost) // waits in a bounded FIFO; ctx carries the queue timeout
//	if err != nil { ... }            // ErrQueueFull, ErrClosed, ctx.Err(): push back to the loader (RetryWait)
//	resp, err := send(...)           // one attempt, with its own deadline
//	p.Done(limiter.Sample{Outcome: classify(resp, err), Latency: attemptLatency, RetryAfter: ra})
//
// and a loop that closes measurement windows and is the sidecar's
// heartbeat, independent of any store call:
//
//	t := time.NewTimer(ctl.TickInterval())
//	for {
//		select {
//		case now := <-t.C:
//			ctl.Tick(now)
//			t.Reset(ctl.TickInterval())
//		case <-stop:
//			return
//		}
//	}
//
// The control law, in short (Controller has the details): throttles cut at
// once, at most once per window per limit, to 0.9 of what the store actually
// took (scaled down for a partial rejection); the limit cut is the one the
// throttle points at: the rate for a quota, concurrency for a store that
// caps it or that stalled with our requests queued in it. Growth happens
// only where a limit was the bottleneck and nothing went wrong: in startup
// the rate doubles every few successes, then both limits follow a
// CUBIC-like curve, cautious near the last throttle point. Rising latency
// holds growth and trims concurrency, unless trimming it costs goodput in
// proportion, which shows the latency to be the store's response to its
// load: then slots follow the latency (Little's law). A Retry-After of 10s
// or more, or short ones that a cut did not help, pause all sends; a
// shorter one only delays its own write.
//
// Backoff computes retry delays (exponential, full jitter, Retry-After
// clamped) and RetryBudget bounds retries to a share of requests; the proxy
// uses both for its own retries.
package limiter
