package e2e

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// MetricName is the name of every sample a Loader writes.
const MetricName = "e2e_sample"

// Loader is a bulk loader with many writers, as a backfill or migration
// job would be: each of Writers goroutines POSTs Batches batches of
// BatchSize samples, one after the other, to VictoriaMetrics'
// /api/v1/import (JSON lines) at URL, directly or through sluice.
//
// Samples are numbered so that the store's contents can be checked exactly:
// writer w writes the series e2e_sample{job=Job, writer="w"}, and its
// sample i (batch i/BatchSize) has timestamp Start + i ms and value i. A
// batch is one JSON line of one series.
//
// A batch is retried until the store acknowledges it (2xx) or the context
// ends: after a 429, a 5xx or a transport error it waits a jittered
// exponential backoff between BackoffMin and BackoffMax, and never less
// than the answer's Retry-After (capped at MaxRetryAfter), as a well-behaved
// client does. Any other answer (a 4xx other than 429) drops the batch, as
// vmagent drops data on a 400, and the writer goes on with its next batch.
// With FinalOn429 a 429 drops the batch too, as Prometheus' remote write
// does without queue_config.retry_on_http_429.
//
// A writer sends its batches back to back, as a bulk load does, or with
// Interval set at most one every Interval, as a shipper streaming what it
// collects does: a batch held up by the store delays the writer's next
// ones, it never sends two at once.
//
// A Loader is configured once and then Run; Run may be called again. Its
// fields must not change during Run.
type Loader struct {
	URL       string // the import endpoint, http://host:port/api/v1/import
	Job       string // sent as X-Sluice-Job and as the job label
	Writers   int
	Batches   int // per writer
	BatchSize int // samples per batch
	Start     time.Time

	// Client sends the batches; nil means http.DefaultClient.
	Client *http.Client
	// Header is added to every request (tests: a job that is not the label).
	Header http.Header

	BackoffMin    time.Duration // default 100ms
	BackoffMax    time.Duration // default 5s
	MaxRetryAfter time.Duration // default 60s

	// FinalOn429 makes a 429 final: the batch is dropped, not retried.
	FinalOn429 bool
	// Interval is the least time between the starts of a writer's
	// batches; zero sends them back to back.
	Interval time.Duration
}

// Result is what a Loader saw. Counts are of samples unless named
// otherwise.
type Result struct {
	// Acked is, per writer, which batches the store acknowledged.
	Acked [][]bool
	// AckedSamples, DroppedSamples and PendingSamples add up to every
	// sample: acknowledged, dropped after a non-retryable answer, and never
	// settled because the context ended.
	AckedSamples, DroppedSamples, PendingSamples int64
	// Attempts is the number of requests sent.
	Attempts int64
	// Status counts the answers by HTTP status; 0 counts transport errors
	// (connection refused or reset, timeouts).
	Status map[int]int64
	// RetryAfterWaits counts the waits that a Retry-After made longer than
	// the backoff alone.
	RetryAfterWaits int64
	// WithRetryAfter counts, by HTTP status, the answers whose Retry-After
	// asked for a wait (a positive number of seconds, or a future date).
	WithRetryAfter map[int]int64
	// Elapsed runs from the first request to the last answer.
	Elapsed time.Duration
	// AllBusy runs from the first request until the first writer was done
	// (its batches settled, or the context ended): the span in which every
	// writer had batches left to send, so the loader offered all it could.
	// After it the pace is the remaining writers' own round trips: a batch
	// held up late (a Retry-After of seconds) leaves its writer to send its
	// last batches alone. AckedAllBusy is the samples acknowledged in it.
	AllBusy      time.Duration
	AckedAllBusy int64
	// LastError is the text of the last transport error, if any.
	LastError string
}

// BusyGoodput is acknowledged samples per second of AllBusy: what the
// store took while the loader offered all it could.
func (r *Result) BusyGoodput() float64 {
	if r.AllBusy <= 0 {
		return 0
	}
	return float64(r.AckedAllBusy) / r.AllBusy.Seconds()
}

// Goodput is acknowledged samples per second of Elapsed.
func (r *Result) Goodput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.AckedSamples) / r.Elapsed.Seconds()
}

// Share is the share of answers with status code, 0 if there were none.
func (r *Result) Share(code int) float64 {
	if r.Attempts == 0 {
		return 0
	}
	return float64(r.Status[code]) / float64(r.Attempts)
}

// Unexpected4xx counts answers with a 4xx status other than 429, which a
// loader such as vmagent treats as "drop this data".
func (r *Result) Unexpected4xx() int64 {
	var n int64
	for code, c := range r.Status {
		if code >= 400 && code < 500 && code != http.StatusTooManyRequests {
			n += c
		}
	}
	return n
}

// Samples is the number of samples the Loader writes in one Run.
func (l *Loader) Samples() int64 { return int64(l.Writers) * int64(l.Batches) * int64(l.BatchSize) }

// Series is the label set writer w writes, without __name__.
func (l *Loader) Series(w int) map[string]string {
	return map[string]string{"job": l.Job, "writer": strconv.Itoa(w)}
}

// Timestamp is the timestamp of sample i of any writer.
func (l *Loader) Timestamp(i int) time.Time {
	return l.Start.Add(time.Duration(i) * time.Millisecond)
}

func (l *Loader) validate() error {
	switch {
	case l.URL == "":
		return errors.New("e2e: loader URL is empty")
	case l.Job == "":
		return errors.New("e2e: loader Job is empty")
	case l.Writers < 1 || l.Batches < 1 || l.BatchSize < 1:
		return fmt.Errorf("e2e: loader needs Writers, Batches and BatchSize >= 1, have %d, %d, %d", l.Writers, l.Batches, l.BatchSize)
	case l.Start.IsZero():
		return errors.New("e2e: loader Start is zero")
	}
	return nil
}

// Body is the JSON line of batch b of writer w.
func (l *Loader) Body(w, b int) []byte {
	var buf bytes.Buffer
	buf.Grow(64 + l.BatchSize*24)
	fmt.Fprintf(&buf, `{"metric":{"__name__":%q,"job":%q,"writer":"%d"},"values":[`, MetricName, l.Job, w)
	first := b * l.BatchSize
	for i := first; i < first+l.BatchSize; i++ {
		if i > first {
			buf.WriteByte(',')
		}
		buf.WriteString(strconv.Itoa(i))
	}
	buf.WriteString(`],"timestamps":[`)
	start := l.Start.UnixMilli()
	for i := first; i < first+l.BatchSize; i++ {
		if i > first {
			buf.WriteByte(',')
		}
		buf.WriteString(strconv.FormatInt(start+int64(i), 10))
	}
	buf.WriteString("]}\n")
	return buf.Bytes()
}

// tally is a Result under construction, shared by the writers.
type tally struct {
	attempts, retryAfterWaits atomic.Int64
	acked, dropped            atomic.Int64

	mu             sync.Mutex
	status         map[int]int64
	withRetryAfter map[int]int64
	lastErr        string
}

func (t *tally) answer(code int, retryAfter time.Duration, err error) {
	t.attempts.Add(1)
	t.mu.Lock()
	t.status[code]++
	if retryAfter > 0 {
		t.withRetryAfter[code]++
	}
	if err != nil {
		t.lastErr = err.Error()
	}
	t.mu.Unlock()
}

// Run writes every batch and returns what happened. It returns early, with
// the unsettled batches counted as pending, when ctx ends; the error is
// then ctx's.
func (l *Loader) Run(ctx context.Context) (Result, error) {
	if err := l.validate(); err != nil {
		return Result{}, err
	}
	res := Result{Acked: make([][]bool, l.Writers)}
	for w := range res.Acked {
		res.Acked[w] = make([]bool, l.Batches)
	}
	tl := &tally{status: map[int]int64{}, withRetryAfter: map[int]int64{}}
	start := time.Now()
	ackedAt := make([][]time.Duration, l.Writers) // per writer, since start
	done := make([]time.Duration, l.Writers)
	var wg sync.WaitGroup
	for w := range l.Writers {
		wg.Go(func() {
			ackedAt[w] = l.writer(ctx, w, start, res.Acked[w], tl)
			done[w] = time.Since(start)
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.AllBusy = slices.Min(done)
	for _, at := range ackedAt {
		for _, d := range at {
			if d <= res.AllBusy {
				res.AckedAllBusy += int64(l.BatchSize)
			}
		}
	}
	res.Attempts = tl.attempts.Load()
	res.RetryAfterWaits = tl.retryAfterWaits.Load()
	res.Status = tl.status
	res.WithRetryAfter = tl.withRetryAfter
	res.LastError = tl.lastErr
	res.AckedSamples = tl.acked.Load() * int64(l.BatchSize)
	res.DroppedSamples = tl.dropped.Load() * int64(l.BatchSize)
	res.PendingSamples = l.Samples() - res.AckedSamples - res.DroppedSamples
	return res, ctx.Err()
}

// writer sends writer w's batches and returns when each acknowledged one
// was, as time since start.
func (l *Loader) writer(ctx context.Context, w int, start time.Time, acked []bool, tl *tally) (ackedAt []time.Duration) {
	var next time.Time
	for b := range l.Batches {
		if l.Interval > 0 {
			if err := l.wait(ctx, time.Until(next)); err != nil {
				return ackedAt
			}
			next = time.Now().Add(l.Interval)
		}
		switch l.send(ctx, w, b, tl) {
		case outcomeAcked:
			acked[b] = true
			tl.acked.Add(1)
			ackedAt = append(ackedAt, time.Since(start))
		case outcomeDropped:
			tl.dropped.Add(1)
		case outcomeStopped:
			return ackedAt
		}
	}
	return ackedAt
}

type outcome int

const (
	outcomeAcked outcome = iota
	outcomeDropped
	outcomeStopped
)

// send delivers batch b of writer w, retrying as the Loader's doc says.
func (l *Loader) send(ctx context.Context, w, b int, tl *tally) outcome {
	body := l.Body(w, b)
	for attempt := 0; ; attempt++ {
		code, retryAfter, err := l.post(ctx, body)
		if ctx.Err() != nil {
			return outcomeStopped
		}
		tl.answer(code, retryAfter, err)
		switch {
		case code >= 200 && code < 300:
			return outcomeAcked
		case code == http.StatusTooManyRequests && l.FinalOn429:
			// Prometheus without retry_on_http_429: the batch is lost.
			return outcomeDropped
		case code == 0, code == http.StatusTooManyRequests, code >= 500:
			// Throttled, overloaded, or unreachable: the batch is not
			// stored (VictoriaMetrics rejects before reading the body), so
			// sending it again is safe.
		default:
			return outcomeDropped
		}
		d := l.backoff(attempt)
		if retryAfter > d {
			d = retryAfter
			tl.retryAfterWaits.Add(1)
		}
		if err := l.wait(ctx, d); err != nil {
			return outcomeStopped
		}
	}
}

// post sends one attempt and reads the answer whole, so the connection is
// reused.
func (l *Loader) post(ctx context.Context, body []byte) (code int, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sluice-Job", l.Job)
	for k, vs := range l.Header {
		req.Header[k] = vs
	}
	client := l.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, l.retryAfter(resp.Header.Get("Retry-After")), nil
}

// retryAfter parses a Retry-After in seconds or as an HTTP date, capped at
// MaxRetryAfter; 0 if absent or invalid.
func (l *Loader) retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		d = time.Duration(min(secs, 1<<20)) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = time.Until(at)
	}
	return min(max(d, 0), cmp.Or(l.MaxRetryAfter, 60*time.Second))
}

// backoff is full jitter: uniform in [0, min(BackoffMax, BackoffMin·2^attempt)],
// but at least BackoffMin/2 so that a retry is never immediate.
func (l *Loader) backoff(attempt int) time.Duration {
	lo, hi := cmp.Or(l.BackoffMin, 100*time.Millisecond), cmp.Or(l.BackoffMax, 5*time.Second)
	ceil := hi
	if attempt < 32 && lo<<attempt < hi && lo<<attempt > 0 {
		ceil = lo << attempt
	}
	return max(lo/2, rand.N(ceil+1))
}

func (l *Loader) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
