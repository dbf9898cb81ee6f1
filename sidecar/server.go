package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/auth"
	"github.com/sluice-dev/sluice/sidecar/classify"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// Version is stamped at build time with -ldflags "-X ...sidecar.Version=v1.2.3".
var Version = "dev"

// Options are the parts of a Server that are not configuration.
type Options struct {
	Logger *slog.Logger
	// Store overrides the job store opened from SLUICE_STATE_DIR (tests).
	Store state.Store
	// ActionClient, if set, makes the cancel and cleanup actions and the
	// progress probe (tests: an in-memory store).
	ActionClient *http.Client
	// Transport, if set, carries the upstream attempts instead of sluice's
	// own *http.Transport (an in-process store for simulations and tests;
	// the upstream timeouts then rest on the attempt's deadline alone).
	Transport http.RoundTripper

	// FleetDialer, if set, makes fleet mode's connections to Redis
	// instead of TCP (an in-process Redis for tests).
	FleetDialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Server is a running sluice: the proxy, the admin server, the control loop
// and the job manager.
type Server struct {
	cfg     *Config
	log     *slog.Logger
	reg     *prometheus.Registry
	lim     *limiter.Controller
	scopes  *limiter.Scopes // per-scope limiters; nil with SLUICE_SCOPES_MAX=0
	budget  *proxy.Budget
	jobs    *state.Manager
	auth    *auth.Authenticator
	proxy   *proxy.Proxy
	admin   *admin.API
	life    admin.Lifecycle
	started time.Time

	stopOnce sync.Once
	stopCh   chan struct{}

	fleet *fleetPart // nil unless fleet mode is on (fleet.go)
}

// StartupError is a problem found while starting that the operator must fix
// (a state dir that cannot be opened, a port in use): exit status 2.
type StartupError struct{ Err error }

func (e *StartupError) Error() string { return e.Err.Error() }
func (e *StartupError) Unwrap() error { return e.Err }

// NewServer builds sluice from a validated configuration. Nothing listens
// until Run.
func NewServer(cfg Config, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sluice_build_info",
		Help:        "Always 1; the labels say which sluice this is.",
		ConstLabels: prometheus.Labels{"version": Version, "profile": cfg.Profile},
	})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo)
	started := time.Now()
	// The shipped alert counts restarts by this. The process collector's
	// process_start_time_seconds is worked out again at each scrape from
	// the node's boot time, which moves when the node's clock is stepped:
	// a restart that never happened.
	startTime := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_start_time_seconds",
		Help: "Unix time this sluice process started; it changes only with a restart.",
	})
	startTime.Set(float64(started.UnixNano()) / 1e9)
	reg.MustRegister(startTime)

	s := &Server{
		cfg:     &cfg,
		log:     log,
		reg:     reg,
		budget:  proxy.NewBudget(int64(cfg.BufferBudget)),
		started: started,
		stopCh:  make(chan struct{}),
	}
	lcfg := limiter.Config{
		InitialRate:        cfg.InitialRate,
		MinRate:            cfg.MinRate,
		MaxRate:            cfg.MaxRate,
		InitialConcurrency: cfg.InitialConcurrency,
		MaxConcurrency:     cfg.MaxConcurrency,
		MaxRetryAfter:      cfg.MaxRetryAfter,
		Window:             cfg.ControlInterval,
		QueueMax:           cfg.QueueMax,
		BulkFloor:          cfg.BulkFloor,
		Logger:             log, // each package scopes its own logger
		// The store's limiter and its scopes' share what they find of
		// the store's latency.
		Latency: new(limiter.LatencyFinding),
	}
	lim, err := limiter.New(lcfg)
	if err != nil {
		return nil, err
	}
	s.lim = lim
	if cfg.scopesPossible() {
		// A scope's limiter has the store's bounds; it starts from the
		// store's limits when its scope is first throttled.
		if s.scopes, err = limiter.NewScopes(limiter.ScopesConfig{Limiter: lcfg, Max: cfg.ScopesMax}); err != nil {
			return nil, err
		}
	}
	reg.MustRegister(newLimiterCollector(lim, s.budget, cfg.RateUnit), newClassCollector(lim))

	a, err := auth.New(cfg.Auth, auth.Options{
		Logger:       log,
		Registerer:   reg,
		BufferBudget: s.budget.Reserve,
	})
	if err != nil {
		return nil, &StartupError{err}
	}
	s.auth = a

	store := opts.Store
	if store == nil {
		if cfg.StateDir == "" {
			log.Warn("SLUICE_STATE_DIR is not set: job state is kept in memory only and lost on restart")
			store = &state.MemStore{}
		} else if store, err = state.OpenBolt(cfg.StateDir); err != nil {
			return nil, &StartupError{fmt.Errorf("SLUICE_STATE_DIR: %w", err)}
		}
	}
	jcfg := s.jobsConfig(store, reg)
	jcfg.HTTPClient = opts.ActionClient
	jobs, err := state.NewManager(jcfg)
	if err != nil {
		store.Close()
		return nil, &StartupError{fmt.Errorf("SLUICE_STATE_DIR: %w", err)}
	}
	s.jobs = jobs

	pcfg, err := proxyConfig(&cfg)
	if err != nil {
		jobs.Close()
		return nil, err
	}
	// The proxy's metrics are also in a registry of their own, which the
	// admin API reads back every second (see admin.Deps.Counters).
	counters := prometheus.NewRegistry()
	s.proxy, err = proxy.New(pcfg, proxy.Deps{
		Limiter:    lim,
		Scopes:     s.scopes,
		Budget:     s.budget,
		Jobs:       jobsAdapter{jobs, cfg.MaxRetryAfter},
		Auth:       a,
		Registerer: bothRegisterer{reg, counters},
		Logger:     log,
		Transport:  opts.Transport,
	})
	if err != nil {
		jobs.Close()
		if errors.Is(err, proxy.ErrCAFile) {
			return nil, &StartupError{fmt.Errorf("SLUICE_UPSTREAM_CA_FILE: %w", err)}
		}
		return nil, err
	}
	if err := s.newFleet(&cfg, reg, log, opts.FleetDialer); err != nil {
		jobs.Close()
		return nil, err
	}
	s.admin = admin.New(admin.Config{
		Token:           cfg.AdminToken,
		HeartbeatMaxAge: max(10*cfg.ControlInterval, 5*time.Second),
		Info: admin.Info{
			Version:      Version,
			Upstream:     redactURL(cfg.UpstreamURL),
			Profile:      cfg.Profile,
			RateUnit:     cfg.RateUnit,
			Backpressure: cfg.Backpressure,
		},
	}, admin.Deps{
		Gatherer:  reg,
		Counters:  counters,
		Limiter:   lim,
		Jobs:      jobs,
		Auth:      a,
		Budget:    s.budget,
		Lifecycle: &s.life,
		Stop:      s.requestStop,
		Started:   s.started,
		History:   admin.NewHistory(admin.HistoryPoints),
		Fleet:     s.fleetStatus,
		Scopes:    s.scopes,
	})
	return s, nil
}

// ProxyHandler is the loader-facing handler.
func (s *Server) ProxyHandler() http.Handler { return s.proxy }

// AdminHandler is the admin API handler.
func (s *Server) AdminHandler() http.Handler { return s.admin.Handler() }

// requestStop starts a graceful shutdown (SIGTERM or /quitquitquit).
func (s *Server) requestStop(reason string) {
	s.stopOnce.Do(func() {
		s.log.Info("shutdown requested", "reason", reason)
		s.life.Set(admin.Stopping)
		close(s.stopCh)
	})
}

// Run listens on the proxy and admin addresses and serves until ctx ends or
// /quitquitquit is called, then shuts down gracefully: readiness goes to
// Stopping, the proxy stops accepting, in-flight writes drain for up to
// SLUICE_SHUTDOWN_TIMEOUT, loops stop and job state is flushed (given up on
// after flushWait, see StartLoops).
func (s *Server) Run(ctx context.Context) error {
	proxyLn, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return &StartupError{fmt.Errorf("SLUICE_LISTEN_ADDR: %w", err)}
	}
	adminLn, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		proxyLn.Close()
		return &StartupError{fmt.Errorf("SLUICE_ADMIN_ADDR: %w", err)}
	}
	return s.Serve(ctx, proxyLn, adminLn)
}

// Serve is Run on listeners the caller opened.
func (s *Server) Serve(ctx context.Context, proxyLn, adminLn net.Listener) error {
	if host, _, _ := net.SplitHostPort(proxyLn.Addr().String()); !s.cfg.ListenPublicOK {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			s.log.Warn("the proxy listens beyond loopback: any host that reaches it can write to the store through sluice; set SLUICE_LISTEN_PUBLIC_OK=true to acknowledge",
				"addr", proxyLn.Addr().String())
		}
	}
	stopLoops := s.StartLoops()

	proxySrv := &http.Server{
		Handler:           s.proxy.Handler(),
		ReadHeaderTimeout: 10 * time.Second, // slowloris
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState:         s.proxy.ConnState,
	}
	adminSrv := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	proxyCtx, stopProxy := context.WithCancel(context.Background())
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	proxyErr, adminErr := make(chan error, 1), make(chan error, 1)
	go func() { proxyErr <- serveUntil(proxyCtx, proxySrv, proxyLn, s.cfg.ShutdownTimeout) }()
	go func() { adminErr <- serveUntil(adminCtx, adminSrv, adminLn, adminCloseWait) }()

	s.life.Set(admin.Ready)
	s.log.Info("sluice started", "version", Version, "listen", proxyLn.Addr().String(), "admin", adminLn.Addr().String(),
		"upstream", redactURL(s.cfg.UpstreamURL), "profile", s.cfg.Profile)

	var runErr error
	proxyDone, adminDone := false, false
	var stopAt time.Time // the shutdown's start
	select {
	case <-ctx.Done():
		s.requestStop("signal")
	case <-s.stopCh:
	case runErr = <-proxyErr:
		proxyDone = true
		s.requestStop("proxy listener failed")
	case runErr = <-adminErr:
		adminDone = true
		s.requestStop("admin listener failed")
	}
	stopAt = time.Now()
	keep := func(err error) {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			s.log.Warn("drain timed out: writes still in flight were cut off", "timeout", s.cfg.ShutdownTimeout)
		case err != nil && !errors.Is(err, http.ErrServerClosed) && runErr == nil:
			runErr = err
		}
	}
	// Writes still waiting (for a send slot, or for their held job's
	// probe slot) get the pushback status at once rather than holding up
	// the drain; in-flight ones drain for up to SLUICE_SHUTDOWN_TIMEOUT (the
	// admin port stays up so status can be read meanwhile); then the loops
	// stop and job state is flushed.
	s.closeWaits()
	stopProxy()
	if !proxyDone {
		keep(<-proxyErr)
	}
	s.proxy.Close()
	// Cancels and cleanups under way finish within what the drain left of
	// SLUICE_SHUTDOWN_TIMEOUT, the job manager's loop and the admin port
	// still up (a loader that exits at its job's 409 stops the pod while
	// they run).
	settle, stopSettle := context.WithDeadline(context.Background(), stopAt.Add(s.cfg.ShutdownTimeout))
	if n := s.jobs.Settle(settle); n > 0 {
		s.log.Warn("shutdown: cancels or cleanups still under way were stopped; they run again at the next start with a durable SLUICE_STATE_DIR",
			"jobs", n, "timeout", s.cfg.ShutdownTimeout)
	}
	stopSettle()
	stopLoops()
	stopAdmin()
	if !adminDone {
		keep(<-adminErr)
	}
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	s.log.Info("sluice stopped")
	return runErr
}

// flushWait bounds how long a shutdown waits for the job manager's round
// under way and its flush of job state. A state volume whose writes hang
// would otherwise keep sluice from exiting until the kubelet kills it at
// the end of the grace period, without a word of what was lost. It allows
// two commits (the round's and the flush's), each as slow as a healthy
// store's slowest.
const flushWait = 10 * time.Second

// adminCloseWait bounds the admin port's close, the shutdown's last step.
const adminCloseWait = 5 * time.Second

// ShutdownBound is the longest a shutdown takes with cfg: the drain
// (SLUICE_SHUTDOWN_TIMEOUT, in which cancels and cleanups under way also
// finish), the flush of job state (given up on after flushWait) and the
// admin port's close. A pod's termination grace period must exceed it, or
// the kubelet kills sluice before it has said what it gave up on.
func ShutdownBound(cfg Config) time.Duration {
	return cfg.ShutdownTimeout + flushWait + adminCloseWait
}

// StartLoops starts, for a Server used through its handlers rather than
// Serve, the control loop, the job manager and the credential
// refresher. The func it returns wakes anything still queued, stops them and
// flushes job state, giving up on a state store that has not answered in
// flushWait.
func (s *Server) StartLoops() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	loops.Go(func() { s.controlLoop(ctx) })
	loops.Go(func() { s.jobs.Run(ctx) })
	loops.Go(func() { s.admin.RunHistory(ctx) })
	if s.auth != nil {
		loops.Go(func() { s.auth.Start(ctx) })
	}
	loops.Go(func() { s.runFleet(ctx) })
	return func() {
		s.closeWaits()
		s.proxy.Close()
		cancel()
		flushed := make(chan error, 1)
		go func() {
			loops.Wait()
			flushed <- s.jobs.Close()
		}()
		t := time.NewTimer(flushWait)
		defer t.Stop()
		select {
		case err := <-flushed:
			if err != nil {
				s.log.Error("flushing job state", "err", err)
			}
		case <-t.C:
			s.log.Error("shutdown: job state not flushed, the job loop or the state store has not finished; job changes since the store's last write are saved only if it answers before the process exits",
				"wait", flushWait, "state_dir", s.cfg.StateDir)
		}
	}
}

// closeWaits begins a shutdown's drain: the writes waiting for a send
// slot, the store's or a throttled scope's, or for their held job's probe
// slot, are refused at once (and any that would wait later).
func (s *Server) closeWaits() {
	s.lim.Close()
	if s.scopes != nil {
		s.scopes.Close()
	}
	s.jobs.Drain()
}

// controlLoop steps the controller every SLUICE_CONTROL_INTERVAL. It is also
// sluice's heartbeat: it never waits on the store.
func (s *Server) controlLoop(ctx context.Context) {
	// The period is jittered (±10%) so that sidecars sharing a store do
	// not step their controllers in lockstep.
	t := time.NewTimer(s.lim.TickInterval())
	defer t.Stop()
	s.lim.Tick(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.lim.Tick(now)
			if s.scopes != nil {
				s.scopes.Tick(now)
			}
			t.Reset(s.lim.TickInterval())
		}
	}
}

// redactURL is a URL as sluice shows it: without secrets.
func redactURL(raw string) string { return redact.URL(raw) }

// serveUntil runs srv until ctx ends, then shuts it down gracefully within
// timeout, with a fresh context; past the timeout it closes what is left
// and returns context.DeadlineExceeded.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Past the drain timeout: cut what is left rather than hang.
		_ = srv.Close()
	}
	<-errc
	return err
}

// proxyConfig is the proxy's configuration from SLUICE_* variables.
func proxyConfig(c *Config) (proxy.Config, error) {
	up, err := url.Parse(c.UpstreamURL)
	if err != nil {
		return proxy.Config{}, fmt.Errorf("sidecar: SLUICE_UPSTREAM_URL: %w", err)
	}
	profile, err := classify.ParseProfile(c.Profile)
	if err != nil {
		return proxy.Config{}, fmt.Errorf("sidecar: SLUICE_PROFILE: %w", err)
	}
	return proxy.Config{
		Upstream:        up,
		PreserveHost:    c.PreserveHost,
		Profile:         profile,
		ScopeRules:      c.scopeRules(),
		BytesCost:       c.RateUnit == "bytes",
		Reject:          c.Backpressure == "reject",
		Timeout:         c.UpstreamTimeout,
		AnswerTimeout:   c.AnswerTimeout,
		QueueTimeout:    c.QueueTimeout,
		DefaultJob:      c.Job,
		RetryMax:        c.RetryMax,
		RetryPost:       c.RetryPost,
		RetryBodyMax:    int64(c.RetryBodyMax),
		RetryBackoffMin: c.RetryBackoffMin,
		RetryBackoffMax: c.RetryBackoffMax,
		MaxRetryAfter:   c.MaxRetryAfter,
		RetryBudget:     c.RetryBudget,
		Pipeline:        c.Pipeline,
		CAFile:          c.UpstreamCAFile,
		MaxConcurrency:  c.MaxConcurrency,
		MaxIdleConns:    c.MaxIdleConns,
		HoldMax:         c.HoldMax,
		PushbackStatus:  c.PushbackStatus,
	}, nil
}
