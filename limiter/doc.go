// Package limiter is sluice's adaptive controller: it decides how fast and
// how many writes at once may go to the store, from what the store answers.
//
// It owns the Controller (a send-rate limit and a concurrency limit,
// adapted together), the bounded queue in which callers wait for both
// (weighted fair between flows, such as jobs, in two priority classes), the
// RetryBudget that bounds retries to a share of requests, and Backoff, the
// delays between retries. It leaves to others HTTP and the store's
// protocol (the sidecar sends every attempt), what an answer means
// (sidecar/classify turns a response into an Outcome), and jobs (state):
// its callers report each attempt as a Sample. It starts no goroutines and
// does no I/O but logging.
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
// A permit under which nothing was sent (another limiter the write also
// needs had no room, credentials could not be had) goes back with
// p.Unused(): its slot and its rate units, so that writes never sent do
// not spend the rate nor count as demand the limit held back.
//
// The control law, in short (Controller has the details): throttles cut at
// once, at most once per window per limit, to 0.9 of what the store actually
// took (scaled down for a partial rejection), and the rate once more within
// the window when the store goes on refusing much of what is sent after a
// cut (its capacity fell); the limit cut is the one the
// throttle points at: the rate for a quota, concurrency for a store that
// caps it or that stalled with our requests queued in it. Growth happens
// only where a limit was the bottleneck and nothing went wrong: in startup
// the rate doubles every few successes, then both limits follow a
// CUBIC-like curve, cautious near the last throttle point. Rising latency
// holds growth and trims concurrency, unless trimming it costs goodput in
// proportion, which shows the latency to be the store's response to its
// load: then slots follow the latency (Little's law), and so do those of
// the store's other limiters that share its Config.Latency. A Retry-After of 10s
// or more, or short ones that a cut did not help, pause all sends; a
// shorter one only delays its own write. A store that answers nothing at
// all (Unreachable: connection refused or reset, name not resolved) leaves
// the limits alone; until it answers again, one write at a time probes it,
// at most one per probe interval (250ms, growing to 5s).
//
// Backoff computes retry delays (exponential, full jitter, Retry-After
// clamped), for the proxy's retries, a job's hold and credential refresh
// alike; RetryBudget bounds the proxy's retries to a share of requests.
//
// The files follow these concerns. controller.go has the Controller, its
// spec and state, New, RetryWait and Close; admit.go the path of every
// write: Acquire, the wait in the queue (queue.go; fair.go has flows,
// classes and the fair queue, flowstats.go their accounting), the grant of
// a Permit and Done; pipeline.go pipelined permits. law.go has the tuning constants
// and the law's two entry points, one sample (observeLocked) and one
// window (Tick); cut.go decides and applies decreases, growth.go
// increases, latency.go reads the latency signal, window.go measures,
// probe.go and bucket.go are the curve of one limit and the token bucket,
// and outage.go paces the probes of a store that answers nothing.
// snapshot.go and log.go are what the Controller shows of itself.
// scopes.go has Scopes, a bounded set of Controllers, one per throttled
// scope of a store (a table, a bucket prefix), created at the scope's
// first throttle and dropped when it is clean again or least recently
// used.
package limiter
