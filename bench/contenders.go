package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/time/rate"

	"github.com/sluice-dev/sluice/internal/ctxtime"
	"github.com/sluice-dev/sluice/internal/storesim"
	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// env is what a contender instance gets from the harness.
type env struct {
	id      string            // client identity, sent to the store in storesim.ClientHeader
	rt      http.RoundTripper // the store, in-process
	style   storesim.Style
	profile classify.Profile
	// capacity is the store's initial capacity in units/s: the static
	// contender's hand-tuned setting.
	capacity float64
	// logger receives sluice's limit changes (limiter.Config.Logger);
	// nil discards them.
	logger *slog.Logger
}

// writeReq is one write of the greedy loader.
type writeReq struct {
	method, url string
	body        []byte
	cost        float64 // in the store's unit
}

// client is one contender instance: the write path between one loader and
// the store.
type client interface {
	// write delivers w, retrying as the contender does, until the store
	// acknowledges it (true) or the contender gives up (false).
	write(ctx context.Context, w *writeReq) bool
	// close stops the instance's background work.
	close()
}

// contender names a strategy and builds its instances.
type contender struct {
	name string
	new  func(e env) (client, error)
}

// contenders are the five strategies, in report order.
var contenders = []contender{
	{"sluice", newSluice},
	{"naive", newNaive},
	{"static", newStatic},
	{"aws-adaptive", newAWSAdaptive},
	{"vector-arc", newVectorARC},
}

// attempt is one request to the store.
type attempt struct {
	status  int
	header  http.Header
	body    []byte
	err     error
	latency time.Duration
}

func (a attempt) ok() bool { return a.err == nil && a.status/100 == 2 }

// send makes one attempt through rt, tagged with the client's id.
func send(ctx context.Context, e *env, w *writeReq) attempt {
	req, err := http.NewRequestWithContext(ctx, w.method, w.url, bytes.NewReader(w.body))
	if err != nil {
		return attempt{err: err}
	}
	req.Header.Set(storesim.ClientHeader, e.id)
	start := time.Now()
	resp, err := e.rt.RoundTrip(req)
	if err != nil {
		return attempt{err: err, latency: time.Since(start)}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return attempt{status: resp.StatusCode, header: resp.Header, body: body, err: err, latency: time.Since(start)}
}

// sleepCtx waits d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool { return ctxtime.Sleep(ctx, d) }

// tagTransport sets the client header on every request (for clients that
// build their own requests).
type tagTransport struct {
	rt http.RoundTripper
	id string
}

func (t tagTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set(storesim.ClientHeader, t.id)
	return t.rt.RoundTrip(r)
}

// ---------------------------------------------------------------------------
// sluice: the real limiter.Controller and classify.Profile, wired as the
// sidecar's proxy wires them (sidecar/proxy: acquire, attempt, classify,
// finishAttempt, retryPolicy) with the sidecar's defaults.

// Sidecar defaults (sidecar/config.go) for a requests-unit store.
const (
	sluiceInitialRate        = 50
	sluiceMinRate            = 1
	sluiceMaxRate            = 100000
	sluiceInitialConcurrency = 4
	sluiceMaxConcurrency     = 64
	sluiceWindow             = 500 * time.Millisecond
	sluiceMaxRetryAfter      = 60 * time.Second
	sluiceRetryMax           = 3
	sluiceBackoffMin         = 100 * time.Millisecond
	sluiceBackoffMax         = 10 * time.Second
)

type sluiceClient struct {
	e       env
	ctl     *limiter.Controller
	backoff limiter.Backoff
	stop    chan struct{}
	done    chan struct{}
}

func newSluice(e env) (client, error) {
	ctl, err := limiter.New(limiter.Config{
		InitialRate:        sluiceInitialRate,
		MinRate:            sluiceMinRate,
		MaxRate:            sluiceMaxRate,
		InitialConcurrency: sluiceInitialConcurrency,
		MaxConcurrency:     sluiceMaxConcurrency,
		MaxRetryAfter:      sluiceMaxRetryAfter,
		Window:             sluiceWindow,
		Logger:             e.logger,
	})
	if err != nil {
		return nil, err
	}
	c := &sluiceClient{e: e, ctl: ctl, backoff: limiter.Backoff{Min: sluiceBackoffMin, Max: sluiceBackoffMax},
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.controlLoop()
	return c, nil
}

// controlLoop is the sidecar's: Tick every jittered Window.
func (c *sluiceClient) controlLoop() {
	defer close(c.done)
	t := time.NewTimer(c.ctl.TickInterval())
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.ctl.Tick(time.Now())
			t.Reset(c.ctl.TickInterval())
		}
	}
}

// rateLimit reports the controller's current send-rate limit.
func (c *sluiceClient) rateLimit() float64 { return c.ctl.Snapshot().Rate }

func (c *sluiceClient) close() {
	close(c.stop)
	<-c.done
	c.ctl.Close()
}

func (c *sluiceClient) write(ctx context.Context, w *writeReq) bool {
	return c.writeFlow(ctx, w, limiter.Flow{})
}

// writeFlow sends w as a write of flow f (the zero Flow: the default
// job's) through the limiter, as the proxy does: it retries what the
// proxy would, and the loader sends again what the proxy gave up on.
func (c *sluiceClient) writeFlow(ctx context.Context, w *writeReq, f limiter.Flow) bool {
	retries := 0
	for {
		p, err := c.ctl.AcquireFlow(ctx, f, w.cost)
		if err != nil {
			return false
		}
		a := send(ctx, &c.e, w)
		res := c.classify(ctx, w, a)
		p.Done(sample(res, a.latency))
		switch {
		case res.Kind == classify.OK:
			return true
		case ctx.Err() != nil, !res.Kind.Retryable():
			return false
		case retries < sluiceRetryMax:
			// The proxy retries after its backoff, never sooner than the
			// store's (capped) Retry-After.
			if !sleepCtx(ctx, c.backoff.Delay(retries, min(res.RetryAfter, sluiceMaxRetryAfter), nil)) {
				return false
			}
			retries++
		default:
			// The proxy gave up and answered the loader, which still has
			// the write: it sends it again at once (through the limiter).
			retries = 0
		}
	}
}

// classify mirrors Proxy.attempt and Proxy.classifyError.
func (c *sluiceClient) classify(ctx context.Context, w *writeReq, a attempt) classify.Result {
	if a.err != nil {
		switch {
		case ctx.Err() != nil:
			return classify.Result{Kind: classify.ClientError, Reason: "cancelled", Items: -1}
		case errors.Is(a.err, context.DeadlineExceeded):
			return classify.Result{Kind: classify.Timeout, Reason: "timeout", Share: 1, Items: -1}
		default:
			return classify.Result{Kind: classify.ServerError, Reason: "transport_error", Items: -1}
		}
	}
	var prefix []byte
	if c.e.profile.WantsBody(a.status, a.header) {
		prefix = a.body[:min(len(a.body), classify.BodyPrefixMax)]
	}
	res := c.e.profile.Classify(a.status, a.header, prefix, time.Now())
	if res.Kind == classify.OK {
		if sc := c.e.profile.NewScanner(classify.Request{Method: w.method, Path: urlPath(w.url)}, a.status, a.header); sc != nil {
			_, _ = sc.Write(a.body)
			res = sc.Result()
		}
	}
	return res
}

// sample mirrors Proxy.finishAttempt.
func sample(res classify.Result, latency time.Duration) limiter.Sample {
	s := limiter.Sample{Latency: latency, RetryAfter: res.RetryAfter, Reason: res.Reason}
	switch {
	case res.Kind == classify.OK:
		s.Outcome = limiter.Success
	case res.Kind.Congestion():
		s.Outcome, s.Share = limiter.Congested, res.Share
	case res.Kind == classify.ServerError:
		s.Outcome = limiter.Failed
	default:
		s.Outcome = limiter.Neutral
	}
	return s
}

func urlPath(u string) string {
	const scheme = "http://"
	if len(u) > len(scheme) {
		u = u[len(scheme):]
	}
	for i := 0; i < len(u); i++ {
		if u[i] == '/' {
			return u[i:]
		}
	}
	return "/"
}

// ---------------------------------------------------------------------------
// naive: no limiter, go-retryablehttp with its defaults (4 retries,
// DefaultBackoff 1s·2^n capped at 30s, Retry-After honoured uncapped,
// DefaultRetryPolicy: retry on 429 and 5xx except 501).

type naiveClient struct{ c *retryablehttp.Client }

func newNaive(e env) (client, error) {
	c := retryablehttp.NewClient()
	c.HTTPClient = &http.Client{Transport: tagTransport{e.rt, e.id}}
	c.Logger = nil
	return naiveClient{c}, nil
}

func (n naiveClient) write(ctx context.Context, w *writeReq) bool {
	req, err := retryablehttp.NewRequestWithContext(ctx, w.method, w.url, w.body)
	if err != nil {
		return false
	}
	resp, err := n.c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}

func (naiveClient) close() {}

// ---------------------------------------------------------------------------
// static: x/time/rate fixed at the store's initial capacity, burst 100ms of
// it; a throttled write is sent again through the bucket.

type staticClient struct {
	e   env
	lim *rate.Limiter
}

func newStatic(e env) (client, error) {
	return &staticClient{e: e, lim: rate.NewLimiter(rate.Limit(e.capacity), max(1, int(e.capacity/10)))}, nil
}

func (s *staticClient) write(ctx context.Context, w *writeReq) bool {
	for {
		if err := s.lim.WaitN(ctx, max(1, int(math.Ceil(w.cost)))); err != nil {
			// WaitN fails at once when the wait would pass ctx's
			// deadline: the write cannot be sent before the run ends.
			<-ctx.Done()
			return false
		}
		a := send(ctx, &s.e, w)
		if a.ok() {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
	}
}

func (*staticClient) close() {}

// ---------------------------------------------------------------------------
// aws-adaptive: the AWS SDK's adaptive retry mode, driven as its Attempt
// middleware drives it (aws/retry/middleware.go handleAttempt): attempt
// token, send, release with the attempt's error, retryable and max-attempts
// checks, retry token, RetryDelay. Retry quota disabled (ratelimit.None);
// other options at the SDK's defaults (3 attempts).

type awsClient struct {
	e  env
	am *retry.AdaptiveMode
}

func newAWSAdaptive(e env) (client, error) {
	am := retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
		o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
			so.RateLimiter = ratelimit.None
		})
	})
	return &awsClient{e: e, am: am}, nil
}

func (c *awsClient) write(ctx context.Context, w *writeReq) bool {
	releaseRetry := func(error) error { return nil }
	for n := 1; ; n++ {
		release, err := c.am.GetAttemptToken(ctx)
		if err != nil {
			return false
		}
		a := send(ctx, &c.e, w)
		opErr := awsError(c.e.style, a)
		_ = releaseRetry(opErr)
		_ = release(opErr)
		if opErr == nil {
			return true
		}
		if ctx.Err() != nil || !c.am.IsErrorRetryable(opErr) || n >= c.am.MaxAttempts() {
			return false
		}
		if releaseRetry, err = c.am.GetRetryToken(ctx, opErr); err != nil {
			return false
		}
		d, err := c.am.RetryDelay(n, opErr)
		if err != nil || !sleepCtx(ctx, d) {
			return false
		}
	}
}

func (*awsClient) close() {}

// awsError turns an attempt into the error an SDK client would return: nil
// on 2xx, otherwise an API error carrying the store's error code (S3's XML
// Code, DynamoDB's __type); for stores without codes, 429 and 503 become
// "Throttling".
func awsError(style storesim.Style, a attempt) error {
	if a.err != nil {
		return a.err
	}
	if a.status/100 == 2 {
		return nil
	}
	code := ""
	switch style {
	case storesim.StyleS3:
		code = between(a.body, "<Code>", "</Code>")
	case storesim.StyleDynamoDB:
		code = between(a.body, `"__type":"`, `"`)
		if i := bytes.LastIndexByte([]byte(code), '#'); i >= 0 {
			code = code[i+1:]
		}
	}
	if code == "" {
		switch a.status {
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			code = "Throttling"
		default:
			code = "HTTP" + strconv.Itoa(a.status)
		}
	}
	fault := smithy.FaultServer
	if a.status/100 == 4 {
		fault = smithy.FaultClient
	}
	return &smithy.GenericAPIError{Code: code, Message: http.StatusText(a.status), Fault: fault}
}

func between(b []byte, open, close string) string {
	i := bytes.Index(b, []byte(open))
	if i < 0 {
		return ""
	}
	rest := b[i+len(open):]
	j := bytes.Index(rest, []byte(close))
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// ---------------------------------------------------------------------------
// vector-arc: Vector's Adaptive Request Concurrency as published, inside Vector's retry layer with its documented
// defaults: Fibonacci backoff from 1s, capped at 30s, full jitter, retries
// without limit.

const (
	arcInitial        = 1
	arcMax            = 200
	arcDecreaseRatio  = 0.9
	arcEWMAAlpha      = 0.4
	arcDeviationScale = 2.5
	arcRetryInitial   = time.Second
	arcRetryMax       = 30 * time.Second
)

type arcClient struct {
	e env

	mu           sync.Mutex
	limit        int
	inFlight     int
	waiters      []chan struct{}
	pastMean     float64 // EWMA of RTT, seconds
	pastVar      float64
	pastInit     bool
	curSum       float64 // RTTs since the last adjustment
	curN         int
	backPressure bool
	reachedLimit bool
	nextUpdate   time.Time
	rnd          *rand.Rand
}

func newVectorARC(e env) (client, error) {
	seed := uint64(len(e.id))
	for _, b := range []byte(e.id) {
		seed = seed*131 + uint64(b)
	}
	return &arcClient{e: e, limit: arcInitial, rnd: rand.New(rand.NewPCG(seed, 0x5eed))}, nil
}

func (c *arcClient) write(ctx context.Context, w *writeReq) bool {
	var fibPrev, fibCur time.Duration = 0, arcRetryInitial
	for {
		if !c.acquire(ctx) {
			return false
		}
		a := send(ctx, &c.e, w)
		bp := backPressure(a)
		c.release(a.latency, bp, a.err == nil)
		if a.ok() {
			return true
		}
		if ctx.Err() != nil || !bp && a.status != 0 && a.status < 500 {
			return false // not retryable
		}
		c.mu.Lock()
		d := time.Duration(c.rnd.Float64() * float64(fibCur))
		c.mu.Unlock()
		if !sleepCtx(ctx, d) {
			return false
		}
		fibPrev, fibCur = fibCur, min(fibPrev+fibCur, arcRetryMax)
	}
}

// backPressure: 429, any 5xx but 501, timeouts. A bulk 200 with per-item
// 429s is not back-pressure (Vector's default).
func backPressure(a attempt) bool {
	if a.err != nil {
		return errors.Is(a.err, context.DeadlineExceeded)
	}
	return a.status == http.StatusTooManyRequests || a.status >= 500 && a.status != http.StatusNotImplemented
}

func (c *arcClient) acquire(ctx context.Context) bool {
	c.mu.Lock()
	if c.inFlight < c.limit {
		c.takeLocked()
		c.mu.Unlock()
		return true
	}
	ch := make(chan struct{}, 1)
	c.waiters = append(c.waiters, ch)
	c.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, w := range c.waiters {
			if w == ch {
				c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
				return false
			}
		}
		// Granted meanwhile: give the slot back.
		c.inFlight--
		c.dispatchLocked()
		return false
	}
}

// takeLocked requires c.mu held.
func (c *arcClient) takeLocked() {
	c.inFlight++
	if c.inFlight >= c.limit {
		c.reachedLimit = true
	}
}

// dispatchLocked hands free slots to waiters in order. Requires c.mu held.
func (c *arcClient) dispatchLocked() {
	for len(c.waiters) > 0 && c.inFlight < c.limit {
		ch := c.waiters[0]
		c.waiters = c.waiters[1:]
		c.takeLocked()
		ch <- struct{}{}
	}
}

// release frees the slot and runs the controller on this response.
func (c *arcClient) release(rtt time.Duration, bp, useRTT bool) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight--
	if bp {
		c.backPressure = true
	} else if useRTT {
		c.curSum += rtt.Seconds()
		c.curN++
	}
	if !c.pastInit {
		if c.curN == 0 {
			c.dispatchLocked()
			return
		}
		c.pastMean, c.pastInit = c.curSum/float64(c.curN), true
		c.nextUpdate = now.Add(time.Duration(c.pastMean * float64(time.Second)))
	}
	if !now.Before(c.nextUpdate) {
		c.adjustLocked(now)
	}
	c.dispatchLocked()
}

// adjustLocked is the once-per-RTT AIMD step. Requires c.mu held.
func (c *arcClient) adjustLocked(now time.Time) {
	cur, haveCur := 0.0, c.curN > 0
	if haveCur {
		cur = c.curSum / float64(c.curN)
	}
	threshold := c.pastMean + arcDeviationScale*math.Sqrt(c.pastVar)
	switch {
	case c.limit < arcMax && c.reachedLimit && !c.backPressure && haveCur && cur <= c.pastMean:
		c.limit++
	case c.limit > 1 && (c.backPressure || haveCur && cur >= threshold):
		c.limit = max(1, int(float64(c.limit)*arcDecreaseRatio))
	}
	if haveCur {
		d := cur - c.pastMean
		c.pastMean += arcEWMAAlpha * d
		c.pastVar = (1 - arcEWMAAlpha) * (c.pastVar + arcEWMAAlpha*d*d)
	}
	c.nextUpdate = now.Add(time.Duration(c.pastMean * float64(time.Second)))
	c.curSum, c.curN = 0, 0
	c.backPressure = false
	c.reachedLimit = c.inFlight >= c.limit
}

func (*arcClient) close() {}
