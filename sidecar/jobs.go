package sidecar

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// jobsConfig is the job manager's configuration from SLUICE_* variables.
func (s *Server) jobsConfig(store state.Store, reg prometheus.Registerer) state.Config {
	c := s.cfg
	auto := c.AutoCancel
	// Validated with the configuration (validateStallRemedies).
	causes, _ := state.ParseStallCauses(c.AutoCancelCauses)
	streamCauses, _ := state.ParseStallCauses(c.DefaultJobAutoCancelCauses)
	defaults := state.Settings{
		StallAfter:       c.StallAfter,
		CancelGrace:      c.CancelGrace,
		Deadline:         c.JobDeadline,
		AutoCancel:       &auto,
		AutoCancelCauses: causes,
		Cancel:           actionFromEnv(c.CancelURL, c.CancelMethod, c.CancelCommand),
		Cleanup:          actionFromEnv(c.CleanupURL, c.CleanupMethod, c.CleanupCommand),
	}
	retries := c.ActionRetries
	if retries == 0 {
		// SLUICE_ACTION_RETRIES=0 is no retry; state.Config takes 0 as
		// its default (5) and a negative count as none.
		retries = -1
	}
	return state.Config{
		Store:                      store,
		Defaults:                   defaults,
		DefaultJob:                 c.Job,
		DefaultJobAutoCancelCauses: streamCauses,
		DefaultJobPriority:         c.DefaultJobPriority,
		MaxJobs:                    c.MaxJobs,
		ActionTimeout:              c.ActionTimeout,
		ActionRetries:              retries,
		Retention:                  c.JobRetention,
		CheckpointsRetained:        c.CheckpointsRetained,
		ProbeURL:                   c.ProgressProbeURL,
		ProbePointer:               c.ProgressProbePtr,
		Logger:                     s.log, // the manager scopes it
		Registerer:                 reg,
	}
}

// actionFromEnv builds the default cancel or cleanup action; nil when none
// is configured (the step is then recorded as skipped).
func actionFromEnv(u, method, command string) *state.ActionSpec {
	switch {
	case u != "":
		return &state.ActionSpec{Kind: "http", Method: method, URL: u}
	case command != "":
		argv, err := ParseArgv(command) // validated with the configuration
		if err != nil {
			return nil
		}
		return &state.ActionSpec{Kind: "command", Argv: argv}
	}
	return nil
}

// jobsAdapter lets the proxy report to the job manager.
type jobsAdapter struct {
	m *state.Manager
	// maxRetryAfter is SLUICE_MAX_RETRY_AFTER: the longest Retry-After
	// a job's backoff honours, as the limiter and the proxy's re-sends
	// do. Uncapped, a store's Retry-After: 3600 would hold the job's
	// writes (up to the state machine's own bound) long after sluice
	// sends again.
	maxRetryAfter time.Duration
}

// Admit admits a write for job. A write still waiting for its held job's
// probe slot when the drain begins (Server.closeWaits) is refused with
// limiter.ErrClosed, as one waiting in the limiter's queue is: admitted
// later it would get no permit anyway, and its slot may come after the
// drain, when its connection is cut.
func (a jobsAdapter) Admit(ctx context.Context, job string, maxWait time.Duration) (context.Context, func(), error) {
	actx, release, err := a.m.AdmitWithin(ctx, job, maxWait)
	if errors.Is(err, state.ErrDraining) {
		return nil, nil, limiter.ErrClosed
	}
	return actx, release, err
}

// FlowSettings lets the proxy place a registered job's writes in the
// limiter's fair queue (proxy.FlowSettings).
func (a jobsAdapter) FlowSettings(job string) (float64, string) { return a.m.FlowSettings(job) }

func (a jobsAdapter) Observe(job string, o proxy.Observation) {
	if o.Abandoned {
		a.m.Observe(job, state.Observation{Kind: state.ObsAbandoned, Items: -1})
		return
	}
	kind := obsKind(o.Kind)
	a.m.Observe(job, state.Observation{Kind: kind, Bytes: o.Bytes, Items: o.Items, RetryAfter: min(o.RetryAfter, a.maxRetryAfter)})
	if kind == state.ObsThrottled && o.Items > 0 {
		// A partially throttled bulk write also acknowledged items: that is
		// progress (it keeps the job from stalling, and a running or
		// throttled job from being held; a held job's hold ends only with
		// its probe).
		a.m.Observe(job, state.Observation{Kind: state.ObsOK, Bytes: o.Bytes, Items: o.Items})
	}
}

// obsKind is the one place where the proxy's classification of an attempt
// becomes what the job manager knows of it. The two sets match one to one;
// they are separate types so that the job state machine does not
// depend on the store profiles.
func obsKind(k classify.Kind) state.ObsKind {
	switch k {
	case classify.OK:
		return state.ObsOK
	case classify.Throttled:
		return state.ObsThrottled
	case classify.Overloaded:
		return state.ObsOverloaded
	case classify.Timeout:
		return state.ObsTimeout
	case classify.ServerError:
		return state.ObsServerError
	case classify.Unreachable:
		return state.ObsUnreachable
	case classify.ClientError:
		return state.ObsClientError
	}
	return 0 // no kind: the manager ignores it
}
