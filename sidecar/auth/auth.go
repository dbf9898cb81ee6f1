// Package auth owns the upstream credentials of the sluice sidecar: it
// obtains a credential once for every loader (a bearer token from a file or
// a token endpoint, or AWS credentials for SigV4 signing), caches it, and
// refreshes it in the background ahead of expiry so that no request ever
// waits for, or causes, a credential fetch while a valid one is cached.
//
// The refresh window is the smaller of SLUICE_TOKEN_REFRESH_BEFORE and half
// of the credential's actual lifetime, reduced by up to 20% jitter. Clamping
// to the lifetime is what prevents two refresh storms: a 15-minute
// credential with a 15-minute window is refreshed after 7.5–9 minutes, not
// on every request (a window as long as the lifetime would make every
// credential due at once), and a server that hands back the same token
// until shortly before expiry makes the observed lifetime shrink, so the
// window shrinks
// with it instead of triggering a fetch per request. Fetches are
// single-flight (one background loop performs them all), at least
// SLUICE_TOKEN_MIN_INTERVAL apart, bounded by SLUICE_TOKEN_FETCH_TIMEOUT and
// backed off while they fail with sluice's one retry schedule,
// limiter.Backoff.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/limiter"
)

const (
	// lifetimeFraction is the largest part of a credential's lifetime that
	// may be spent inside the refresh window: a credential is never
	// refreshed before half of its lifetime has passed.
	lifetimeFraction = 0.5
	// jitterFraction is the largest part of the refresh window removed at
	// random, so that sidecars started together do not fetch together and a
	// refresh never happens earlier than the clamped window.
	jitterFraction = 0.2
	// noExpiryRefresh is how long a credential without an expiry (a plain
	// token file, static AWS keys, a token response without expires_in) is
	// used before it is fetched again.
	noExpiryRefresh = time.Hour
	// minBackoff is the first backoff step when SLUICE_TOKEN_MIN_INTERVAL
	// is shorter.
	minBackoff = time.Second
)

// Results of one fetch, the values of the result label of
// sluice_auth_fetches_total and of Status.LastResult.
const (
	ResultSuccess   = "success"   // a new credential was stored
	ResultUnchanged = "unchanged" // the source returned the credential already cached
	ResultError     = "error"     // the source failed or returned an unusable credential
	ResultTimeout   = "timeout"   // the fetch did not finish within SLUICE_TOKEN_FETCH_TIMEOUT
)

// Options are the dependencies of an Authenticator. The zero value is
// usable: a discarding logger, unregistered metrics, an HTTP client with
// SLUICE_TOKEN_FETCH_TIMEOUT as its timeout, the wall clock, and no buffer
// budget.
type Options struct {
	// Logger receives state changes and throttled fetch failures; it is
	// scoped with component=auth. Tokens and secrets are never logged.
	Logger *slog.Logger
	// Registerer receives the sluice_auth_* metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// HTTPClient performs token-url fetches. It should have its own
	// timeout; every fetch is also bounded by SLUICE_TOKEN_FETCH_TIMEOUT.
	// aws-sigv4 uses the AWS SDK's own client instead (it honours
	// AWS_CA_BUNDLE), with SLUICE_TOKEN_FETCH_TIMEOUT as its timeout.
	HTTPClient *http.Client
	// Now is the clock for expiry, refresh and signing times. The
	// background loop's timers are the time package's, so a replacement
	// clock must advance with them (as under testing/synctest).
	Now func() time.Time
	// BufferBudget reserves n bytes of the proxy's global buffer budget for
	// reading a body whose SHA-256 must be signed and that the proxy did not
	// buffer (req.GetBody == nil); release returns them and is called once
	// the request body is closed. nil means no such buffering: the request
	// fails with *TooLargeError.
	BufferBudget func(n int64) (release func(), ok bool)
	// AWSCredentials replaces the AWS SDK's default credential chain for
	// aws-sigv4 (for embedding and tests). The Authenticator caches it as
	// it caches the default chain; SLUICE_AWS_REGION is then required.
	AWSCredentials aws.CredentialsProvider
}

// credential is one cached credential. It is immutable once stored.
type credential struct {
	token     string          // bearer sources
	aws       aws.Credentials // aws-sigv4
	expires   time.Time       // zero: does not expire
	refreshAt time.Time       // when the background loop fetches again
}

func (c *credential) validAt(now time.Time) bool {
	return c != nil && (c.expires.IsZero() || now.Before(c.expires))
}

func (c *credential) sameSecret(o *credential) bool {
	return o != nil && c.token == o.token && c.aws.AccessKeyID == o.aws.AccessKeyID &&
		c.aws.SecretAccessKey == o.aws.SecretAccessKey && c.aws.SessionToken == o.aws.SessionToken
}

func (c *credential) secrets() []string {
	if c == nil {
		return nil
	}
	return []string{c.token, c.aws.SecretAccessKey, c.aws.SessionToken}
}

// source fetches a fresh credential. fetch is only ever called by one
// goroutine at a time (the background loop); start is the time the fetch
// began, the base for relative lifetimes such as expires_in.
type source interface {
	fetch(ctx context.Context, start time.Time) (credential, error)
	// secrets returns secret material the source holds besides the
	// credential (an OAuth client secret), to be scrubbed from errors.
	secrets() []string
}

// poller is implemented by sources that can tell cheaply that a fetch would
// return something new (bearer-file: the file changed).
type poller interface {
	changed() bool
}

// Authenticator injects upstream credentials into outgoing requests. It is
// safe for concurrent use: Apply, Ready and Status may be called from any
// number of goroutines while the background loop started by Start refreshes
// the credential. Apply never waits for a fetch while a valid credential is
// cached. A nil *Authenticator (source none) is valid and does nothing:
// Apply returns nil, Ready reports true.
type Authenticator struct {
	mu sync.Mutex
	// The fields below are guarded by mu.
	started     bool
	inflight    chan struct{} // non-nil while a fetch is under way; closed when it ends
	next        time.Time     // when the loop fetches next
	lastAttempt time.Time     // start of the last fetch
	lastRefresh time.Time     // end of the last fetch that stored or confirmed a credential
	lastResult  string
	lastErr     string // scrubbed
	failures    int    // consecutive failed fetches
	fetches     uint64

	cur         atomic.Pointer[credential]
	prev        atomic.Pointer[credential] // the credential cur replaced, to recognise our own headers on retries
	unavailable atomic.Bool                // the "no valid credential" state has been logged

	cfg     Config
	name    string // the source name, for errors, logs and status
	src     source
	poll    poller // nil unless the source supports polling
	now     func() time.Time
	rand    func() float64 // in [0, 1); replaced by tests
	log     *slog.Logger
	failLog rate.Sometimes
	m       *metrics
	done    chan struct{}

	// aws-sigv4 only.
	signer          *v4.Signer
	service, region string
	unsignedPayload bool
	budget          func(n int64) (release func(), ok bool)
}

// New builds the Authenticator for c. It returns nil and no error when the
// source is none, so that a disabled feature costs the proxy nothing. It
// validates c, registers the metrics and, for aws-sigv4, resolves the AWS
// SDK's default configuration (files and environment only; no credential is
// fetched until Start).
func New(c Config, opts Options) (*Authenticator, error) {
	if c.source() == SourceNone {
		if errs := c.Validate(); len(errs) > 0 {
			return nil, fmt.Errorf("auth: invalid configuration: %w", errors.Join(errs...))
		}
		return nil, nil
	}
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("auth: invalid configuration: %w", errors.Join(errs...))
	}
	a := &Authenticator{
		cfg:     c,
		name:    c.source(),
		now:     opts.Now,
		rand:    rand.Float64,
		log:     opts.Logger,
		failLog: rate.Sometimes{First: 1, Interval: time.Minute},
		budget:  opts.BufferBudget,
		done:    make(chan struct{}),
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("component", "auth", "source", a.name)
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: c.FetchTimeout}
	}

	switch a.name {
	case SourceBearerFile:
		fs := &fileSource{path: c.TokenFile}
		a.src, a.poll = fs, fs
	case SourceTokenURL:
		src, err := newURLSource(c, client)
		if err != nil {
			return nil, err
		}
		a.src = src
	case SourceAWSSigV4:
		src, region, err := newAWSSource(c, opts.AWSCredentials)
		if err != nil {
			return nil, err
		}
		a.src = src
		a.signer = v4.NewSigner()
		a.service, a.region = c.AWSService, region
		a.unsignedPayload = unsignedPayloadServices[c.AWSService]
	default:
		panic("BUG: auth: Validate accepted source " + a.name)
	}

	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	a.m = m
	return a, nil
}

// closedDone is what Done returns for a nil Authenticator.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Start begins the background refresh loop: the first fetch starts at
// once, and later ones follow the schedule described in the package
// documentation. The loop stops when ctx ends, cancelling a fetch under way;
// Done is closed then. Calling Start again does nothing.
func (a *Authenticator) Start(ctx context.Context) {
	if a == nil {
		return
	}
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return
	}
	a.started = true
	// The first fetch is in flight from now on, so that requests arriving
	// before the loop runs wait for it rather than fail.
	a.inflight = make(chan struct{})
	a.mu.Unlock()
	go a.run(ctx)
}

// Done returns a channel closed when the loop started by Start has stopped.
// For a nil Authenticator it is already closed.
func (a *Authenticator) Done() <-chan struct{} {
	if a == nil {
		return closedDone
	}
	return a.done
}

func (a *Authenticator) run(ctx context.Context) {
	defer close(a.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		// The first step always fetches, which also releases the requests
		// waiting on the inflight channel Start created.
		wake := a.step(ctx)
		if ctx.Err() != nil {
			return
		}
		t.Reset(max(wake.Sub(a.now()), 0))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// step performs one round of the refresh loop: it fetches if a fetch is
// due (blocking for at most FetchTimeout) and returns when the loop should
// look again.
func (a *Authenticator) step(ctx context.Context) (wake time.Time) {
	now := a.now()
	a.mu.Lock()
	next := a.next
	earliest := a.lastAttempt.Add(a.cfg.MinInterval)
	a.mu.Unlock()

	if now.Before(next) && a.poll != nil && !now.Before(earliest) && a.poll.changed() {
		next = now // the token file was replaced: read it without waiting for the schedule
	}
	if !now.Before(next) {
		a.fetch(ctx)
		now = a.now()
		a.mu.Lock()
		next = a.next
		a.mu.Unlock()
	}
	a.noteUnavailable(now)
	if a.poll != nil {
		if p := now.Add(a.cfg.TokenFilePoll); p.Before(next) {
			next = p
		}
	}
	return next
}

// fetch runs one fetch from the source and records its outcome.
func (a *Authenticator) fetch(ctx context.Context) {
	start := a.now()
	a.mu.Lock()
	if a.inflight == nil {
		a.inflight = make(chan struct{})
	}
	ch := a.inflight
	a.lastAttempt = start
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.inflight == ch {
			a.inflight = nil
		}
		a.mu.Unlock()
		close(ch)
	}()

	fctx, cancel := context.WithTimeout(ctx, a.cfg.FetchTimeout)
	c, err := a.src.fetch(fctx, start)
	timedOut := fctx.Err() == context.DeadlineExceeded
	cancel()
	if ctx.Err() != nil {
		return // shutting down: not a result of the source
	}
	end := a.now()
	if err == nil && !c.expires.IsZero() && !end.Before(c.expires) {
		err = fmt.Errorf("credential from %s expired at %s, before it could be used", a.name, c.expires.UTC().Format(time.RFC3339))
	}

	old := a.cur.Load()
	result := ResultSuccess
	switch {
	case err != nil && (timedOut || isTimeout(err)):
		result = ResultTimeout
	case err != nil:
		result = ResultError
	case c.sameSecret(old):
		result = ResultUnchanged
	}
	a.m.fetches.WithLabelValues(result).Inc()
	a.m.duration.Observe(end.Sub(start).Seconds())

	a.mu.Lock()
	a.fetches++
	a.lastResult = result
	var msg string
	if err != nil {
		a.failures++
		msg = a.scrub(err.Error())
		a.lastErr = msg
		backoff := a.backoff(a.failures)
		a.next = maxTime(end.Add(backoff), start.Add(a.cfg.MinInterval))
	} else {
		a.failures = 0
		a.lastErr = ""
		a.lastRefresh = end
		c.refreshAt = a.refreshAt(c.expires, end)
		a.next = maxTime(c.refreshAt, start.Add(a.cfg.MinInterval))
		if result == ResultSuccess && old != nil {
			a.prev.Store(old)
		}
		a.cur.Store(&c)
	}
	failures, next := a.failures, a.next
	a.mu.Unlock()

	if err != nil {
		valid := old.validAt(end)
		a.failLog.Do(func() {
			args := []any{"result", result, "err", msg, "failures", failures, "next_attempt", next, "credential_valid", valid}
			if valid && !old.expires.IsZero() {
				args = append(args, "valid_until", old.expires)
			}
			a.log.Warn("credential refresh failed", args...)
		})
		return
	}
	if c.expires.IsZero() {
		a.m.expiry.Set(math.Inf(1))
	} else {
		a.m.expiry.Set(float64(c.expires.UnixNano()) / 1e9)
	}
	if a.unavailable.CompareAndSwap(true, false) {
		a.log.Info("credential available again", "expiry", c.expires, "next_refresh", next)
	} else {
		a.log.Debug("credential refreshed", "result", result, "expiry", c.expires, "next_refresh", next)
	}
}

// refreshAt returns when a credential obtained at now that expires at
// expires should be refreshed: see the package documentation.
func (a *Authenticator) refreshAt(expires, now time.Time) time.Time {
	if expires.IsZero() {
		return now.Add(noExpiryRefresh)
	}
	lifetime := expires.Sub(now)
	window := min(a.cfg.RefreshBefore, time.Duration(float64(lifetime)*lifetimeFraction))
	window -= time.Duration(float64(window) * jitterFraction * a.rand())
	return expires.Add(-window)
}

// backoff returns the delay after the n-th consecutive failure (n >= 1):
// limiter.Backoff from max(MinInterval, 1s) to BackoffMax. The floor is
// also capped at BackoffMax, which Validate keeps >= MinInterval: a
// BackoffMax below 1s is still a cap, and no delay falls below MinInterval.
func (a *Authenticator) backoff(n int) time.Duration {
	b := limiter.Backoff{Min: min(max(a.cfg.MinInterval, minBackoff), a.cfg.BackoffMax), Max: a.cfg.BackoffMax}
	return b.Delay(n-1, 0, a.rand)
}

// noteUnavailable logs once when the cached credential has expired (or
// none was ever obtained after a fetch) and no replacement exists.
func (a *Authenticator) noteUnavailable(now time.Time) {
	c := a.cur.Load()
	if c.validAt(now) {
		return
	}
	a.mu.Lock()
	attempted := !a.lastAttempt.IsZero()
	lastErr, next := a.lastErr, a.next
	a.mu.Unlock()
	if attempted && a.unavailable.CompareAndSwap(false, true) {
		args := []any{"last_error", lastErr, "next_attempt", next}
		if c != nil {
			args = append(args, "expired_at", c.expires)
		}
		a.log.Error("no valid upstream credential; requests fail until a refresh succeeds", args...)
	}
}

// scrub removes every secret the Authenticator knows of from s.
func (a *Authenticator) scrub(s string) string {
	secrets := append(a.cur.Load().secrets(), a.prev.Load().secrets()...)
	secrets = append(secrets, a.src.secrets()...)
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, redact.Placeholder)
		}
	}
	return s
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// credentialFor returns a valid credential at once if one is cached. If
// none was ever obtained and the first fetch is under way, it waits for that
// fetch (or ctx). Otherwise it returns *UnavailableError.
func (a *Authenticator) credentialFor(ctx context.Context) (*credential, error) {
	c := a.cur.Load()
	if now := a.now(); c.validAt(now) {
		return c, nil
	}
	if c == nil {
		a.mu.Lock()
		ch := a.inflight
		a.mu.Unlock()
		if ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
			}
			c = a.cur.Load()
		}
	}
	now := a.now()
	if c.validAt(now) {
		return c, nil
	}
	a.noteUnavailable(now)
	return nil, a.unavailableError(c, now)
}

func (a *Authenticator) unavailableError(c *credential, now time.Time) *UnavailableError {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := &UnavailableError{Source: a.name, LastResult: a.lastResult, LastError: a.lastErr}
	if c != nil {
		e.ExpiredAt = c.expires
	}
	if a.inflight == nil && a.next.After(now) {
		e.RetryAfter = a.next.Sub(now)
	}
	return e
}

// Apply authenticates one outgoing upstream request; the proxy calls it
// for every attempt, retries included. With SLUICE_AUTH_OVERRIDE=false a
// request that carries the loader's own Authorization header (or, for
// aws-sigv4, a presigned X-Amz-Signature query) is left unchanged; headers
// Apply itself set on an earlier attempt are always replaced.
//
// bearer sources set "Authorization: Bearer <token>". aws-sigv4 signs the
// request with the SDK's SigV4 signer, at Now, for the configured service
// and region; the request's Host must already be the upstream's. The
// payload hash is that of the empty string for a request without a body;
// UNSIGNED-PAYLOAD for a body sent to s3; otherwise the body's SHA-256, read
// from req.GetBody when set, else by buffering the body within
// Options.BufferBudget, else the request fails with *TooLargeError.
//
// Apply never waits for a fetch while a valid credential is cached; it
// returns *UnavailableError when the credential has expired and no fetch
// has replaced it.
func (a *Authenticator) Apply(req *http.Request) error {
	if !a.Replaces(req) {
		return nil
	}
	c, err := a.credentialFor(req.Context())
	if err != nil {
		return err
	}
	if a.signer != nil {
		return a.sign(req, c)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	return nil
}

// Replaces reports whether Apply puts this Authenticator's credentials on
// req, replacing whatever the loader put there: false for a nil
// Authenticator, and for a request the loader authenticated itself unless
// SLUICE_AUTH_OVERRIDE is set. A proxy may change what the loader signed
// only when it does.
func (a *Authenticator) Replaces(req *http.Request) bool {
	return a != nil && (a.cfg.Override || !a.loaderAuthenticated(req))
}

// loaderAuthenticated reports whether req carries credentials that the
// loader, not this Authenticator, put there.
func (a *Authenticator) loaderAuthenticated(req *http.Request) bool {
	v := req.Header.Get("Authorization")
	if v == "" {
		return a.signer != nil && req.URL.Query().Get("X-Amz-Signature") != ""
	}
	for _, c := range []*credential{a.cur.Load(), a.prev.Load()} {
		if c == nil {
			continue
		}
		if a.signer != nil {
			if c.aws.AccessKeyID != "" && strings.HasPrefix(v, "AWS4-HMAC-SHA256 Credential="+c.aws.AccessKeyID+"/") {
				return false
			}
		} else if v == "Bearer "+c.token {
			return false
		}
	}
	return true
}

// Ready reports whether a valid credential is cached. It is false before
// the first successful fetch and after the credential expired without
// replacement (readiness → NotReady).
func (a *Authenticator) Ready() bool {
	if a == nil {
		return true
	}
	return a.cur.Load().validAt(a.now())
}

// Status is the Authenticator's state for /v1/status. It never contains a
// token, a key or a secret.
type Status struct {
	// Source is the credential source (none, bearer-file, token-url, aws-sigv4).
	Source string `json:"source"`
	// Ready reports whether a valid credential is cached.
	Ready bool `json:"ready"`
	// Expiry is when the cached credential expires; zero (omitted) when
	// there is none or it does not expire.
	Expiry time.Time `json:"expiry,omitzero"`
	// NextRefresh is when the background loop fetches next.
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	// LastRefresh is the end of the last fetch that succeeded.
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	// LastAttempt is the start of the last fetch.
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// LastResult is the last fetch's result: success, unchanged, error or timeout.
	LastResult string `json:"last_result,omitempty"`
	// LastError is the last failed fetch's error, with secrets removed;
	// empty after a success.
	LastError string `json:"last_error,omitempty"`
	// ConsecutiveFailures counts failed fetches since the last success.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// Fetches counts all fetches since New.
	Fetches uint64 `json:"fetches"`
}

// Status returns a snapshot of the Authenticator's state.
func (a *Authenticator) Status() Status {
	if a == nil {
		return Status{Source: SourceNone, Ready: true}
	}
	c := a.cur.Load()
	s := Status{Source: a.name, Ready: c.validAt(a.now())}
	if c != nil {
		s.Expiry = c.expires
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s.NextRefresh = a.next
	s.LastRefresh = a.lastRefresh
	s.LastAttempt = a.lastAttempt
	s.LastResult = a.lastResult
	s.LastError = a.lastErr
	s.ConsecutiveFailures = a.failures
	s.Fetches = a.fetches
	return s
}

// UnavailableError is returned by Apply when no valid credential exists:
// it expired and no fetch replaced it, or none was ever obtained. The proxy
// answers 503 with a JSON body naming the source. It contains no secret.
type UnavailableError struct {
	Source     string        // the credential source, e.g. token-url
	ExpiredAt  time.Time     // when the last credential expired; zero if none was ever obtained
	LastResult string        // the last fetch's result
	LastError  string        // the last fetch's error, secrets removed
	RetryAfter time.Duration // until the next fetch attempt; 0 if unknown or under way
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "auth: no valid upstream credential from %s", e.Source)
	if e.ExpiredAt.IsZero() {
		b.WriteString(" (none obtained yet)")
	} else {
		fmt.Fprintf(&b, " (expired at %s)", e.ExpiredAt.UTC().Format(time.RFC3339))
	}
	if e.LastResult != "" {
		fmt.Fprintf(&b, "; last refresh: %s", e.LastResult)
	}
	if e.LastError != "" {
		fmt.Fprintf(&b, ": %s", e.LastError)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; next attempt in %s", e.RetryAfter.Round(time.Second))
	}
	return b.String()
}

// StatusCode is the HTTP status the proxy answers with: 503.
func (e *UnavailableError) StatusCode() int { return http.StatusServiceUnavailable }

// TooLargeError is returned by Apply when aws-sigv4 must sign the SHA-256
// of a body that the proxy did not buffer and that does not fit the buffer
// budget (or whose length is unknown). The proxy answers 413 JSON.
type TooLargeError struct {
	Service string // the SigV4 service, e.g. es
	Size    int64  // the body's length in bytes; -1 if unknown
	Reason  string // why the body could not be hashed
}

func (e *TooLargeError) Error() string {
	size := "of unknown length"
	if e.Size >= 0 {
		size = fmt.Sprintf("of %d bytes", e.Size)
	}
	return fmt.Sprintf("auth: aws-sigv4 for service %q must sign the SHA-256 of the request body %s, but %s; send smaller requests or raise the buffer budget", e.Service, size, e.Reason)
}

// StatusCode is the HTTP status the proxy answers with: 413.
func (e *TooLargeError) StatusCode() int { return http.StatusRequestEntityTooLarge }
