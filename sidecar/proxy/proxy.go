package proxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/sidecar/auth"
	"github.com/sluice-dev/sluice/sidecar/classify"
	"github.com/sluice-dev/sluice/sidecar/pipeline"
	"github.com/sluice-dev/sluice/state"
)

// HeaderJob names the job a write belongs to. Like every X-Sluice-* header
// it is sluice's own and never forwarded upstream.
const HeaderJob = "X-Sluice-Job"

// HeaderAttempts tells the loader how many upstream attempts its write took.
const HeaderAttempts = "X-Sluice-Attempts"

// Jobs is what the proxy needs of the job tracker (state.Manager): admission
// of a write for a job, and the outcome of every attempt.
type Jobs interface {
	// Admit is called before a write for job is forwarded. The context it
	// returns is cancelled when the job is cancelled; release is called when
	// the write ends. Its errors become the loader's answer
	// (apierror.WriteJob), but for limiter.ErrClosed: a held job's write
	// refused because sluice is shutting down, answered as a write refused
	// a send slot then (sluice's pushback, shutting_down). A held job's
	// write waits at most maxWait.
	Admit(ctx context.Context, job string, maxWait time.Duration) (context.Context, func(), error)
	// Observe reports one upstream attempt's outcome.
	Observe(job string, o Observation)
}

// Observation is one upstream attempt as the job tracker sees it.
type Observation struct {
	Kind       classify.Kind
	Bytes      int64 // acknowledged bytes (Kind OK only)
	Items      int64 // acknowledged items, -1 when the profile cannot count them
	RetryAfter time.Duration
	// Abandoned: the loader gave up on the write before the store
	// answered it (Kind is then not read).
	Abandoned bool
}

// Sluice's own reasons, where no answer of the store's decided the outcome
// (the store's reasons are classify's). Each is a stable snake_case word:
// they label sluice_proxy_backpressure_total and
// sluice_upstream_congestion_signals_total, become the limiter's
// LastReason, and reach the loader in its error's details.
const (
	// sluice's own pushback (a *pushbackError): the loader gets
	// SLUICE_PUSHBACK_STATUS (429 or 503) with a Retry-After. The first
	// three refuse a write before any attempt.
	reasonQueueFull    = "queue_full"    // the limiter's queue holds its maximum already
	reasonQueueTimeout = "queue_timeout" // no send slot within SLUICE_QUEUE_TIMEOUT
	reasonNoCapacity   = "no_capacity"   // no send slot free now, and writes are rejected rather than queued
	reasonClosed       = "closed"        // sluice is shutting down
	reasonUnreachable  = "unreachable"   // the store answers nothing: the write's attempt found it so, or it waited in vain for the limiter's probe
	reasonHoldExpired  = "hold_expired"  // held for SLUICE_HOLD_MAX, and the store has not taken it
	reasonBufferBudget = "buffer_budget" // the body must be in memory to be signed (SigV4), would fit SLUICE_BUFFER_BUDGET, and the budget has no room for it now

	// An attempt that got no answer to classify (classifyError).
	reasonCancelled         = "cancelled"          // the loader left or its job was cancelled: nothing learned of the store
	reasonTimeout           = "timeout"            // no answer within SLUICE_UPSTREAM_TIMEOUT: a congestion signal
	reasonConnectionRefused = "connection_refused" // unreachable: nothing listens at the store's address
	reasonConnectionReset   = "connection_reset"   // unreachable: the connection broke before the store answered anything
	reasonDNS               = "dns"                // unreachable: the store's name did not resolve
	reasonSwitchedProtocols = "switched_protocols" // the store answered 101 to a write that asked for no upgrade
	reasonTransportError    = "transport_error"    // an answer that broke off, or a response that could not be read
	reasonPipelineBroken    = "pipeline_broken"    // pipelined behind a write whose connection broke: not answered, sent again
	reasonRequestBody       = "request_body"       // the loader's streamed body broke, or stalled past its deadline, while it was sent: nothing learned of the store

	// A permit given back without an attempt reaching the store.
	reasonAuth    = "auth"     // sluice could not put its credentials on the attempt
	reasonNotSent = "not_sent" // the permit taken at admission, which no attempt used
)

// shutdownRetryAfter is the Retry-After of a write refused because sluice
// is shutting down: a restarted sidecar takes writes again within
// seconds.
const shutdownRetryAfter = time.Second

// pushbackReasons are the reasons of a *pushbackError, known from the
// start as metric labels.
var pushbackReasons = [...]string{reasonQueueFull, reasonQueueTimeout, reasonNoCapacity, reasonClosed, reasonUnreachable, reasonHoldExpired, reasonBufferBudget}

// Proxy forwards a loader's writes to the store: each attempt passes the
// adaptive limiter, has a deadline, is classified from the store's answer,
// and is retried when its body allows it (send, retryPolicy). It is an
// http.Handler, safe for concurrent use.
type Proxy struct {
	upstream     *url.URL
	preserveHost bool
	profile      classify.Profile
	bytesCost    bool
	reject       bool
	timeout      time.Duration
	answerMax    time.Duration // SLUICE_ANSWER_TIMEOUT (unset: timeout)
	queueTimeout time.Duration
	retryMax     int
	retryPost    bool
	retryBodyMax int64
	defaultJob   string
	hold         time.Duration   // SLUICE_HOLD_MAX; 0: off
	pushStatus   int             // SLUICE_PUSHBACK_STATUS
	writeErr     apierror.Writer // sluice's own error answers, its pushback in the store's words (pushback.go)

	lim         *limiter.Controller
	scopes      *limiter.Scopes     // per-scope limiters; nil: scopes off (see scopes.go)
	scopeRules  classify.ScopeRules // how writes map to scopes
	retryBudget *limiter.RetryBudget
	backoff     limiter.Backoff // retries without a Retry-After
	honour      limiter.Backoff // retries after a Retry-After, capped by SLUICE_MAX_RETRY_AFTER
	budget      *Budget
	bodies      *bodyBuffers // memory for buffered bodies
	jobs        Jobs
	auth        *auth.Authenticator
	m           *metrics
	idle        *idleCap
	log         *slog.Logger
	warn        rate.Sometimes // congestion
	warnDown    rate.Sometimes // an unreachable store
	shownURL    string         // the upstream for logs, as /v1/status shows it: password and query values redacted

	transport http.RoundTripper  // the real *http.Transport; tests put an in-memory store here
	pipe      *pipeline.Pipeline // SLUICE_PIPELINE; nil when off
	rp        *httputil.ReverseProxy

	avgBodySize atomic.Int64 // bytes; the cost of a body of unknown length
}

// Config is what the proxy does, as the operator set it (the sidecar
// fills it from SLUICE_* variables).
type Config struct {
	Upstream     *url.URL
	PreserveHost bool             // forward the loader's Host header
	Profile      classify.Profile // how the store signals throttling
	BytesCost    bool             // a write costs its body size in the rate limit, not 1
	Reject       bool             // answer 429 at once when no slot is free, instead of queueing
	Timeout      time.Duration    // bounds each attempt, each part of its answer, and the reading of a loader's body
	// AnswerTimeout bounds the whole of an answer handed to the loader,
	// each part of which has Timeout; 0: Timeout does.
	AnswerTimeout time.Duration
	QueueTimeout  time.Duration // how long a write waits for a send slot
	DefaultJob    string        // the job of a write without X-Sluice-Job

	RetryMax        int           // attempts after the first, for a write that may be retried
	RetryPost       bool          // POST and PATCH may be retried (the store deduplicates)
	RetryBodyMax    int64         // a larger body streams, sent once
	RetryBackoffMin time.Duration // backoff between attempts without a Retry-After
	RetryBackoffMax time.Duration
	MaxRetryAfter   time.Duration // caps the store's Retry-After before a retry
	RetryBudget     float64       // retries as a share of writes (limiter.RetryBudget)

	// HoldMax turns on hold mode (see retryPolicy): a write sluice may
	// retry is kept and sent again until the store takes it or HoldMax
	// after it arrived. 0 is off.
	HoldMax time.Duration
	// PushbackStatus is the status of sluice's own pushback (queue full
	// or timed out, no capacity, store unreachable, hold expired):
	// 429 or 503, always with a Retry-After. 0 means 429.
	PushbackStatus int

	// ScopeRules map writes to scopes (see classify.Profile.Scopes); they
	// matter only with Deps.Scopes.
	ScopeRules classify.ScopeRules

	Pipeline       bool   // pipeline writes that may be retried on HTTP/1.1 connections
	CAFile         string // PEM roots for the store's certificate, besides the system's
	MaxConcurrency int    // the limiter's ceiling, which sizes the idle connection pool
	MaxIdleConns   int    // loader connections kept alive while idle, at most
}

// Deps are the parts of a Proxy built elsewhere.
type Deps struct {
	Limiter *limiter.Controller
	// Scopes, if set, are the per-scope limiters each write passes before
	// Limiter (see scopes.go); nil: one limiter for the whole store.
	Scopes     *limiter.Scopes
	Budget     *Budget
	Jobs       Jobs
	Auth       *auth.Authenticator // nil: the loader's credentials go through
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Transport, if set, carries the attempts instead of the proxy's own
	// *http.Transport (an in-process store, for simulations and tests);
	// pipelining is then off, since it needs sockets.
	Transport http.RoundTripper
}

// New returns a Proxy for cfg. Its errors name the setting at fault.
func New(cfg Config, d Deps) (*Proxy, error) {
	switch cfg.PushbackStatus {
	case 0:
		cfg.PushbackStatus = http.StatusTooManyRequests
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
	default:
		return nil, fmt.Errorf("proxy: Config.PushbackStatus=%d must be 429 or 503", cfg.PushbackStatus)
	}
	if cfg.HoldMax < 0 {
		return nil, fmt.Errorf("proxy: Config.HoldMax=%v must be 0 (off) or positive", cfg.HoldMax)
	}
	tr, err := newTransport(cfg)
	if err != nil {
		return nil, err
	}
	m := newMetrics(d.Registerer)
	if d.Scopes != nil {
		d.Registerer.MustRegister(newScopeCollector(d.Scopes))
	}
	p := &Proxy{
		upstream:     cfg.Upstream,
		preserveHost: cfg.PreserveHost,
		profile:      cfg.Profile,
		bytesCost:    cfg.BytesCost,
		reject:       cfg.Reject,
		timeout:      cfg.Timeout,
		answerMax:    cmp.Or(cfg.AnswerTimeout, cfg.Timeout),
		queueTimeout: cfg.QueueTimeout,
		retryMax:     cfg.RetryMax,
		retryPost:    cfg.RetryPost,
		retryBodyMax: cfg.RetryBodyMax,
		defaultJob:   cfg.DefaultJob,
		hold:         cfg.HoldMax,
		pushStatus:   cfg.PushbackStatus,
		writeErr:     errorWriter(cfg.Profile),
		lim:          d.Limiter,
		scopes:       d.Scopes,
		scopeRules:   cfg.ScopeRules,
		backoff:      limiter.Backoff{Min: cfg.RetryBackoffMin, Max: cfg.RetryBackoffMax},
		honour:       limiter.Backoff{Min: cfg.RetryBackoffMin, Max: max(cfg.RetryBackoffMin, cfg.MaxRetryAfter)},
		budget:       d.Budget,
		jobs:         d.Jobs,
		auth:         d.Auth,
		m:            m,
		idle:         newIdleCap(cfg.MaxIdleConns, m.notKeptAlive),
		log:          d.Logger.With("component", "proxy"),
		warn:         rate.Sometimes{Interval: 10 * time.Second},
		warnDown:     rate.Sometimes{Interval: 10 * time.Second},
		shownURL:     redact.URL(cfg.Upstream.String()),
		transport:    tr,
	}
	switch {
	case d.Transport != nil:
		p.transport = d.Transport
	case cfg.Pipeline:
		p.pipe = pipeline.New(tr, cfg.Upstream, p.m.pipelined.Inc)
	}
	p.avgBodySize.Store(64 << 10)
	if d.Budget != nil {
		// Idle buffers are memory the budget does not count: a small
		// share of it.
		p.bodies = &bodyBuffers{idleMax: d.Budget.Max() / 32}
	}
	if p.retryBudget, err = limiter.NewRetryBudget(limiter.RetryBudgetConfig{Ratio: cfg.RetryBudget}); err != nil {
		return nil, fmt.Errorf("proxy: retry budget: %w", err)
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      roundTripFunc(p.roundTrip),
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.answerError,
		ErrorLog:       slog.NewLogLogger(d.Logger.Handler(), slog.LevelWarn),
		BufferPool:     &copyBuffers{},
	}
	return p, nil
}

// Handler is the proxy as the loaders' server should serve it: with the
// cap on idle keep-alive connections. The server must also use ConnState.
func (p *Proxy) Handler() http.Handler { return p.idle.wrap(p) }

// ConnState tracks the loaders' idle connections for Handler's cap; it is
// the http.Server's ConnState hook.
func (p *Proxy) ConnState(c net.Conn, st http.ConnState) { p.idle.connState(c, st) }

// IdleConns is the number of loader connections idle now.
func (p *Proxy) IdleConns() int { return p.idle.idleCount() }

// stagedPermit shows a limiter permit to the pipeline.
type stagedPermit struct{ *limiter.Permit }

func (s stagedPermit) Leader() pipeline.Permit {
	if l := s.Permit.Leader(); l != nil {
		return stagedPermit{l}
	}
	return nil
}

// ErrCAFile is New's error for a Config.CAFile that cannot be read or holds
// no certificate.
var ErrCAFile = errors.New("upstream CA file")

// newTransport bounds the phases of an upstream connection that outlast no
// attempt of their own: dial and TLS handshake. Each attempt is bounded by
// its own clock (SLUICE_UPSTREAM_TIMEOUT from its start until the answer
// goes to the loader, then per part: attemptBody.readPart), which covers the wait
// for the response headers too: a ResponseHeaderTimeout of
// the same length, started once the request is written, could never fire
// first, and would cost a timer per attempt.
func newTransport(cfg Config) (*http.Transport, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w: %w", ErrCAFile, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("proxy: %w: no PEM certificate in %s", ErrCAFile, cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	t := cfg.Timeout
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: min(5*time.Second, t), KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   min(10*time.Second, t),
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		// An answer's head, held whole in memory per attempt: net/http's
		// default of 10 MiB times the concurrency limit is more than a
		// sidecar's memory; no store's head comes near 1 MiB (net/http's
		// own servers refuse a request head over it).
		MaxResponseHeaderBytes: 1 << 20,
		MaxIdleConns:           4 * cfg.MaxConcurrency,
		MaxIdleConnsPerHost:    2 * cfg.MaxConcurrency,
		ForceAttemptHTTP2:      true,
		// Bodies pass through byte for byte: never ask for or undo gzip.
		DisableCompression: true,
	}, nil
}

// Close closes the pipelined connections, at shutdown.
func (p *Proxy) Close() {
	if p.pipe != nil {
		p.pipe.Close()
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// exchange is one loader request's journey through sluice, shared by its
// attempts. The attempts of one exchange run one after the other, so it needs
// no lock.
type exchange struct {
	job       string
	method    string
	path      string // the loader's URL path, before the upstream's path is joined to it: what its scopes are read from
	cost      float64
	permit    *limiter.Permit      // the first attempt's, taken at admission
	scopes    classify.WriteScopes // the scopes the write takes from (see scopes.go)
	scopeHeld scopePermits         // the scope permits taken with permit, not yet used by an attempt
	buffered  bool                 // the body is in memory (or there is none)
	noRoom    bool                 // the body is one sluice buffers, but the budget had no room for it: it streams
	retryable bool                 // buffered, and its method may be retried
	pipelined bool                 // retryable, and sent on p.pipe
	settled   <-chan struct{}      // a pipelined write left in the store's socket: closed when the store is done with it
	answering bool                 // the store's answer is being copied to the loader (modifyResponse ran)
	flow      limiter.Flow         // its place in the limiters' fair queues (flowOf)
	attempts  int
	heldSends int                 // re-sends of a held write (see retryPolicy): not retries of SLUICE_RETRY_MAX
	last      classify.Result     // the last attempt's classification
	bodyBytes int64               // request body size, -1 unknown
	items     int                 // writes in a buffered batch body (classify.Profile.RequestItems), -1 unknown
	body      requestBody         // what each attempt sends (prepareBody)
	streamed  *countingReader     // the body as it streams, when it is not buffered
	trailer   *http.Header        // the loader's request's trailers, which net/http fills in when its body ends
	status    int                 // what the loader was answered
	loader    context.Context     // the loader's own request context
	w         http.ResponseWriter // the loader's; see setReadDeadline
	arrived   time.Time           // when sluice took the write up
	holdUntil time.Time           // hold mode: the write is sent again until then (see retryPolicy); zero: not held
	queued    time.Duration       // waited for its job's admission and for permits so far, over all attempts: SLUICE_QUEUE_TIMEOUT bounds the sum
}

// held reports whether ex is held (hold mode, and a write sluice may send
// again).
func (ex *exchange) held() bool { return !ex.holdUntil.IsZero() }

type exchangeKey struct{}

// exchangeFrom is how the ReverseProxy's hooks (roundTrip, modifyResponse,
// answerError) find their exchange: the ReverseProxy hands them only the
// request or the response, so ServeHTTP puts the exchange in the request's
// context. Everything past roundTrip is given it as an argument.
func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// ServeHTTP admits the write for its job, then proxies it. A read (GET,
// HEAD, OPTIONS, TRACE) goes under its job's share of the limiter but is
// not admitted for the job nor reported to it: it stores nothing, and a
// loader's health check or a count to verify a finished load must not
// wake an idle job, which would then meet its deadline and be cancelled
// and cleaned up, nor keep a hung loader from being found idle.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	job := r.Header.Get(HeaderJob)
	if job == "" {
		job = p.defaultJob
	}
	if !r.ProtoAtLeast(1, 1) {
		w = finalOnly{w}
	}
	ex := &exchange{job: job, method: r.Method, path: r.URL.Path, bodyBytes: r.ContentLength, items: -1, loader: r.Context(), w: w, arrived: time.Now(), trailer: &r.Trailer}
	defer func() { p.m.request(ex.status) }()
	if !state.ValidJobID(job) {
		ex.status = http.StatusBadRequest
		apierror.Write(w, ex.status, "invalid_job_id",
			"X-Sluice-Job must be 1-128 characters of A-Za-z0-9._:-, starting with a letter or digit", map[string]any{"job": apierror.Truncate(job, 140)})
		return
	}
	var ferr *flowError
	if ex.flow, ferr = p.flowOf(r, job); ferr != nil {
		ex.status = http.StatusBadRequest
		ferr.write(w)
		return
	}
	// A write hold mode may hold waits for its job's backoff (state) at
	// most SLUICE_HOLD_MAX too, which bounds all the time sluice keeps it
	// (see retryPolicy); past it, the loader gets hold_expired as for a
	// hold that ran out in the limiter's queue.
	// A body of unknown length (chunked) is buffered within the same
	// bound, and held when it fits: it waits as one of known length does.
	maxWait := p.queueTimeout
	holdable := p.hold > 0 && p.retryMax > 0 && p.repeatable(r.Method, r.URL.Path) && p.bufferable(r.ContentLength)
	if holdable {
		maxWait = p.hold
	}
	ctx, release := r.Context(), func() {}
	if isWrite(r.Method) {
		var err error
		if ctx, release, err = p.jobs.Admit(r.Context(), job, maxWait); err != nil {
			p.refuseAdmission(w, r, ex, holdable, err)
			return
		}
		// The wait for a held job's probe slot is the write's wait too:
		// SLUICE_QUEUE_TIMEOUT bounds it with the limiter's queue (see
		// acquire), as SLUICE_HOLD_MAX bounds a held write's from its
		// arrival.
		ex.queued = time.Since(ex.arrived)
	}
	defer func() {
		if ex.settled != nil {
			// Its loader left a pipelined write that the store has and
			// may still take up: the job counts it in flight until the
			// store is done with it (within the write's timeout), so
			// that a cancel waits for it and its cleanup does not run
			// before it lands.
			go func() { <-ex.settled; release() }()
			return
		}
		release()
	}()
	// The ReverseProxy passes only the request to its hooks: ex goes with
	// it (see exchangeFrom).
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, exchangeKey{}, ex)))
}

// finalOnly is the ResponseWriter of an HTTP/1.0 loader, which must not
// be sent an interim (1xx) answer (RFC 9110 §15.2): it would take the
// store's 103 Early Hints, or an unasked 100 Continue, that the
// ReverseProxy relays for its answer, and the store's real answer for
// garbage after it. Its final answer goes as usual.
type finalOnly struct{ http.ResponseWriter }

func (w finalOnly) WriteHeader(code int) {
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap is for http.ResponseController: deadlines and flushes.
func (w finalOnly) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// refuseAdmission answers a write its job did not admit (err).
func (p *Proxy) refuseAdmission(w http.ResponseWriter, r *http.Request, ex *exchange, holdable bool, err error) {
	withEx := func() *http.Request { return r.WithContext(context.WithValue(r.Context(), exchangeKey{}, ex)) }
	switch {
	case r.Context().Err() != nil:
		// The loader left while its job was held, or so net/http thinks
		// (a read error on its connection, a half-close): answer all the
		// same, or a loader still reading would get net/http's implicit
		// 200.
		ex.status = 499
		apierror.Write(w, ex.status, "client_closed_request", "the loader's connection was closed or broke while its write waited", map[string]any{"job": ex.job})
	case errors.Is(err, limiter.ErrClosed):
		// Shutting down while it waited: the same answer as a write
		// refused a send slot then.
		p.answerError(w, withEx(), p.pushback(ex, reasonClosed, 0))
	case holdable && errors.Is(err, context.DeadlineExceeded):
		ex.holdUntil = ex.arrived.Add(p.hold)
		p.answerError(w, withEx(), p.pushback(ex, reasonHoldExpired, 0))
	default:
		ex.status = apierror.WriteJobWith(w, ex.job, err, p.pushStatus, p.writeErr)
	}
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(p.upstream)
	if p.preserveHost {
		pr.Out.Host = pr.In.Host
	}
	// Rewrite drops the inbound X-Forwarded-* headers; keep the chain and
	// append the loader's address to it.
	if xff := pr.In.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		pr.Out.Header["X-Forwarded-For"] = xff
	}
	pr.SetXForwarded()
	if p.profile.ScansAnswer(classify.Request{Method: pr.Out.Method, Path: pr.Out.URL.Path, RawQuery: pr.Out.URL.RawQuery, Header: pr.Out.Header}) &&
		(p.auth.Replaces(pr.Out) || !signedAcceptEncoding(pr.Out)) {
		// A compressed answer cannot be scanned for the throttling inside
		// it (per-item 429s, UnprocessedItems, an S3 error in a 200); ask
		// for it plain (the loader's client copes with either). When
		// sluice authenticates the request (after this), it replaces
		// whatever the loader signed.
		pr.Out.Header.Del("Accept-Encoding")
	}
	for k := range pr.Out.Header {
		if strings.HasPrefix(k, "X-Sluice-") {
			delete(pr.Out.Header, k)
		}
	}
	// A write is metered, timed and classified as one exchange; a
	// connection switched to another protocol (WebSocket, or h2c, which
	// Java's HttpClient asks for on every http:// URL) would be none of
	// these. The ReverseProxy put the loader's upgrade request back on
	// Out: drop it, and the write goes as plain HTTP/1.1, which a client
	// that offered an upgrade must accept.
	if pr.Out.Header.Get("Upgrade") != "" {
		pr.Out.Header.Del("Upgrade")
		pr.Out.Header.Del("Connection")
	}
}

// signedAcceptEncoding reports whether the loader signed r with AWS
// Signature Version 4 (in its Authorization header or, presigned, in its
// query) over the Accept-Encoding header, as the AWS SDKs do for DynamoDB:
// removing the header would void the signature, and the store would answer
// 403. Such an answer is scanned only if the store sends it uncompressed.
func signedAcceptEncoding(r *http.Request) bool {
	var signed string
	if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "AWS4-") {
		_, signed, _ = strings.Cut(auth, "SignedHeaders=")
		signed, _, _ = strings.Cut(signed, ",")
	} else if strings.Contains(r.URL.RawQuery, "X-Amz-SignedHeaders=") {
		// Parsed only then: this runs for every _bulk. A presigned URL
		// names its parameters literally (SigV4's canonical query).
		signed = r.URL.Query().Get("X-Amz-SignedHeaders")
	}
	for name := range strings.SplitSeq(signed, ";") {
		if strings.EqualFold(strings.TrimSpace(name), "accept-encoding") {
			return true
		}
	}
	return false
}

// pushbackError is sluice's own answer that the loader should come back
// later: a write refused by sluice's limits before any attempt, one that
// found the store unreachable, or one held to the end of its hold. The
// loader gets SLUICE_PUSHBACK_STATUS with a Retry-After (answerError), or
// 503 when sluice is shutting down.
type pushbackError struct {
	reason string // one of pushbackReasons
	cause  string // what the store's last attempt was classified as, if any (connection_refused, ...)
	wait   time.Duration
}

func (e *pushbackError) Error() string { return "sluice: write pushed back: " + e.reason }

// pushback counts and returns sluice's pushback of ex for reason, with the
// wait the limiter expects before the loader's write could be admitted, at
// least atLeast (the store's own Retry-After, say).
func (p *Proxy) pushback(ex *exchange, reason string, atLeast time.Duration) *pushbackError {
	return p.pushbackBy(ex, p.lim, reason, atLeast)
}

// pushbackBy is pushback by lim, the store's limiter or a scope's, whose
// wait the loader is told.
func (p *Proxy) pushbackBy(ex *exchange, lim *limiter.Controller, reason string, atLeast time.Duration) *pushbackError {
	p.m.rejected.WithLabelValues(reason).Inc()
	e := &pushbackError{reason: reason, wait: max(atLeast, lim.RetryWait(ex.cost))}
	if reason == reasonUnreachable || reason == reasonHoldExpired {
		e.cause = ex.last.Reason // "" before any attempt
	}
	return e
}

// errSwitchedProtocols is an attempt the store answered with 101 Switching
// Protocols, which sluice never asks for.
var errSwitchedProtocols = errors.New("sluice: the store answered 101 Switching Protocols to a write that asked for no upgrade")

// bodyReadError is a loader's request body that broke, or did not arrive
// in time, while sluice read it.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "sluice: reading request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// acquire takes the permits of ex's attempt: one of each of its scopes'
// limiters (see acquireScopes), into ex.scopeHeld, then the store's
// limiter's, which it returns. It queues up to the queue timeout
// (backpressure "wait") or not at all ("reject"). A held write queues
// until its hold ends instead, so that SLUICE_HOLD_MAX bounds all the time
// sluice keeps it; its re-sends queue even in reject mode, since a hold is
// the promise to wait for the store.
func (p *Proxy) acquire(ctx context.Context, ex *exchange) (*limiter.Permit, error) {
	start := time.Now()
	// The queue timeout is the write's, not each attempt's: a retry waits
	// only what the earlier attempts left of it, so that a loader's
	// timeout set above SLUICE_QUEUE_TIMEOUT (plus the attempts) holds.
	deadline := start.Add(p.queueTimeout - ex.queued)
	if ex.held() {
		deadline = ex.holdUntil
	}
	defer func() { ex.queued += time.Since(start) }()
	if p.scopes != nil && ex.scopes.Len() > 0 && p.scopes.Active() > 0 {
		if err := p.acquireScopes(ctx, ex, deadline); err != nil {
			return nil, err
		}
	}
	permit, err := p.take(ctx, ex, p.lim, ex.pipelined, deadline)
	if !p.reject || (ex.held() && ex.attempts > 1) {
		p.m.queueWait.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		ex.scopeHeld.unused()
		return nil, p.admitError(ctx, ex, p.lim, err)
	}
	return permit, nil
}

// take takes one permit of lim for ex: at once in reject mode, else
// queueing until deadline.
func (p *Proxy) take(ctx context.Context, ex *exchange, lim *limiter.Controller, pipelined bool, deadline time.Time) (*limiter.Permit, error) {
	var (
		permit *limiter.Permit
		err    error
		cost   = ex.cost
		resend = ex.attempts > 1
	)
	switch {
	case p.reject && !(ex.held() && resend) && pipelined:
		permit, err = lim.TryAcquirePipelinedFlow(ex.flow, cost)
	case p.reject && !(ex.held() && resend):
		permit, err = lim.TryAcquireFlow(ex.flow, cost)
	default:
		err = limiter.ErrNoCapacity
		// A free slot is taken even when the write has no wait left (a
		// retry whose earlier attempts queued the whole timeout): only
		// waiting is bounded. A held write past its hold is not sent.
		if ctx.Err() == nil && (!ex.held() || time.Now().Before(deadline)) {
			// Most writes find a slot free: they take it here, without
			// the queue's deadline, a context and a timer per write. A
			// write that would wait, or would pass others waiting
			// already, queues below.
			if pipelined {
				permit, err = lim.TryAcquirePipelinedFlow(ex.flow, cost)
			} else {
				permit, err = lim.TryAcquireFlow(ex.flow, cost)
			}
		}
		if errors.Is(err, limiter.ErrNoCapacity) {
			qctx, cancel := context.WithDeadline(ctx, deadline)
			if pipelined {
				permit, err = lim.AcquirePipelinedFlow(qctx, ex.flow, cost)
			} else {
				permit, err = lim.AcquireFlow(qctx, ex.flow, cost)
			}
			cancel()
		}
	}
	return permit, err
}

// admitError is what a write refused a permit of lim (the store's
// limiter or a scope's) with err ends with: sluice's pushback, with lim's
// wait, or the context's error.
func (p *Proxy) admitError(ctx context.Context, ex *exchange, lim *limiter.Controller, err error) error {
	reason := ""
	switch {
	case ctx.Err() != nil:
		return ctx.Err() // the loader left, or its job was cancelled
	case errors.Is(err, limiter.ErrQueueFull):
		reason = reasonQueueFull
	case errors.Is(err, limiter.ErrClosed):
		reason = reasonClosed
	case errors.Is(err, context.DeadlineExceeded) && ex.held() && !time.Now().Before(ex.holdUntil):
		reason = reasonHoldExpired
	case (errors.Is(err, limiter.ErrNoCapacity) || errors.Is(err, context.DeadlineExceeded)) && lim.Unreachable():
		// Not sluice's limits: the store answers nothing, and the
		// limiter lets only its probe through.
		reason = reasonUnreachable
	case errors.Is(err, limiter.ErrNoCapacity):
		reason = reasonNoCapacity
	case errors.Is(err, context.DeadlineExceeded):
		reason = reasonQueueTimeout
	default:
		return err
	}
	return p.pushbackBy(ex, lim, reason, 0)
}

// cost is what a write takes from the rate limit: 1, or its body size.
func (p *Proxy) cost(r *http.Request, ex *exchange) float64 {
	switch {
	case !p.bytesCost:
		return 1
	case r.ContentLength >= 0:
		return float64(max(r.ContentLength, 1))
	case ex.buffered:
		return float64(max(ex.bodyBytes, 1)) // its size is known
	}
	return float64(p.avgBodySize.Load())
}

// roundTrip is the ReverseProxy's transport: body buffering, admission,
// then the attempts (send). A buffered body is read before the write
// queues for a send slot, so a loader that trickles its body holds no slot
// of the store's.
func (p *Proxy) roundTrip(out *http.Request) (*http.Response, error) {
	ex := exchangeFrom(out.Context())
	p.retryBudget.Request(time.Now())
	if err := p.prepareBody(out, ex); err != nil {
		return nil, err
	}
	defer p.bodyDone(ex)
	if ex.trailer != nil {
		// The outbound request's trailers are a copy made before the
		// body was read, without their values (ReverseProxy clones the
		// request): the loader's own go with the body.
		ex.body.trailer = *ex.trailer
	}
	ex.cost = p.cost(out, ex)
	if p.scopes != nil {
		// The loader's path: a path in SLUICE_UPSTREAM_URL (a gateway's
		// prefix) is every write's, and would be every write's scope.
		p.profile.Scopes(p.scopeRules, classify.Request{Method: out.Method, Path: ex.path, RawQuery: out.URL.RawQuery, Header: out.Header},
			ex.job, ex.body.buf, &ex.scopes)
	}
	if p.hold > 0 && ex.retryable {
		ex.holdUntil = ex.arrived.Add(p.hold)
	}
	// Pipelined only if it can be sent again: a write behind one that
	// breaks its connection was not answered (RFC 9112 §9.3.2).
	ex.pipelined = p.pipe != nil && ex.retryable && isWrite(out.Method) && out.Header.Get("Expect") == ""
	permit, err := p.acquire(out.Context(), ex)
	if err != nil {
		return nil, err
	}
	ex.permit = permit
	defer func() {
		if ex.permit != nil { // no attempt ran
			ex.permit.Done(limiter.Sample{Outcome: limiter.Neutral, Reason: reasonNotSent})
			ex.permit = nil
			ex.scopeHeld.unused()
		}
	}()
	if p.auth != nil {
		// SigV4 signing rewrites the query of the URL it signs (its
		// canonical form): the attempts share a copy, not the loader's.
		u := *out.URL
		out = out.WithContext(out.Context())
		out.URL = &u
	}
	return p.send(ex, out)
}

// requestBody is a write's body as its attempts send it.
type requestBody struct {
	// buf is a body in memory (buffered): each attempt sends it from its
	// start. nil, with stream nil too: the write has no body.
	buf []byte
	// stream is the loader's body, read during the first attempt and sent
	// once (see retryPolicy).
	stream io.Reader
	// length is a streamed body's Content-Length, 0 when unknown.
	length int64
	// reserved is what the body holds of the buffer budget, given back
	// when the exchange ends (bodyDone).
	reserved int64
	// pooled is buf's memory when it came from the pool (see bodyBuf),
	// held by the exchange until it ends; nil otherwise.
	pooled *bodyBuf
	// trailer is the loader's trailers (a checksum after a chunked
	// body), nil without: complete once a buffered body was read; for a
	// stream, the map net/http fills in when the loader's body ends,
	// which the transport reads once it has sent that end.
	trailer http.Header
}

// set puts b on req, one attempt's copy of the outbound request.
func (b *requestBody) set(req *http.Request) {
	// The length is known (buffered) or the loader's (streamed): never
	// the loader's framing.
	req.TransferEncoding = nil
	req.Trailer = b.trailer
	switch {
	case b.stream != nil:
		// No GetBody: it could only hand back the same stream, already
		// read. net/http calls GetBody on its own to send a body again
		// (HTTP/2 after REFUSED_STREAM or GOAWAY; HTTP/1.1 for a request
		// it deems replayable when a reused connection drops), and SigV4
		// reads it to hash the payload: either would send an empty or cut
		// body, and the store would acknowledge it. Without GetBody,
		// net/http resends only a body it has not started to read, and
		// otherwise fails the attempt, which the loader is told. The
		// stream is the loader's: the ReverseProxy closes it, never an
		// attempt.
		req.Body, req.GetBody, req.ContentLength = io.NopCloser(b.stream), nil, b.length
	case b.buf != nil:
		r, err := b.reader()
		if err != nil {
			panic("BUG: an attempt of a write whose exchange has ended")
		}
		// GetBody, for net/http's replays, is the attempt's (see
		// sentBody.track), which must know which copy the store got.
		req.Body, req.GetBody, req.ContentLength = r, nil, int64(len(b.buf))
		if len(b.trailer) > 0 {
			// Only a chunked body carries trailers over HTTP/1.1: with
			// a Content-Length, net/http would drop them.
			req.TransferEncoding = []string{"chunked"}
		}
	default:
		req.Body, req.GetBody, req.ContentLength = nil, nil, 0
	}
}

// replay is GetBody for a buffered body: net/http sends it again from its
// start when a reused connection drops before the store read it (through
// sentBody.replay), and SigV4 hashes it.
func (b *requestBody) replay() (io.ReadCloser, error) {
	r, err := b.reader()
	if err != nil {
		return nil, err
	}
	return r, nil
}

// reader returns a reader of the buffered body from its start, or
// errBodyGone once its exchange has ended and its buffer may be another's.
func (b *requestBody) reader() (*replayReader, error) {
	if b.pooled != nil && !b.pooled.hold() {
		return nil, errBodyGone
	}
	r := &replayReader{held: b.pooled}
	r.r.Reset(b.buf)
	return r, nil
}

// send makes ex's attempts, one after the other, and returns the answer
// the loader gets: each attempt (p.attempt), then retryPolicy's verdict on
// it. Before a write is sent again, the answer it will not pass on is
// drained and closed (which ends that attempt: its permit, its report),
// and it waits the wait retryPolicy chose, or until the write's context
// ends or sluice shuts down. The policy is all in retryPolicy.
func (p *Proxy) send(ex *exchange, out *http.Request) (*http.Response, error) {
	ctx := out.Context()
	for {
		resp, err := p.attempt(ex, out, &ex.body)
		retry, wait, stop := p.retryPolicy(ctx, ex, resp, err)
		if !retry {
			if stop == nil {
				stop = err
			}
			if stop != nil && resp != nil {
				// The loader left as the store's answer came
				// (retryPolicy passes both on). The ReverseProxy drops a
				// response that comes with an error, so close it here:
				// that ends the attempt and its permit.
				resp.Body.Close()
				resp = nil
			}
			return resp, stop
		}
		if err == nil {
			drainAnswer(resp.Body)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-p.lim.Closed():
			// Shutting down: the next attempt would get no permit. The
			// loader is told now, not when the wait (a Retry-After of
			// up to SLUICE_MAX_RETRY_AFTER) ends, which may be past the
			// drain, when its connection is cut.
			t.Stop()
			return nil, p.pushback(ex, reasonClosed, 0)
		case <-t.C:
		}
	}
}

// drainAnswer reads a little of an answer that is not passed on before
// closing it, so that its connection may carry the next attempt; a longer
// answer is cut, and its connection closed.
func drainAnswer(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 4<<10))
	body.Close()
}

// retryPolicy is sluice's retry policy, asked after every attempt of ex
// (ex.last is its classification; resp and err are what it returned). It
// says whether to send the write again and after what wait; when it stops,
// stop is the error the exchange ends with, nil when the store's last
// answer goes to the loader. What the loader then gets: that answer as is
// (with X-Sluice-Attempts, see modifyResponse), or sluice's own answer
// for stop, chosen by answerError.
//
// Hold mode (SLUICE_HOLD_MAX) changes what happens to a write whose body
// is buffered and whose method may be sent twice (ex.retryable) when the
// store throttles it, is overloaded, does not answer in time, or is
// unreachable: the write is held, sent again until the store takes it or
// until SLUICE_HOLD_MAX after it arrived, so that a throttle window or an
// outage shorter than the hold costs the loader latency, not an error.
// What holds it back is the limiter, not a count:
//   - SLUICE_RETRY_MAX does not apply, nor the retry budget. The budget is
//     there so that retries cannot multiply the load on a store that is
//     already failing; a held re-send cannot, because it waits for a
//     limiter permit like any new write (even in reject mode: see
//     acquire), and the limiter admits only what it finds the store takes:
//     it cut its limits on the throttle, it pauses on a long Retry-After,
//     and an unreachable store gets one probe at a time. Held re-sends are
//     part of that admitted load, not load on top of it. The budget would
//     only turn a throttle window back into errors, which the loader would
//     retry at a pace of its own.
//   - A re-send waits the store's Retry-After (capped by
//     SLUICE_MAX_RETRY_AFTER), otherwise the first backoff step, which does
//     not grow with the count: pacing is the limiter's.
//   - A timed-out write is sent again, where outside hold mode it never is
//     (below): a held write is one sluice may repeat (an idempotent method,
//     or POST and PATCH with SLUICE_RETRY_POST, which says the store
//     deduplicates), so a copy that may have landed does no harm, and the
//     operator chose latency over errors.
//   - The hold ends the wait, never an attempt under way: a held write is
//     answered within SLUICE_HOLD_MAX + SLUICE_UPSTREAM_TIMEOUT (pipelined,
//     SLUICE_HOLD_MAX + 2 × SLUICE_UPSTREAM_TIMEOUT: its attempt may wait
//     for the answer ahead of it, then has its own timeout). When it
//     ends (or a re-send's wait would end past it), the loader gets
//     sluice's pushback, hold_expired, with a Retry-After.
//   - A server error (500, a broken answer) is not held: the store
//     answered, and the usual retries apply (SLUICE_RETRY_MAX, the
//     budget). A write pipelined behind a connection that broke before
//     its answer (reasonPipelineBroken) was not answered, and is held.
//     A loader that leaves, or a job cancelled, ends the hold at once
//     (the first case below).
//
// A streamed body, or a method sluice may not repeat, is never held.
func (p *Proxy) retryPolicy(ctx context.Context, ex *exchange, resp *http.Response, err error) (retry bool, wait time.Duration, stop error) {
	// Whether the write is still wanted. (errors.AsType, not errors.As:
	// its target would escape, and the answered write, nearly every one,
	// would allocate it for nothing.)
	_, bodyBroke := errors.AsType[*bodyReadError](err)
	switch {
	case bodyBroke:
		// The loader's body broke or stalled (which cancels its context
		// too): that is what it is told (answerError), not that it left.
		return false, 0, err
	case ctx.Err() != nil && err == nil && resp != nil && ex.loader.Err() == nil:
		// The job was cancelled while the store had this write (a
		// pipelined write cannot be recalled once in the store's socket)
		// and the store answered: the loader gets that answer, whatever
		// it is, not a refusal of a write that may be stored.
		return false, 0, nil
	case ctx.Err() != nil:
		return false, 0, ctx.Err() // the loader left, or its job was cancelled
	}
	// Whether this write may be sent again.
	_, pushedBack := errors.AsType[*pushbackError](err)
	switch {
	case pushedBack, err != nil && ex.last.Kind == classify.ClientError:
		return false, 0, err // refused by sluice itself, or credentials
	case !ex.last.Kind.Retryable():
		return false, 0, err // stored, or the loader's fault: it would fail the same way
	case !ex.retryable:
		// A body that streamed once (over SLUICE_RETRY_BODY_MAX, or the
		// buffer budget was spent), or a method that must not be sent
		// twice (see repeatable).
		return false, 0, p.giveUp(ex, err)
	case ex.held() && (ex.last.Kind.Congestion() || ex.last.Kind == classify.Unreachable || ex.last.Reason == reasonPipelineBroken):
		// Held (see above): sent again until the hold ends. A write
		// pipelined behind a connection that broke was not taken up by
		// the store (no server error of its own): held too, or a held
		// write behind a 429 that closes its connection would count it
		// against SLUICE_RETRY_MAX and the budget, and get a 502.
		wait = p.backoff.Delay(0, 0, nil)
		if ex.last.RetryAfter > 0 {
			wait = p.honour.Delay(0, ex.last.RetryAfter, nil)
		}
		if !time.Now().Add(wait).Before(ex.holdUntil) {
			return false, 0, p.pushback(ex, reasonHoldExpired, wait)
		}
		p.m.retries.WithLabelValues(ex.last.Kind.String()).Inc()
		ex.heldSends++
		return true, wait, nil
	case ex.attempts-ex.heldSends > p.retryMax:
		// No retries left. The hold's re-sends are not counted: a write
		// held through a throttle window that then gets a 500 has the
		// usual retries for it, as one never held has.
		return false, 0, p.giveUp(ex, err)
	case ex.last.Kind == classify.Timeout:
		// A store that did not answer in SLUICE_UPSTREAM_TIMEOUT is not
		// tried again: the loader gets its 504 within the timeout, never
		// a multiple of it, and the write may have landed.
		return false, 0, err
	case !p.retryBudget.TryRetry(time.Now()):
		// Retries must not amplify an overload (Envoy's retry budget).
		p.m.retryBudgetExhausted.Inc()
		return false, 0, p.giveUp(ex, err)
	}
	p.m.retries.WithLabelValues(ex.last.Kind.String()).Inc()
	// How long it waits: exponential backoff with full jitter, and never
	// sooner than the store's Retry-After, which is capped at
	// SLUICE_MAX_RETRY_AFTER.
	retries := ex.attempts - 1 - ex.heldSends // made so far
	if ex.last.RetryAfter > 0 {
		return true, p.honour.Delay(retries, ex.last.RetryAfter, nil), nil
	}
	return true, p.backoff.Delay(retries, 0, nil), nil
}

// giveUp is what an exchange that is not tried again after an attempt
// that returned err ends with: err (nil: the store's answer goes to the
// loader), except that a write whose attempt reached no store gets
// sluice's pushback, which loaders retry after its Retry-After, rather than
// a 502, which many drop or retry at once. The limiter meanwhile probes the
// store (see limiter.Unreachable).
func (p *Proxy) giveUp(ex *exchange, err error) error {
	if err != nil && ex.last.Kind == classify.Unreachable {
		return p.pushback(ex, reasonUnreachable, 0)
	}
	return err
}

// modifyResponse is the ReverseProxy's ModifyResponse: the store's last
// answer goes to the loader as it came, with the number of attempts.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	ex := exchangeFrom(resp.Request.Context())
	ex.status = resp.StatusCode
	resp.Header.Set(HeaderAttempts, strconv.Itoa(ex.attempts))
	// The loader takes each part of its answer within the timeout (reset
	// as each part is read from the store: attemptBody.Read). A loader
	// that stops reading while it keeps its connection open would
	// otherwise block the copy once its socket is full, and with it the
	// end of the attempt: its send slot would be held for as long as the
	// loader keeps the connection. Not a deadline for the whole answer
	// (the store's side has one per part, attemptBody.readPart): what sluice has
	// read of the answer (all of a small one, which it counted as the
	// store's verdict) must still reach a loader a little behind.
	ex.answering = true
	p.setWriteDeadline(ex, time.Now().Add(p.timeout))
	return nil
}

// answerError is the ReverseProxy's ErrorHandler: sluice's own answer to
// the loader when its exchange ends in an error, not in an answer of the
// store's (see retryPolicy).
func (p *Proxy) answerError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeFrom(r.Context())
	var (
		pb      *pushbackError
		body    *bodyReadError
		tooBig  *auth.TooLargeError
		noCreds *auth.UnavailableError
	)
	details := map[string]any{"job": ex.job, "attempts": ex.attempts}
	switch {
	case errors.As(err, &pb) && pb.reason == reasonClosed:
		// The write was not sent and the loader should send it again
		// once sluice is back: its status is the pushback status, the
		// one the operator chose because this loader retries it (a
		// loader that retries 429 only would drop a 503).
		ex.status = p.pushStatus
		apierror.SetRetryAfter(w.Header(), shutdownRetryAfter)
		p.writeErr(w, ex.status, "shutting_down", "sluice is shutting down; retry after the Retry-After delay", details)
	case errors.As(err, &pb):
		// Backpressure: the loader should slow down and retry after the
		// wait. Its status is the operator's (SLUICE_PUSHBACK_STATUS):
		// loaders differ in which of 429 and 503 they retry.
		ex.status = p.pushStatus
		apierror.SetRetryAfter(w.Header(), pb.wait)
		details["reason"] = pb.reason
		if pb.cause != "" {
			details["cause"] = pb.cause
		}
		msg := "sluice is at its limit for this store (" + pb.reason + "); retry after the Retry-After delay"
		switch pb.reason {
		case reasonUnreachable:
			msg = "the store is unreachable: sluice probes it and sends writes again once it answers; retry after the Retry-After delay"
		case reasonHoldExpired:
			details["hold"] = p.hold.String()
			msg = "sluice held the write for SLUICE_HOLD_MAX and the store did not take it; retry after the Retry-After delay"
		case reasonBufferBudget:
			msg = "sluice must hold the body in memory to sign it, and SLUICE_BUFFER_BUDGET has no room for it now; retry after the Retry-After delay"
		}
		p.writeErr(w, ex.status, "backpressure", msg, details)
	case errors.As(err, &body) && errors.Is(err, os.ErrDeadlineExceeded):
		// The loader did not deliver its body in time (slowloris). Its
		// read deadline also cancels its request's context (net/http),
		// so this comes before the case of a loader that left.
		ex.status = http.StatusRequestTimeout
		apierror.Write(w, ex.status, "request_body_timeout", "the request body did not arrive within SLUICE_UPSTREAM_TIMEOUT", details)
	case errors.As(err, &body) && ex.loader.Err() != nil:
		// The loader's connection broke mid-body (net/http cancels its
		// context on a read error of its connection, not on a body that
		// is malformed): it left, as the 499 of the metric says.
		ex.status = 499
		apierror.Write(w, ex.status, "client_closed_request", "the loader's connection was closed or broke while its body was read", details)
	case errors.As(err, &body):
		ex.status = http.StatusBadRequest
		apierror.Write(w, ex.status, "request_body", body.Error(), details)
	case r.Context().Err() != nil && ex.loader.Err() == nil && ex.last.Kind != classify.Timeout:
		// The loader is still there: its job was cancelled under it.
		ex.status = apierror.WriteJobWith(w, ex.job, context.Cause(r.Context()), p.pushStatus, p.writeErr)
	case ex.loader.Err() != nil:
		// The loader went away, or net/http says so: any read error on
		// its connection cancels its context, a half-close (EOF) too,
		// with the loader still reading. An answer left unwritten would
		// reach such a loader as net/http's implicit 200 OK: write one.
		ex.status = 499
		apierror.Write(w, ex.status, "client_closed_request", "the loader's connection was closed or broke before the store's answer", details)
	case errors.As(err, &tooBig):
		ex.status = http.StatusRequestEntityTooLarge
		apierror.Write(w, ex.status, "body_too_large_to_sign", tooBig.Error(), details)
	case errors.As(err, &noCreds):
		ex.status = http.StatusServiceUnavailable
		apierror.Write(w, ex.status, "upstream_credentials", noCreds.Error(), details)
	case ex.last.Kind == classify.Timeout:
		ex.status = http.StatusGatewayTimeout
		details["timeout"] = p.timeout.String()
		apierror.Write(w, ex.status, "upstream_timeout", "the store did not answer within SLUICE_UPSTREAM_TIMEOUT", details)
	default:
		ex.status = http.StatusBadGateway
		details["reason"] = ex.last.Reason
		apierror.Write(w, ex.status, "upstream_unreachable", "the store could not be reached: "+err.Error(), details)
	}
}

// budgetBusy reports whether err, auth's refusal to sign a body it could
// not hold in memory to hash, is the buffer budget's being taken for now
// (by held writes, say), not the body's size: the body has a known length
// within SLUICE_BUFFER_BUDGET, or it is one sluice buffers and found no
// room for. The loader is to come back later (sluice's pushback), not to
// drop the write as too large (413).
func (p *Proxy) budgetBusy(ex *exchange, err error) bool {
	tooBig, ok := errors.AsType[*auth.TooLargeError](err)
	if !ok || p.budget == nil {
		return false
	}
	return ex.noRoom || tooBig.Size >= 0 && tooBig.Size <= p.budget.Max()
}

// repeatable reports whether sluice may send a write of method to path
// twice: retry it, hold it, pipeline it.
func (p *Proxy) repeatable(method, path string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete, http.MethodTrace:
		return true
	case http.MethodPut:
		// A _bulk is the same bulk whatever its method, and some clients
		// send it with PUT (elasticsearch-py does): its actions without
		// an _id are indexed once more each time it is sent again, after
		// a gateway's 504 or a timeout as much as after a POST's.
		return !classify.IsBulkPath(path) || p.retryPost
	case http.MethodPost, http.MethodPatch:
		// Bulk APIs with ids are idempotent, but only the operator knows.
		return p.retryPost
	}
	return false
}

// bufferable reports whether prepareBody may hold a body of length n
// (-1: unknown) in memory, the budget permitting: a known length within
// SLUICE_RETRY_BODY_MAX, or an unknown one while buffering is on (it is
// read up to that bound).
func (p *Proxy) bufferable(n int64) bool {
	return n <= p.retryBodyMax && (n >= 0 || p.retryBodyMax > 0)
}

// prepareBody reads the body into memory when it fits in
// SLUICE_RETRY_BODY_MAX and the global buffer budget, and sets ex.body, the
// body to send: in memory, or the loader's stream, sent once. A buffered
// body can be retried if its method allows; either way it was read at the
// loader's pace before the write needed a send slot, so a slow loader
// holds none of the store's. On an error it holds nothing of the budget;
// otherwise bodyDone gives back what it holds.
func (p *Proxy) prepareBody(out *http.Request, ex *exchange) error {
	canRetry := p.retryMax > 0 && p.repeatable(out.Method, out.URL.Path)
	if out.Body == nil || out.Body == http.NoBody || out.ContentLength == 0 {
		ex.buffered, ex.retryable, ex.bodyBytes = true, canRetry, 0
		return nil
	}
	// The loader must deliver a buffered body within the upstream timeout,
	// as it would have to on a direct attempt (slowloris). On an error the
	// deadline stays, so the server drops the connection rather than
	// waiting on the rest. A streamed body is read during its attempt,
	// under the same bound (see attempt).
	n := out.ContentLength
	var reserved int64
	var pooled bool
	if n > 0 && p.bufferable(n) {
		reserved, pooled = p.reserveBuffer(n)
	}
	var first int64 // of a body of unknown length: the budget reserved for the start of its buffer
	if n < 0 && p.bufferable(n) {
		first = p.reserveFirst()
	}
	switch {
	case reserved > 0:
		p.setReadDeadline(ex, time.Now().Add(p.timeout))
		body := requestBody{reserved: reserved}
		if pooled {
			body.pooled = p.bodies.get(n)
			body.buf = body.pooled.b[:n]
		} else {
			body.buf = make([]byte, n)
		}
		if _, err := io.ReadFull(out.Body, body.buf); err != nil {
			p.budget.release(reserved)
			if body.pooled != nil {
				body.pooled.release()
			}
			return &bodyReadError{err}
		}
		p.setReadDeadline(ex, time.Time{})
		p.m.buffered.Inc()
		ex.buffered, ex.retryable = true, canRetry
		ex.items = p.profile.RequestItems(itemsRequest(out), body.buf)
		ex.body = body
		return nil
	case first > 0:
		// Unknown length: read up to the limit, the budget reserved as
		// the buffer grows (a body that fits the room left is buffered,
		// and held, whatever the limit); a longer body streams on.
		p.setReadDeadline(ex, time.Now().Add(p.timeout))
		reserved := first
		buf, more, err := readWithin(out.Body, first, p.retryBodyMax, func(grow int64) bool {
			if !p.budget.reserve(grow) {
				return false
			}
			reserved += grow
			return true
		})
		if err != nil {
			p.budget.release(reserved)
			return &bodyReadError{err}
		}
		// The reservation is the memory the buffer holds: its capacity,
		// which may be more than the bytes read.
		held := reserved
		if more == nil {
			p.setReadDeadline(ex, time.Time{})
			read := int64(len(buf))
			p.noteBodySize(read)
			p.m.buffered.Inc()
			ex.buffered, ex.retryable, ex.bodyBytes = true, canRetry, read
			ex.items = p.profile.RequestItems(itemsRequest(out), buf)
			ex.body = requestBody{buf: buf, reserved: held}
			return nil
		}
		p.m.streamed.Inc()
		ex.noRoom = held < p.retryBodyMax // it might have fit the limit, not the budget
		cr := p.newCountingReader(io.MultiReader(bytes.NewReader(buf), bytes.NewReader(more), out.Body), out, ex)
		ex.body = requestBody{stream: cr, reserved: held}
		return nil
	}
	p.m.streamed.Inc()
	ex.noRoom = p.bufferable(n)
	cr := p.newCountingReader(out.Body, out, ex)
	ex.body = requestBody{stream: cr, length: max(n, 0)}
	return nil
}

// bodyDone ends ex's body, once the exchange is over: what it held of the
// budget is given back, and a streamed body of unknown length now has one.
func (p *Proxy) bodyDone(ex *exchange) {
	p.budget.release(ex.body.reserved)
	if ex.body.pooled != nil {
		ex.body.pooled.release()
	}
	if ex.body.stream != nil && ex.bodyBytes < 0 {
		ex.bodyBytes = ex.streamed.n.Load()
		p.noteBodySize(ex.bodyBytes)
	}
}

// reserveBuffer reserves from the budget the memory a buffered body of n
// bytes will hold: a pooled buffer's (see bodyBuf) when its size is pooled
// and it fits, else the n bytes of a buffer of its own, so that pooling
// never makes a body stream that would have been buffered. It returns the
// bytes reserved, 0 if they did not fit, and whether to take the buffer
// from the pool.
func (p *Proxy) reserveBuffer(n int64) (reserved int64, pooled bool) {
	if p.bodies != nil && n > pooledMin && n <= pooledMax {
		if _, size := bodyClass(n); p.budget.reserve(size) {
			return size, true
		}
	}
	if p.budget.reserve(n) {
		return n, false
	}
	return 0, false
}

// readUpTo reads r until its end or until limit bytes, into a buffer whose
// capacity never passes limit (bytes.Buffer would double past it). more is
// nil when r ended within limit; otherwise it holds the byte read past the
// limit, and the rest of r is still to be read.
func readUpTo(r io.Reader, limit int64) (buf, more []byte, err error) {
	return readWithin(r, min(limit, 32<<10), limit, nil)
}

// reserveFirst reserves the start of the buffer of a body of unknown
// length (see readWithin): readUpTo's 32 KiB, or as much less (halved, at
// least 1 KiB) as the budget has room for; 0 when it has none.
func (p *Proxy) reserveFirst() int64 {
	size := min(p.retryBodyMax, 32<<10)
	for !p.budget.reserve(size) {
		if size <= 1<<10 {
			return 0
		}
		size /= 2
	}
	return size
}

// readWithin is readUpTo with a buffer of first bytes to start with,
// asking grow, if not nil, before each growth of it by the bytes it adds:
// when grow refuses, the buffer is as large as it gets, as if that were
// the limit.
func readWithin(r io.Reader, first, limit int64, grow func(int64) bool) (buf, more []byte, err error) {
	buf = make([]byte, 0, first)
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			// Doubled by hand: append's growth may round past limit.
			size := min(2*int64(cap(buf)), limit)
			if grow != nil && !grow(size-int64(cap(buf))) {
				break
			}
			nb := make([]byte, len(buf), size)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		if n > 0 {
			return buf, one[:], nil
		}
		if err == io.EOF {
			return buf, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// setReadDeadline bounds the reading of the loader's request body; a zero
// time clears it. Writers that cannot (test recorders) are left unbounded.
func (p *Proxy) setReadDeadline(ex *exchange, t time.Time) {
	// A controller made here stays on the stack; one kept in ex would be
	// an allocation per write.
	_ = http.NewResponseController(ex.w).SetReadDeadline(t)
}

// setWriteDeadline bounds the writing of the answer to the loader (net/http
// clears it once the answer is written). Writers that cannot (test
// recorders) are left unbounded.
func (p *Proxy) setWriteDeadline(ex *exchange, t time.Time) {
	_ = http.NewResponseController(ex.w).SetWriteDeadline(t)
}

func (p *Proxy) noteBodySize(n int64) {
	// A slow moving average is enough to price bodies of unknown length.
	old := p.avgBodySize.Load()
	p.avgBodySize.Store(max(1, (old*7+n)/8))
}

// countingReader counts what the transport read of a streamed body. The
// transport may still be reading when the response has arrived (a store
// that answers early), so the count is atomic.
type countingReader struct {
	r io.Reader
	n atomic.Int64
	// counter counts the writes of a batch (DynamoDB) as they stream,
	// on the transport's goroutine; items is its count, -1 until the body
	// is whole.
	counter classify.ItemCounter
	items   atomic.Int64
	// err is the first error other than io.EOF of the loader's body (its
	// read deadline, a broken connection): the write's failure is the
	// loader's, not the store's.
	err atomic.Pointer[error]
}

// readErr is the loader's body's error, nil if it has none (yet).
func (c *countingReader) readErr() error {
	if e := c.err.Load(); e != nil {
		return *e
	}
	return nil
}

// itemsRequest is what the profile reads of out: to count its writes,
// and to scan its answer (with the count).
func itemsRequest(out *http.Request) classify.Request {
	return classify.Request{Method: out.Method, Path: out.URL.Path, RawQuery: out.URL.RawQuery, Header: out.Header}
}

// newCountingReader wraps a body that streams and makes it ex's.
func (p *Proxy) newCountingReader(r io.Reader, out *http.Request, ex *exchange) *countingReader {
	cr := &countingReader{r: r, counter: p.profile.NewItemCounter(itemsRequest(out))}
	cr.items.Store(-1)
	ex.streamed = cr
	return cr
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	if err != nil && err != io.EOF {
		// A copy: &err itself would put err on the heap at every read
		// (a streamed 4 MiB body is read some 130 times), not only at
		// the one that fails.
		e := err
		c.err.CompareAndSwap(nil, &e)
	}
	if c.counter != nil && n > 0 {
		_, _ = c.counter.Write(b[:n])
		c.items.Store(int64(c.counter.Items()))
	}
	return n, err
}

// requestItems is the number of writes ex's body carried, -1 unknown.
func (ex *exchange) requestItems() int {
	if ex.items < 0 && ex.streamed != nil {
		return int(ex.streamed.items.Load())
	}
	return ex.items
}

// attempt is one upstream attempt of ex: limiter permit, credentials,
// deadline, classification. out is the outbound request (rewrite's), and
// body what the attempt sends.
func (p *Proxy) attempt(ex *exchange, out *http.Request, body *requestBody) (*http.Response, error) {
	ex.attempts++
	permit := ex.permit
	ex.permit = nil
	if permit == nil {
		var err error
		if permit, err = p.acquire(out.Context(), ex); err != nil {
			return nil, err
		}
	}
	scoped := ex.scopeHeld // this attempt's scope permits
	ex.scopeHeld = scopePermits{}
	// This attempt's own copy: the transport may still be reading the
	// previous attempt's body when the store has answered it.
	req := out.WithContext(out.Context())
	if p.auth != nil {
		// Credentials go on the loader's headers as they came, never on
		// an earlier attempt's: Apply would take a credential of ours
		// that has rotated twice since for the loader's own, and (with
		// SLUICE_AUTH_OVERRIDE=false) forward it.
		req.Header = out.Header.Clone()
	}
	body.set(req)
	if p.auth != nil && body.buf != nil {
		req.GetBody = body.replay // SigV4 hashes the body through it
	}
	if !ex.buffered && ex.attempts == 1 {
		// A streamed body is read from the loader during this attempt,
		// SigV4's hashing of it included: bounded like a buffered one.
		p.setReadDeadline(ex, time.Now().Add(p.timeout))
	}
	if p.auth != nil {
		if err := p.auth.Apply(req); err != nil {
			if req.Body != nil {
				req.Body.Close() // a RoundTripper closes the body, even on errors: it may hold budget
			}
			// Nothing was sent: the permits go back unused, rate units
			// included. Spent, a credential source that is down would use
			// up the rate on writes that never left, and the limiter would
			// raise it for them while the store got nothing.
			permit.Unused()
			scoped.unused()
			ex.last = classify.Result{Kind: classify.ClientError, Reason: reasonAuth}
			if ex.streamed != nil {
				if berr := ex.streamed.readErr(); berr != nil {
					return nil, &bodyReadError{berr}
				}
			}
			if p.budgetBusy(ex, err) {
				return nil, p.pushback(ex, reasonBufferBudget, 0)
			}
			return nil, err
		}
	}
	// The attempt's answer body, made now for the sentBody in it: the
	// transport reads the body through it, and may still do so once the
	// attempt has its answer.
	ab := &attemptBody{p: p, ex: ex}
	if req.Body != nil && req.Body != http.NoBody {
		// What the transport sends (auth may have put a stream in
		// memory, or taken its aws-chunked framing off): see sentBody.
		ab.sent.track(req, body)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	var clock *time.Timer // the attempt's deadline; see attemptBody.readPart
	if !ex.pipelined {
		// A pipelined write's deadline runs from when the store takes it
		// up (see pipeline).
		clock = time.AfterFunc(p.timeout, func() { cancel(errAttemptTimeout) })
	}
	start := time.Now()
	var (
		resp *http.Response
		err  error
	)
	if ex.pipelined {
		var began time.Time
		resp, began, err = p.pipe.RoundTrip(ctx, ex.loader, req.WithContext(ctx), stagedPermit{permit}, p.timeout)
		if began.After(start) {
			start = began // it waited behind another write: not the store's time
		}
		if left, ok := err.(*pipeline.LeftError); ok {
			ex.settled = left.Settled
		}
	} else {
		resp, err = p.transport.RoundTrip(req.WithContext(ctx))
	}
	latency := time.Since(start)
	err = attemptErr(ctx, err)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		// No upgrade was asked for (rewrite drops it): a store that
		// switches anyway speaks something else on this connection now.
		// The ReverseProxy would hand such an answer to its upgrade path,
		// which never closes the body, and the attempt would never end.
		resp.Body.Close()
		err = errSwitchedProtocols
	}
	if err == nil && ab.sent.tracking() && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// Not a success until the body has reached the store whole.
		// A pipelined attempt has no clock: its deadline is the
		// pipeline's, which ends with the answer when it has no body.
		var limit time.Duration
		if ex.pipelined {
			limit = max(time.Until(start.Add(p.timeout)), time.Nanosecond)
		}
		if err = ab.sent.whole(ctx, limit); err != nil {
			resp.Body.Close()
		}
	}
	if err != nil {
		endAttempt(clock, cancel)
		res := p.classifyError(req.Context(), err, false)
		if ex.streamed != nil {
			if berr := ex.streamed.readErr(); berr != nil {
				// The loader's body broke or stalled under the attempt:
				// its fault (408, 400), not the store's timeout.
				res = classify.Result{Kind: classify.ClientError, Reason: reasonRequestBody, Items: -1}
				err = &bodyReadError{berr}
			}
		}
		ex.last = res
		if res.Kind == classify.Unreachable {
			p.warnDown.Do(func() {
				p.log.Warn("store unreachable: probing it, other writes wait or are pushed back",
					"upstream", p.shownURL, "reason", res.Reason, "err", err, "job", ex.job)
			})
		}
		p.finishAttempt(ex, permit, scoped, res, latency, nil)
		if res.Reason == reasonCancelled && ex.loader.Err() != nil && isWrite(ex.method) {
			// The loader gave up before the store answered: the limiter
			// learns nothing (its patience is not the store's), but the
			// job must, or a loader whose timeout is shorter than
			// SLUICE_UPSTREAM_TIMEOUT, in front of a store that answers
			// nothing, would keep its job idle for ever.
			p.jobs.Observe(ex.job, Observation{Abandoned: true, Items: -1})
		}
		return nil, err
	}
	var prefix []byte
	if p.profile.WantsBody(resp.StatusCode, resp.Header) {
		// Under the attempt's deadline still: the clock keeps running
		// while sluice reads the answer for itself.
		prefix, err = io.ReadAll(io.LimitReader(resp.Body, classify.BodyPrefixMax))
		if err = attemptErr(ctx, err); err != nil {
			resp.Body.Close()
			endAttempt(clock, cancel)
			res := p.classifyError(req.Context(), err, true)
			ex.last = res
			p.finishAttempt(ex, permit, scoped, res, latency, nil)
			return nil, err
		}
		resp.Body = &prefixedBody{r: io.MultiReader(bytes.NewReader(prefix), resp.Body), c: resp.Body}
	}
	res := p.profile.Classify(resp.StatusCode, resp.Header, prefix, time.Now())
	ex.last = res
	// Field by field: the transport may still be reading ab.sent.
	ab.rc, ab.status, ab.kept = resp.Body, resp.StatusCode, resumeKept(req, resp)
	ab.cancel, ab.clock, ab.ctx, ab.parent = cancel, clock, ctx, req.Context()
	ab.permit, ab.scoped, ab.res, ab.latency = permit, scoped, res, latency
	if res.Kind == classify.OK {
		creq := itemsRequest(req)
		creq.Items = ex.requestItems()
		ab.scanner = p.profile.NewScanner(creq, resp.StatusCode, resp.Header)
		if ab.scanner == nil && classify.Compressed(resp.Header) && p.profile.ScansAnswer(creq) {
			// Kept compressed because the loader signed Accept-Encoding
			// (see rewrite): the throttling in it is not seen.
			p.m.unscanned.Inc()
		}
	}
	resp.Body = ab
	return resp, nil
}

// errAttemptTimeout ends an attempt that had no answer within
// SLUICE_UPSTREAM_TIMEOUT, or no part of its answer within it once the
// answer began: a deadline error, as classifyError reads it.
var errAttemptTimeout = fmt.Errorf("sluice: the store sent nothing within SLUICE_UPSTREAM_TIMEOUT: %w", context.DeadlineExceeded)

// attemptErr is err, from the attempt whose context is ctx, as a deadline
// error when errAttemptTimeout ended that context: net/http reports it as
// the cause, but a RoundTripper may report the context's own
// context.Canceled.
func attemptErr(ctx context.Context, err error) error {
	if err == nil || err == io.EOF || errors.Is(err, context.DeadlineExceeded) || context.Cause(ctx) != errAttemptTimeout {
		return err
	}
	return fmt.Errorf("%w (%w)", errAttemptTimeout, err)
}

// classifyError turns a failed attempt into a signal; answered says the
// store had begun to answer (its status line came) before err. The loader
// leaving or its job being cancelled says nothing about the store.
func (p *Proxy) classifyError(parent context.Context, err error, answered bool) classify.Result {
	var (
		ne  net.Error
		pb  *pipeline.BrokenError
		dns *net.DNSError
	)
	switch {
	case parent.Err() != nil && !errors.Is(err, context.DeadlineExceeded):
		// The parent has no deadline of its own: a deadline error is the
		// attempt's, and the store's (a write of a cancelled job that was
		// already the store's, see pipeline.roundTrip, and timed out).
		return classify.Result{Kind: classify.ClientError, Reason: reasonCancelled, Items: -1}
	case errors.As(err, &pb):
		// Pipelined behind a write whose connection broke: not answered,
		// sent again, and it says nothing the other write's error has not.
		return classify.Result{Kind: classify.ServerError, Reason: reasonPipelineBroken, Items: -1}
	case errors.As(err, &dns):
		// Before the timeout: a resolver that does not answer in time
		// says nothing of the store's load.
		return classify.Result{Kind: classify.Unreachable, Reason: reasonDNS, Items: -1}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		// No answer in time: the store is likely saturated.
		return classify.Result{Kind: classify.Timeout, Reason: reasonTimeout, Share: 1, Items: -1}
	case errors.Is(err, syscall.ECONNREFUSED):
		return classify.Result{Kind: classify.Unreachable, Reason: reasonConnectionRefused, Items: -1}
	case !answered && brokenConn(err):
		// The store went away under the write (killed, restarting, its
		// pod gone) before it said anything. A reset after its status
		// line is a broken answer (below).
		return classify.Result{Kind: classify.Unreachable, Reason: reasonConnectionReset, Items: -1}
	case errors.Is(err, errSwitchedProtocols):
		return classify.Result{Kind: classify.ServerError, Reason: reasonSwitchedProtocols, Items: -1}
	default:
		// Broken answers and responses that cannot be read: retryable,
		// but not a capacity signal.
		return classify.Result{Kind: classify.ServerError, Reason: reasonTransportError, Items: -1}
	}
}

// brokenConn reports whether err is a connection that broke: reset or
// aborted by the peer, closed while sluice was still writing to it (a
// broken pipe, or the read side's reset closing it under the write), or
// closed before a response arrived (EOF).
func brokenConn(err error) bool {
	for _, e := range []error{syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE, net.ErrClosed, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// finishAttempt feeds one attempt's outcome to the limiter, the job and the
// metrics, exactly once.
func (p *Proxy) finishAttempt(ex *exchange, permit *limiter.Permit, scoped scopePermits, res classify.Result, latency time.Duration, ab *attemptBody) {
	s := limiter.Sample{Latency: latency, RetryAfter: res.RetryAfter, Reason: res.Reason}
	switch {
	case res.Kind == classify.OK:
		s.Outcome = limiter.Success
	case res.Kind.Congestion():
		s.Outcome, s.Share, s.Concurrency = limiter.Congested, res.Share, res.Concurrency
	case res.Reason == reasonPipelineBroken:
		s.Outcome = limiter.Neutral
	case res.Kind == classify.Unreachable:
		s.Outcome = limiter.Unreachable
	case res.Kind == classify.ServerError:
		s.Outcome = limiter.Failed
	default:
		// A client error the store answered: it is up, its capacity
		// unknown. The loader leaving and sluice's own credential failure
		// are client errors the store never answered.
		s.Outcome = limiter.Neutral
		s.Answered = res.Kind == classify.ClientError && res.Reason != reasonCancelled && res.Reason != reasonAuth && res.Reason != reasonRequestBody
	}
	scopedThrottle := p.scopes != nil && res.Kind == classify.Throttled && res.Scoped && ex.scopes.Len() > 0
	switch {
	case scopedThrottle && scoped.none() && p.scopes.Overflowing(time.Now()):
		// More scopes are throttled than sluice keeps limiters for, and
		// none paced this write: the scopes' limiters cannot learn (see
		// scopes.go), so the store's takes the throttle as well.
		permit.Done(s)
		p.finishScopes(ex, &scoped, res, s, true)
	case scopedThrottle:
		// The store throttled the write's scopes, not itself: their
		// limiters take the throttle (finishScopes), the store's learns
		// nothing from this attempt but that the store answered.
		// A fleet learns the store's capacity from them all the same
		// (PartThrottled).
		permit.Done(limiter.Sample{Outcome: limiter.Neutral, Reason: res.Reason, Answered: true, PartThrottled: true})
		p.finishScopes(ex, &scoped, res, s, true)
	default:
		permit.Done(s)
		p.finishScopes(ex, &scoped, res, s, false)
	}
	p.m.attempt(res.Kind)
	p.m.refused(res.Kind, res.Share)
	p.m.attemptDuration.Observe(latency.Seconds())
	if res.Kind.Congestion() {
		p.m.throttles.WithLabelValues(res.Reason).Inc()
		p.warn.Do(func() {
			p.log.Warn("store signalled congestion", "job", ex.job, "reason", res.Reason, "retry_after", res.RetryAfter)
		})
	}
	if res.Reason == reasonCancelled || res.Reason == reasonPipelineBroken || res.Reason == reasonRequestBody {
		return // the loader left or the job was cancelled, or the write was not answered: nothing to report
	}
	if !isWrite(ex.method) {
		return // a read is not its job's (see ServeHTTP)
	}
	o := Observation{Kind: res.Kind, Items: -1, RetryAfter: res.RetryAfter}
	bulk := ab != nil && ab.scanner != nil && res.Items >= 0
	switch {
	case res.Kind == classify.OK && ab != nil && ab.kept == 0:
		return // a resumable upload's chunk of which the store kept nothing: the loader sends it again
	case res.Kind == classify.OK && ab != nil && ab.status >= 300 && ab.kept < 0:
		// A redirect to a write (S3's PermanentRedirect to a bucket's
		// region, a 307 to another node): the store took nothing, the
		// loader is to follow it. Not progress, nor acknowledged; for the
		// limiter it is an answer like any (classify.OK).
		o.Kind = classify.ClientError
	case res.Kind == classify.OK && bulk && res.Items == 0:
		if res.Failed == 0 {
			return // an empty bulk
		}
		// Every item failed on its own merits (mapping errors): the
		// loader's problem, and no progress.
		o.Kind = classify.ClientError
	case res.Kind == classify.OK:
		o.Bytes = max(ex.bodyBytes, 0)
		if ab != nil && ab.kept > 0 {
			o.Bytes = min(o.Bytes, ab.kept)
		}
		if bulk {
			o.Items = int64(res.Items)
			o.Bytes = o.Bytes * int64(res.Items) / int64(res.Items+res.Failed)
		}
		p.m.ackBytes.Add(float64(o.Bytes))
		p.m.ackRequests.Inc()
		if o.Items > 0 {
			p.m.ackItems.Add(float64(o.Items))
		}
	case res.Kind == classify.Throttled && bulk && res.Items > 0:
		// A partially throttled bulk write: the throttle is reported, and
		// its accepted items are progress all the same, with their share
		// of the body's bytes (the rejected ones will be sent again).
		o.Items = int64(res.Items)
		o.Bytes = max(ex.bodyBytes, 0) * int64(res.Items) / int64(res.Items+res.Rejected+res.Failed)
		p.m.ackItems.Add(float64(o.Items))
		p.m.ackBytes.Add(float64(o.Bytes))
	}
	p.jobs.Observe(ex.job, o)
}

// isWrite reports whether a method can store something.
func isWrite(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// sentBody is a write's body as the transport sends it, which tells
// whether the transport read it to its end. A store may answer a write
// before it has read all of its body, and net/http hands such an answer
// over at once while it goes on sending the body, or gives it up: when the
// store hangs up, when it said it would close and the answer has been
// read, when it answered an Expect: 100-continue without the 100. A
// success answered so is the store's only if the rest of the body reached
// it. The transport may send a buffered body more than once within one
// attempt (GetBody, when a reused connection drops before the store took
// the request up): what counts is the copy sent last, whose answer the
// attempt gets.
//
// What the end read says: over HTTP/1.1, for a body with a length, that
// every byte of it was written to the socket. net/http flushes the head
// before a body it does not know to be in memory (this one), then hands
// the body to the connection's own copy, which writes each part before it
// reads the next; the read that finds the end comes after the last write.
// A chunked body's chunks are flushed as they are written too, but its
// last chunk and trailers are left in the connection's buffer at the end
// read, flushed after Request.write returns, and a flush that fails is
// seen by nothing outside net/http (httptrace's WroteRequest is called
// before it). Over HTTP/2 the end is read ahead of the last DATA frame.
// The pipeline (SLUICE_PIPELINE) writes into a buffer of its own, flushed
// after the body: over TLS, whose connection reads no body itself, the
// end read may leave up to its 64 KiB unflushed. net/http gives a body
// up 50 ms after an answer without a body of its own (a 204 at the head):
// a store that answers so and reads on slowly gets the body cut, and the
// write counts as answered early. And no client sees past its own socket:
// a store that hangs up with the body unread in its socket's buffer has
// not taken it, and nothing says so.
type sentBody struct {
	mu   sync.Mutex
	gen  int           // the copy the transport sends now: 0, then one more at each replay
	eof  bool          // that copy was read to its end
	done bool          // that copy was read to its end, or closed
	wake chan struct{} // made by whole when it must wait, closed when done

	first sentReader // copy 0
	// Where a replay's copy comes from: getBody (auth's, which wraps the
	// body's), else body.
	getBody func() (io.ReadCloser, error)
	body    *requestBody
}

// sentReader is one copy of a body as the transport reads it.
type sentReader struct {
	s   *sentBody
	gen int
	rc  io.ReadCloser
}

func (r *sentReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if err == io.EOF {
		r.s.end(r.gen, true)
	}
	return n, err
}

func (r *sentReader) Close() error {
	r.s.end(r.gen, false)
	return r.rc.Close()
}

// track puts s between the transport and req's body, and the copies of it
// that req.GetBody gives for replays.
func (s *sentBody) track(req *http.Request, body *requestBody) {
	s.first = sentReader{s: s, rc: req.Body}
	req.Body = &s.first
	switch {
	case req.GetBody != nil:
		s.getBody = req.GetBody
		req.GetBody = s.replay
	case body.buf != nil:
		s.body = body
		req.GetBody = s.replay
	}
}

// tracking reports whether track was called.
func (s *sentBody) tracking() bool { return s.first.s != nil }

// replay is the tracked request's GetBody: the copies before are over.
func (s *sentBody) replay() (io.ReadCloser, error) {
	var (
		rc  io.ReadCloser
		err error
	)
	if s.getBody != nil {
		rc, err = s.getBody()
	} else {
		rc, err = s.body.replay()
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	s.eof, s.done = false, false
	return &sentReader{s: s, gen: s.gen, rc: rc}, nil
}

// end records that copy gen was read to its end (eof), or closed. An
// earlier copy's end, which a transport may report late, is not the
// body's.
func (s *sentBody) end(gen int, eof bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.done {
		return
	}
	s.eof, s.done = eof, true
	if s.wake != nil {
		close(s.wake)
	}
}

// whole waits, within ctx and limit (if not 0), until the transport is done with the body, and
// returns errAnsweredEarly if it did not send it to its end. It is called
// once the transport has returned its answer, when it makes no more
// copies. The channel is made only when it must wait: most bodies are
// sent before the store answers.
func (s *sentBody) whole(ctx context.Context, limit time.Duration) error {
	s.mu.Lock()
	if !s.done {
		s.wake = make(chan struct{})
		wake := s.wake
		s.mu.Unlock()
		var expired <-chan time.Time
		if limit > 0 {
			t := time.NewTimer(limit)
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-expired:
			// The store said it took the write, and has not read it
			// by the write's deadline: as for a body it hung up on.
			return errAnsweredEarly
		}
		s.mu.Lock()
	}
	eof := s.eof
	s.mu.Unlock()
	if !eof {
		return errAnsweredEarly
	}
	return nil
}

// errAnsweredEarly is a success the store answered before it had the
// whole of a write's body, the rest of which then did not reach it.
var errAnsweredEarly = errors.New("sluice: the store answered success before it had the whole body, and the rest of the body did not reach it")

type prefixedBody struct {
	r io.Reader
	c io.Closer
}

func (b *prefixedBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *prefixedBody) Close() error               { return b.c.Close() }

// endAttempt releases an attempt: its clock, if it has one, and its
// context.
func endAttempt(clock *time.Timer, cancel context.CancelCauseFunc) {
	if clock != nil {
		clock.Stop()
	}
	cancel(nil)
}

// errAnswerTimeout ends an answer still coming at SLUICE_ANSWER_TIMEOUT.
var errAnswerTimeout = fmt.Errorf("sluice: the store's answer took longer than SLUICE_ANSWER_TIMEOUT: %w", context.DeadlineExceeded)

// attemptBody is the store's response body as the loader reads it. It feeds
// the profile's scanner (Elasticsearch bulk items, DynamoDB unprocessed
// writes, an S3 error inside a 200) and, on Close, ends the attempt: its
// deadline is released and its outcome reported.
type attemptBody struct {
	rc      io.ReadCloser
	status  int   // the answer's status
	kept    int64 // of a resumable upload's chunk, the bytes the store kept (see resumeKept); -1 otherwise
	scanner classify.Scanner
	err     error // the first read error other than io.EOF
	eof     bool  // the body was read to its end
	cancel  context.CancelCauseFunc
	closed  bool

	// The attempt's deadline, from which an answer that goes to the
	// loader has each part (readPart); nil for a pipelined write.
	clock *time.Timer
	end   time.Time       // the whole answer's deadline, from its first part
	ctx   context.Context // the attempt's

	// The attempt that Close ends (see done).
	p       *Proxy
	ex      *exchange
	permit  *limiter.Permit
	scoped  scopePermits    // the attempt's scope permits
	res     classify.Result // the answer's classification, before its body
	latency time.Duration
	parent  context.Context // the write's

	sent sentBody // the write's body as the transport sends it
}

func (b *attemptBody) Read(p []byte) (int, error) {
	var (
		n   int
		err error
	)
	if b.ex.answering && b.clock != nil {
		n, err = b.readPart(p)
	} else {
		n, err = b.rc.Read(p)
		err = attemptErr(b.ctx, err)
	}
	if n > 0 && b.ex.answering {
		// The copy to the loader reads the next part once it wrote the
		// last: the loader has taken it, and has the timeout again for
		// this one (see modifyResponse). An answer sluice reads for
		// itself (one it retries) sets nothing.
		b.p.setWriteDeadline(b.ex, time.Now().Add(b.p.timeout))
	}
	if n > 0 && b.scanner != nil {
		_, _ = b.scanner.Write(p[:n])
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil && b.err == nil:
		b.err = err
	}
	return n, err
}

// readPart reads a part of an answer that goes to the loader, giving the
// read the attempt's timeout: clock ends the attempt when it fires. A
// deadline for the whole would cut a long answer the store is still sending steadily (a
// big bulk write's results, the spaces S3 sends while it completes a
// multipart upload) to a write it took: the loader, handed a broken answer,
// sends it again. Only the wait for the store counts; the time the loader
// takes over each part is bounded by its write deadline (attemptBody.Read).
// The whole answer has SLUICE_ANSWER_TIMEOUT, from its first read: a store
// that sends a byte just within each timeout would otherwise hold the
// write, and its send slot, for ever; and an answer with a length, held in
// the loader's connection's buffer until it is whole, does not even reach
// the loader meanwhile.
//
// What sluice reads of an answer for itself before the loader has any of it
// (the profile's look at an error answer's head, the drain of an answer it
// sends the write again after) stays under the attempt's deadline as a
// whole, as the wait for the answer does: the loader's write deadline does
// not bound it, and a store trickling an error answer would otherwise hold
// the write, and its send slot, for as long as it trickles.
func (b *attemptBody) readPart(p []byte) (int, error) {
	now := time.Now()
	if b.end.IsZero() {
		b.end = now.Add(b.p.answerMax)
	}
	left := b.end.Sub(now)
	if left <= 0 {
		return 0, errAnswerTimeout
	}
	b.clock.Reset(min(b.p.timeout, left))
	n, err := b.rc.Read(p)
	b.clock.Stop()
	err = attemptErr(b.ctx, err)
	if errors.Is(err, errAttemptTimeout) && !time.Now().Before(b.end) {
		err = errAnswerTimeout // the clock was set to the whole answer's end
	}
	return n, err
}

func (b *attemptBody) Close() error {
	err := b.rc.Close()
	if !b.closed {
		b.closed = true
		endAttempt(b.clock, b.cancel)
		b.done()
	}
	return err
}

// resumeKept returns how many bytes of a resumable upload's chunk the
// store kept, when its answer is 308 Resume Incomplete (Google's
// resumable uploads, which the GCS clients use for large objects): a 308
// without a Location, whose Range says what the store has persisted of the
// whole upload ("bytes=0-N"; none without it). Such a chunk is progress,
// not a redirect the loader must follow. -1 for any other answer.
func resumeKept(req *http.Request, resp *http.Response) int64 {
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "" || !isWrite(req.Method) {
		return -1
	}
	end, ok := byteRangeEnd(strings.TrimPrefix(resp.Header.Get("Range"), "bytes="))
	if !ok {
		return 0 // nothing persisted yet
	}
	// The chunk's first byte: "bytes S-E/T" (or "bytes */T", a query of
	// the upload's state, which carries no bytes).
	cr := strings.TrimPrefix(req.Header.Get("Content-Range"), "bytes ")
	start, _, found := strings.Cut(cr, "-")
	first, err := strconv.ParseInt(start, 10, 64)
	if !found || err != nil || first < 0 {
		return 0
	}
	return max(end+1-first, 0)
}

// byteRangeEnd parses "S-E" and returns E.
func byteRangeEnd(r string) (int64, bool) {
	s, e, found := strings.Cut(r, "-")
	first, err1 := strconv.ParseInt(s, 10, 64)
	last, err2 := strconv.ParseInt(e, 10, 64)
	if !found || err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, false
	}
	return last, true
}

// done reports the attempt's outcome, once its answer was read or closed.
func (b *attemptBody) done() {
	final := b.res
	switch {
	case b.scanner != nil && b.err != nil:
		// The body decides this answer, and it broke off (the attempt's
		// deadline, the loader leaving, a reset): the store's verdict
		// never arrived.
		final = b.p.classifyError(b.parent, b.err, true)
	case b.scanner != nil && !b.eof:
		// Closed before its end: the loader went away while its answer
		// was copied to it. Nothing was learned.
		final = classify.Result{Kind: classify.ClientError, Reason: reasonCancelled, Items: -1}
	case b.scanner != nil:
		final = b.scanner.Result()
	}
	b.p.finishAttempt(b.ex, b.permit, b.scoped, final, b.latency, b)
}
