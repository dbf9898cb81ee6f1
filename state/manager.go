package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sluice-dev/sluice/limiter"
)

// Config configures a Manager. Zero fields take the Default* values.
type Config struct {
	// Store keeps the job records; nil means an in-memory store. The
	// Manager owns it and closes it in Close.
	Store Store
	// Defaults are inherited by every job's Settings. Defaults with nil
	// AutoCancelCauses take DefaultAutoCancelCauses.
	Defaults Settings
	// DefaultJob is the job of writes that name none: a stream (see
	// Policy.Stream); "" means no job is one.
	DefaultJob string
	// DefaultJobAutoCancelCauses are the stall causes that cancel the
	// default job (which then cleans up and reopens) unless its own
	// settings say otherwise; nil or empty: none, a stall of the stream
	// only alerts.
	DefaultJobAutoCancelCauses []StallCause
	// DefaultJobPriority is the default job's priority class unless its
	// own settings say otherwise: PriorityLive or PriorityBulk; "" is bulk.
	DefaultJobPriority string
	// MaxJobs bounds the non-terminal jobs. At the bound, a new job takes
	// the place of the job idle the longest (whose record is forgotten:
	// it is neither cancelled nor cleaned up), and is refused only if no
	// job is idle.
	MaxJobs int
	// ActionTimeout bounds each attempt of a cancel or cleanup action and
	// each progress probe.
	ActionTimeout time.Duration
	// ActionRetries is the number of retries after a failed first attempt;
	// 0 means DefaultActionRetries, negative means none.
	ActionRetries int
	// Retention is how long terminal jobs are kept before being pruned from
	// the store, memory and metrics; of more than MaxJobs, the ones that
	// ended first are pruned at the next tick, failed ones last.
	Retention time.Duration
	// CheckpointsRetained is how many loader checkpoints a job keeps.
	CheckpointsRetained int
	// ProbeURL and ProbePointer are the default progress probe (see
	// Settings); ProbeInterval is how often it runs.
	ProbeURL, ProbePointer string
	ProbeInterval          time.Duration
	// QuietAfter, BackoffAfter, BackoffQuiet, BackoffMin and BackoffMax tune the machine
	// (see Policy).
	QuietAfter             time.Duration
	BackoffAfter           int
	BackoffQuiet           time.Duration
	BackoffMin, BackoffMax time.Duration

	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
	Now        func() time.Time      // nil: time.Now; must agree with the runtime's timers
	HTTPClient *http.Client          // for actions and probes; nil: a client without redirects
	Rand       func() float64        // jitter source in [0, 1), called from several goroutines at once; nil: math/rand/v2
}

// Manager owns the jobs: it steps their machines with the proxy's
// observations, the admin API's requests and a one-second tick, commits each
// transition to the Store before starting its actions, runs the cancel and
// cleanup actions in its own goroutines, flushes progress every tick and
// prunes expired terminal jobs. All methods are safe for concurrent use.
//
// A runtime store error (disk full) does not stop anything: the job goes on
// in memory, the error is logged (throttled) and counted in
// sluice_state_write_errors_total, and the record is written again at the
// next tick. A cancel is the exception: it takes effect only once its
// record is committed (see Cancel), because one that a restart forgot would
// leave the job running while its loader was told it is cancelled. A store
// that hangs holds the tick; a write waits for it at most a second for each
// change of its job's state (finishWrite), and a request from outside at
// most requestWait (storeRequest, finishWithin).
type Manager struct {
	mu     sync.Mutex
	jobs   map[string]*entry
	live   int // non-terminal jobs, and reopens being committed (proposal.reopens)
	closed bool
	// draining: a shutdown's drain began; a write that would wait for
	// its held job's probe slot is refused (Drain).
	draining bool
	// forgotten are idle jobs dropped to make room (makeRoomLocked) whose
	// records are still to be deleted from the store.
	forgotten []string

	cfg      Config
	defaults Settings
	store    Store
	log      *slog.Logger
	met      *metrics
	now      func() time.Time
	rnd      func() float64
	run      runner

	// storeMu serialises store writes, and requests with them; taken
	// before mu.
	storeMu storeLock

	ctx    context.Context // actions and probes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	errLog   rate.Sometimes
	deferLog rate.Sometimes // deferredWrite's

	// heartbeat is the time of the last round Run finished (Unix
	// nanoseconds; 0 before Run): a round held up by a state store write
	// that hangs stops stall detection, cancels and persistence while the
	// proxy still serves. Actions and probes run outside the round.
	heartbeat atomic.Int64
}

// entry is a job and what the Manager keeps beside its machine. All fields
// require that Manager.mu is held.
type entry struct {
	job          *Job
	settings     Settings // as given; merged with the defaults into job's policy
	totals       Totals
	loader       LoaderProgress
	lastProgress time.Time
	checkpoints  []Checkpoint
	cpSeq        uint64 // last checkpoint sequence number handed out
	durableSeq   uint64 // last checkpoint sequence number committed
	win          rateWindow
	winSince     time.Time // when win began counting: the job's creation, or its restore
	total        Total     // declared by the loader or an operator; zero: none
	// recordsFell: the loader's last report counted fewer records than
	// the one before; the next one that counts more clears it. Not kept
	// in the record: after a restart the next rise is taken as it comes.
	recordsFell bool

	abortCtx context.Context // cancelled when in-flight writes must stop
	abort    context.CancelCauseFunc
	inflight int
	changed  chan struct{} // closed and replaced when the job changes
	waiters  int
	running  [2]bool // cancel, cleanup action goroutine under way
	// drainCancel: the cancel action waits for inflight to reach 0; the
	// release that brings it there starts the action.
	drainCancel bool

	version, flushed uint64 // record versions: latest in memory, latest committed
	// proposed: a cancel or reopen of the job is being committed
	// (commitProposalsLocked), with m.mu released. Such a job is not
	// idle for makeRoomLocked even if its state still says so: its
	// record is about to say cancelling, and forgetting it would lose
	// the cancel and its cleanup.
	proposed bool
	// reopened is the record version that says the job reopened (a
	// stream, after its cleanup). Until it is committed the record says
	// cleaning, and a restart would run the cleanup again over what the
	// new run wrote: the job's writes wait until then.
	reopened uint64

	probeInflight bool
	probeNext     time.Time
	probeHave     bool
}

// effects are the I/O that Steps under the lock asked for, performed after
// it is released: commit first, then run.
type effects struct {
	ids  []string // jobs whose record to commit
	runs []runReq
}

// proposal is a step that cancels a job (or forces a cancel under way, or
// keeps a stream from reopening), or reopens one, tried on a copy of the
// job's machine. It is applied to the job only once rec is committed, so
// that nothing is aborted, no action runs and no write is admitted on the
// strength of a request that a restart would forget.
type proposal struct {
	e    *entry
	ev   Event
	now  time.Time
	base uint64 // e.version when tried
	rec  Record // the job's record after ev
	// again is the request as recorded, for a job that moved
	// (observations, ticks) while rec was being written.
	again Event
	// reopens: the job is counted in Manager.live from the try, so that
	// no new job takes its place under MaxJobs while rec is written.
	reopens bool
	// err: the job moved to a state that refuses again (a forced cancel
	// of a job whose cancel failed meanwhile); the request is not done.
	err error
}

type runReq struct {
	id      string
	act     Action
	spec    *ActionSpec
	retries int
}

// NewManager loads the records from cfg.Store. Jobs that were cancelling or
// cleaning resume their action at once; every job's stall timers restart from
// now, so a restart never cancels a job by itself.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		cfg.Store = &MemStore{}
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = DefaultMaxJobs
	}
	if cfg.ActionTimeout <= 0 {
		cfg.ActionTimeout = DefaultActionTimeout
	}
	switch {
	case cfg.ActionRetries == 0:
		cfg.ActionRetries = DefaultActionRetries
	case cfg.ActionRetries < 0:
		cfg.ActionRetries = 0
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.CheckpointsRetained <= 0 {
		cfg.CheckpointsRetained = DefaultCheckpointsRetained
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.QuietAfter <= 0 {
		cfg.QuietAfter = DefaultQuietAfter
	}
	if cfg.BackoffAfter <= 0 {
		cfg.BackoffAfter = DefaultBackoffAfter
	}
	if cfg.BackoffQuiet <= 0 {
		cfg.BackoffQuiet = DefaultBackoffQuiet
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	d := cfg.Defaults
	if d.ProbeURL == "" {
		d.ProbeURL, d.ProbePointer = cfg.ProbeURL, cfg.ProbePointer
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("state: default settings: %w", err)
	}
	if d.StallAfter <= 0 {
		d.StallAfter = DefaultStallAfter
	}
	if d.CancelGrace <= 0 {
		d.CancelGrace = DefaultCancelGrace
	}
	if d.AutoCancel == nil {
		t := true
		d.AutoCancel = &t
	}
	if d.AutoCancelCauses == nil {
		d.AutoCancelCauses = DefaultAutoCancelCauses()
	}
	if cfg.DefaultJob != "" && !ValidJobID(cfg.DefaultJob) {
		return nil, fmt.Errorf("state: default job: %w: %q", ErrInvalidJobID, cfg.DefaultJob)
	}
	if cfg.DefaultJobPriority != "" && !ValidPriority(cfg.DefaultJobPriority) {
		return nil, fmt.Errorf("state: default job priority %q is not %q or %q", cfg.DefaultJobPriority, PriorityLive, PriorityBulk)
	}
	for _, c := range cfg.DefaultJobAutoCancelCauses {
		if _, err := ParseStallCause(string(c)); err != nil {
			return nil, fmt.Errorf("state: default job's auto-cancel causes: %w", err)
		}
	}

	m := &Manager{
		storeMu:  newStoreLock(),
		jobs:     make(map[string]*entry),
		cfg:      cfg,
		defaults: d,
		store:    cfg.Store,
		log:      cfg.Logger.With("component", "jobs"),
		now:      cfg.Now,
		rnd:      cfg.Rand,
		run:      runner{client: cfg.HTTPClient, timeout: cfg.ActionTimeout, now: cfg.Now},
		errLog:   rate.Sometimes{First: 1, Interval: 10 * time.Second},
		deferLog: rate.Sometimes{First: 1, Interval: time.Minute},
	}
	met, err := newMetrics(cfg.Registerer, m)
	if err != nil {
		return nil, err
	}
	m.met = met

	recs, err := cfg.Store.Load()
	if err != nil {
		return nil, err
	}
	now := m.now()
	var fx effects
	// Under mu: the collector registered above may be collecting already
	// (a registry shared with the caller's own, scraped meanwhile).
	m.mu.Lock()
	for _, r := range recs {
		if !ValidJobID(r.ID) || r.State >= numStates {
			m.mu.Unlock()
			return nil, fmt.Errorf("state: stored record %q has an invalid id or state %d", r.ID, r.State)
		}
		e := m.newEntry(RestoreJob(r.ID, r.MachineState, m.policy(r.ID, r.Settings), now, m.rnd), r.Settings)
		e.totals, e.loader, e.lastProgress, e.checkpoints = r.Totals, r.Loader, r.LastProgress, r.Checkpoints
		e.winSince = now // the rate window is not stored: it counts from here
		if r.Total != nil {
			e.total = *r.Total
		}
		for _, c := range r.Checkpoints {
			e.cpSeq = max(e.cpSeq, c.Seq)
		}
		e.durableSeq = e.cpSeq
		e.version, e.flushed = 1, 1
		// An older record read in today's terms (RestoreJob): say so once
		// and write it back as it now is.
		for _, t := range e.job.TakeTransitions() {
			m.log.Info("job transition", "job", r.ID, "from", t.From.String(), "to", t.To.String(), "reason", t.Reason)
			m.met.transitions.WithLabelValues(t.From.String(), t.To.String()).Inc()
		}
		if e.job.State != r.State || e.job.StallCause != r.StallCause {
			e.version++
			fx.ids = append(fx.ids, r.ID)
		}
		m.jobs[r.ID] = e
		if !r.State.Terminal() {
			m.live++
		}
		if acts := e.job.Resume(); len(acts) > 0 {
			m.actLocked(e, acts, &fx)
			m.log.Info("job action resumed", "job", r.ID, "state", r.State.String())
		}
	}
	m.mu.Unlock()
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.finish(fx)
	return m, nil
}

func (m *Manager) newEntry(j *Job, s Settings) *entry {
	e := &entry{job: j, settings: s, winSince: j.Created, changed: make(chan struct{})}
	e.abortCtx, e.abort = context.WithCancelCause(context.Background())
	return e
}

// defaultsFor returns the defaults that job id's settings inherit: the
// default job, a stream, has its own auto-cancel causes and no deadline.
func (m *Manager) defaultsFor(id string) Settings {
	d := m.defaults
	if id == m.cfg.DefaultJob {
		d.AutoCancelCauses = append([]StallCause{}, m.cfg.DefaultJobAutoCancelCauses...)
	}
	return d
}

// policy resolves job id's settings s against the defaults.
func (m *Manager) policy(id string, s Settings) Policy {
	eff := s.merge(m.defaultsFor(id))
	stream := id == m.cfg.DefaultJob
	deadline := max(eff.Deadline, 0)
	if stream {
		deadline = 0 // a stream never ends by itself
	}
	p := Policy{
		StallAfter:        eff.StallAfter,
		CancelGrace:       eff.CancelGrace,
		Deadline:          deadline,
		AutoCancel:        *eff.AutoCancel,
		AutoCancelCauses:  slices.Clone(eff.AutoCancelCauses),
		HeartbeatInterval: max(eff.HeartbeatInterval, 0),
		Probed:            eff.ProbeURL != "",
		Stream:            stream,
		QuietAfter:        m.cfg.QuietAfter,
		BackoffAfter:      m.cfg.BackoffAfter,
		BackoffQuiet:      m.cfg.BackoffQuiet,
		Backoff:           limiter.Backoff{Min: m.cfg.BackoffMin, Max: m.cfg.BackoffMax},
	}
	return p
}

// Run drives the Manager: every second it steps each job with a tick (stall
// detection, grace, deadlines, quiet periods), starts due progress probes,
// flushes changed records and prunes expired terminal jobs. It returns when
// ctx ends, after a last flush. Actions under way continue until Close.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	m.heartbeat.Store(m.now().UnixNano()) // a first round that hangs shows too
	for {
		select {
		case <-ctx.Done():
			m.flush()
			return
		case <-t.C:
			now := m.now()
			m.Tick(now)
			m.heartbeat.Store(now.UnixNano())
		}
	}
}

// Heartbeat is the time of the last round Run finished, or the zero time
// before Run starts: the liveness of the job manager's loop.
func (m *Manager) Heartbeat() time.Time {
	if ns := m.heartbeat.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Tick does one round of Run's work at time now. Run calls it every second;
// it is exported for tests and for callers with their own loop.
//
// A cancel that the tick decides (stall grace, deadline) is applied only
// once its record is committed: while the store fails, the job stays as it
// is and every tick tries again.
func (m *Manager) Tick(now time.Time) {
	var fx effects
	var finished []*entry
	var cancels []*proposal
	type probe struct {
		e            *entry
		id, url, ptr string
	}
	var probes []probe
	m.storeMu.Lock()
	m.mu.Lock()
	for id, e := range m.jobs {
		if e.job.State.Terminal() {
			finished = append(finished, e)
			continue
		}
		if p, _ := m.tryLocked(e, Event{Type: EvTick}, now, &fx); p != nil {
			cancels = append(cancels, p)
			continue
		}
		if !e.job.State.Accepting() || e.probeInflight || now.Before(e.probeNext) {
			continue
		}
		if eff := e.settings.merge(m.defaults); eff.ProbeURL != "" {
			e.probeInflight = true
			e.probeNext = now.Add(m.cfg.ProbeInterval)
			probes = append(probes, probe{e, id, eff.ProbeURL, eff.ProbePointer})
		}
	}
	prune := m.dueLocked(finished, now)
	m.mu.Unlock()
	_ = m.commitProposalsLocked(cancels, &fx)
	m.mu.Lock()
	dirty := m.dirtyLocked()
	m.mu.Unlock()
	_ = m.commitLocked(dirty) // fx.ids are among them
	m.deleteForgottenLocked()
	m.storeMu.Unlock()
	m.start(fx.runs)
	for _, p := range probes {
		m.spawn(func() { m.runProbe(p.e, p.id, p.url, p.ptr) })
	}
	if len(prune) > 0 {
		m.prune(prune)
	}
}

// dirtyLocked returns the jobs whose record changed since its last commit.
func (m *Manager) dirtyLocked() []string {
	var out []string
	for id, e := range m.jobs {
		if e.version > e.flushed {
			out = append(out, id)
		}
	}
	return out
}

func (m *Manager) flush() {
	m.mu.Lock()
	dirty := m.dirtyLocked()
	m.mu.Unlock()
	_ = m.commit(dirty)
}

// deleteForgottenLocked deletes the records of the idle jobs forgotten to
// make room, except those created again since (their new record must
// stay); on a store error they are tried again at the next tick. It
// requires that m.storeMu is held and m.mu is not: no record is committed
// between the check and the delete.
func (m *Manager) deleteForgottenLocked() {
	m.mu.Lock()
	var ids []string
	for _, id := range m.forgotten {
		if m.jobs[id] == nil {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	if len(ids) > 0 {
		if err := m.store.Delete(ids...); err != nil {
			m.writeError(err)
			return
		}
	}
	m.mu.Lock()
	m.forgotten = slices.DeleteFunc(m.forgotten, func(id string) bool { return slices.Contains(ids, id) || m.jobs[id] != nil })
	m.mu.Unlock()
}

// dueLocked returns the finished jobs to prune at now, each with when it
// finished: those kept for Retention, and, of more than MaxJobs, the ones
// that finished first (a loader that names a job per batch and completes
// each would otherwise keep a day of them in memory, in the store and in
// every listing), completed and cancelled ones before failed ones. A
// failed job waits for a human (its alert, its attempts): newer batches
// finishing must not make it vanish. Requires that m.mu is held.
func (m *Manager) dueLocked(finished []*entry, now time.Time) map[string]time.Time {
	var due map[string]time.Time
	over := len(finished) - m.cfg.MaxJobs
	if over > 0 {
		// Sorted only when some must go for their number: every tick
		// walks the finished jobs, and a sort each second is not needed
		// to find those past Retention.
		slices.SortFunc(finished, func(a, b *entry) int {
			if af, bf := a.job.State == Failed, b.job.State == Failed; af != bf {
				if af {
					return 1
				}
				return -1
			}
			return a.job.Since.Compare(b.job.Since)
		})
	}
	for i, e := range finished {
		if i < over || now.Sub(e.job.Since) >= m.cfg.Retention {
			if due == nil {
				due = map[string]time.Time{}
			}
			due[e.job.id] = e.job.Since
		}
	}
	return due
}

// prune deletes the jobs listed by dueLocked that are still as they were
// listed.
func (m *Manager) prune(listed map[string]time.Time) {
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	// The list was made under an earlier lock: a job reopened (or deleted
	// and written again) since is live, or finished again later, and must
	// stay. Under storeMu a terminal job stays as it is (only requests
	// move it).
	m.mu.Lock()
	due := make(map[string]*entry, len(listed))
	for id, since := range listed {
		if e := m.jobs[id]; e != nil && e.job.State.Terminal() && e.job.Since.Equal(since) {
			due[id] = e
		}
	}
	m.mu.Unlock()
	if len(due) == 0 {
		return
	}
	ids := make([]string, 0, len(due))
	for id := range due {
		ids = append(ids, id)
	}
	if err := m.store.Delete(ids...); err != nil {
		m.writeError(err)
		return // retried at the next tick
	}
	m.mu.Lock()
	for id, e := range due {
		if m.jobs[id] == e {
			delete(m.jobs, id)
			m.log.Info("job pruned", "job", id)
		}
	}
	m.mu.Unlock()
}

// Drain begins a shutdown's drain: a write that waits, or would wait, for
// its held job's probe slot gets ErrDraining at once, since the drain may
// end before its slot comes. Writes admitted already, and writes to jobs
// that are not held, go on as before.
func (m *Manager) Drain() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.draining = true
	m.wakeWaitersLocked()
}

// wakeWaitersLocked wakes every admission waiting for its job to change,
// to look again. Requires that m.mu is held.
func (m *Manager) wakeWaitersLocked() {
	for _, e := range m.jobs {
		if e.waiters > 0 {
			close(e.changed)
			e.changed = make(chan struct{})
		}
	}
}

// Settle waits until no job is cancelling or cleaning, or until ctx ends,
// and returns how many still are. A sidecar stops when its loader exits,
// and a loader told by the cancel's 409 that its job is over exits at
// once: closing then would cut off the cancel and cleanup it had set off,
// and without a durable SLUICE_STATE_DIR (an emptyDir goes with the pod)
// nothing would run them again. Run must go on meanwhile: an action's next
// step is started as the last one ends.
func (m *Manager) Settle(ctx context.Context) int {
	t := time.NewTicker(settlePoll)
	defer t.Stop()
	for {
		n := m.unsettled()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
}

// settlePoll is how often Settle looks again: an action's end is not
// signalled, and a shutdown waiting a twentieth of a second more for it is
// of no account.
const settlePoll = 50 * time.Millisecond

// unsettled returns the number of jobs cancelling or cleaning.
func (m *Manager) unsettled() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, e := range m.jobs {
		if e.job.State == Cancelling || e.job.State == Cleaning {
			n++
		}
	}
	return n
}

// Close stops running actions and probes (an interrupted action resumes at
// the next start, since the job's record still says cancelling or
// cleaning), flushes every record, deletes those of idle jobs forgotten
// since the last tick, and closes the store.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.wakeWaitersLocked()
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	dirty := m.dirtyLocked()
	m.mu.Unlock()
	err := m.commit(dirty)
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	// Idle jobs forgotten since the last tick: their records would bring
	// them back at the next start.
	m.deleteForgottenLocked()
	return errors.Join(err, m.store.Close())
}

// stepLocked steps e's machine, logs and counts its transitions, wakes
// waiters, and adds the I/O it asked for to fx. It requires that m.mu is
// held.
func (m *Manager) stepLocked(e *entry, ev Event, now time.Time, fx *effects) ([]Action, error) {
	before := e.job.State
	acts, err := e.job.Step(ev, now)
	m.steppedLocked(e, before, ev, acts, err, fx)
	return acts, err
}

// steppedLocked is the rest of stepLocked, once e.job has taken ev from
// state before. It requires that m.mu is held.
func (m *Manager) steppedLocked(e *entry, before State, ev Event, acts []Action, err error, fx *effects) {
	for _, t := range e.job.TakeTransitions() {
		m.log.Info("job transition", "job", e.job.ID(), "from", t.From.String(), "to", t.To.String(), "reason", t.Reason)
		m.met.transitions.WithLabelValues(t.From.String(), t.To.String()).Inc()
	}
	switch {
	case !before.Terminal() && e.job.State.Terminal():
		m.live--
	case before.Terminal() && !e.job.State.Terminal(): // reopened
		m.live++
	}
	switch ev.Type {
	case EvAdmit, EvRelease, EvTick:
		if len(acts) > 0 && acts[0] != ActHold {
			e.version++
		}
	default:
		if err == nil {
			e.version++
		}
	}
	if e.waiters > 0 && (ev.Type != EvAdmit || before != e.job.State) {
		close(e.changed)
		e.changed = make(chan struct{})
	}
	m.actLocked(e, acts, fx)
}

// tryLocked steps e's machine with ev (EvCancel, EvReopen or EvTick) on a
// copy. A step that cancels the job, forces a cancel under way, keeps a
// stream from reopening, or reopens the job, changes nothing yet: it is
// returned as a proposal for commitProposalsLocked. Any other step becomes
// the job's at once, with its effects added to fx. It requires that m.mu
// and m.storeMu are held: storeMu keeps every other request, and every
// commit, from coming between the try and the apply.
func (m *Manager) tryLocked(e *entry, ev Event, now time.Time, fx *effects) (*proposal, error) {
	next := e.job.clone()
	before := e.job.State
	acts, err := next.Step(ev, now)
	cancels := before.Accepting() && next.State == Cancelling ||
		next.Force && !e.job.Force || e.job.Reopen && !next.Reopen && !next.State.Accepting()
	reopens := before.Terminal() && !next.State.Terminal()
	if err == nil && (cancels || reopens) {
		rec := m.recordLocked(e)
		rec.MachineState = next.Snapshot()
		again := Event{Type: EvCancel, Force: next.Force, Reopen: next.Reopen, Reason: next.Reason}
		if reopens {
			again = Event{Type: EvReopen, Reason: next.Reason}
		}
		e.proposed = true
		if reopens {
			m.live++ // its place, held until applied or given up
		}
		return &proposal{e: e, ev: ev, now: now, base: e.version, rec: rec, again: again, reopens: reopens}, nil
	}
	e.job = next
	m.steppedLocked(e, before, ev, acts, err, fx)
	return nil, err
}

// commitProposalsLocked commits the records of proposed cancels and
// reopens in one transaction and only then applies them to their jobs,
// adding the effects (abort the in-flight writes, run the cancel action,
// take writes again) to fx. If the commit fails, no job changes, nothing
// is aborted or admitted, and the error wraps ErrNotDurable. It requires
// that m.storeMu is held and m.mu is not.
func (m *Manager) commitProposalsLocked(ps []*proposal, fx *effects) error {
	if len(ps) == 0 {
		return nil
	}
	recs := make([]Record, len(ps))
	for i, p := range ps {
		recs[i] = p.rec
	}
	if err := m.store.Put(recs...); err != nil {
		m.writeError(err)
		m.mu.Lock()
		for _, p := range ps {
			p.e.proposed = false
			if p.reopens {
				m.live--
			}
		}
		m.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		e := p.e
		e.proposed = false
		if p.reopens {
			m.live-- // counted again as the job leaves its terminal state
		}
		// The committed record holds the checkpoints the job had when
		// tried: they are durable now. A job applied as tried is not
		// committed again, so nothing else would say so.
		for _, c := range p.rec.Checkpoints {
			e.durableSeq = max(e.durableSeq, c.Seq)
		}
		if e.version == p.base {
			// Nothing changed the job's record while it was written, and the
			// machine is deterministic: the same step gives the state
			// committed, unless a write was admitted or released meanwhile
			// (neither changes the record, but a tick's verdict reads the
			// writes in flight and the loader's last write). The step is
			// tried on a copy, so that such a job is not left in a state
			// its record does not say.
			next := e.job.clone()
			before := e.job.State
			acts, err := next.Step(p.ev, p.now)
			if err == nil && next.State == p.rec.State && next.Force == p.rec.Force && next.Reopen == p.rec.Reopen {
				e.job = next
				m.steppedLocked(e, before, p.ev, acts, err, fx)
				e.flushed = e.version
				continue
			}
		}
		// The job moved meanwhile (its writes went on, say). The record
		// says it is cancelled (or reopened), so it is; its newer record is
		// written next.
		if _, err := m.stepLocked(e, p.again, m.now(), fx); err != nil {
			m.log.Warn("committed request not applicable", "job", e.job.ID(), "event", p.again.Type.String(), "err", err)
			p.err = err
		}
		fx.ids = append(fx.ids, e.job.ID())
	}
	return nil
}

// actLocked turns actions into effects. It requires that m.mu is held.
func (m *Manager) actLocked(e *entry, acts []Action, fx *effects) {
	for _, a := range acts {
		switch a {
		case ActPersist:
			fx.ids = append(fx.ids, e.job.ID())
		case ActAbortInflight:
			// Only a committed cancel gets here (commitProposalsLocked, or
			// a cancelling record loaded at start). A stream that reopens
			// tells its loader to send again, not to drop.
			var cause error = &NotAcceptingError{Job: e.job.ID(), State: e.job.State, Reason: e.job.Reason}
			if e.job.Reopen {
				cause = &ReopeningError{Job: e.job.ID(), State: e.job.State}
			}
			e.abort(cause)
		case ActReopen:
			// The last run's writes were aborted for good; the new run's
			// must not be.
			e.abortCtx, e.abort = context.WithCancelCause(context.Background())
			e.drainCancel = false
			e.reopened = e.version
		case ActRunCancel:
			if e.inflight > 0 {
				// Aborted writes not yet sent end at once; one already
				// sent cannot be recalled and ends with its real answer
				// (bounded by the proxy's upstream timeout). The cancel
				// waits for all of them, so that none lands after it.
				e.drainCancel = true
				m.log.Info("job cancel waits for in-flight writes", "job", e.job.ID(), "in_flight", e.inflight)
				continue
			}
			m.runLocked(e, a, fx)
		case ActRunCleanup:
			m.runLocked(e, a, fx)
		}
	}
}

// runLocked adds a run of action a (ActRunCancel or ActRunCleanup) to fx
// unless one is under way. It requires that m.mu is held.
func (m *Manager) runLocked(e *entry, a Action, fx *effects) {
	i := 0
	eff := e.settings.merge(m.defaults)
	spec := eff.Cancel
	if a == ActRunCleanup {
		i, spec = 1, eff.Cleanup
	}
	if e.running[i] {
		return
	}
	e.running[i] = true
	fx.runs = append(fx.runs, runReq{id: e.job.ID(), act: a, spec: spec, retries: m.cfg.ActionRetries})
}

// finish performs effects: the records are committed before any action
// starts. It returns the commit's error; the actions start regardless: a
// cancel's own record is committed before it has any effect
// (commitCancelsLocked), and a later transition's record (cleaning, say)
// that could not be written is retried at the next tick, while a restart
// in between only runs the idempotent action again.
func (m *Manager) finish(fx effects) error {
	err := m.commit(fx.ids)
	m.start(fx.runs)
	return err
}

// writeWait bounds how long a write waits for the records of the
// transitions it caused (finishWrite).
const writeWait = time.Second

// requestWait bounds how long a request from outside (the admin API's, a
// loader's registration and progress reports) waits for the state store: a
// state volume that hangs would otherwise hold the request, and the HTTP
// call behind it, for as long as it hangs. It is longer than a write's
// bound, since a request that runs out answers an error, and as long as
// a healthy store's slowest commit (an fsync on a busy disk) may take.
const requestWait = 5 * time.Second

// finishWithin is finish within wait: it returns an error wrapping
// ErrStoreSlow when the store's lock is not taken within wait, or the
// commit has not ended by then. The records stay changed, so the commit
// under way or the next tick writes them; the actions start once their
// records are committed, as with finish.
func (m *Manager) finishWithin(fx effects, wait time.Duration) error {
	// Records written already (a total or a complete repeated after its
	// commit) need nothing of a store that may not answer now. Most writes
	// change no record: they do not take mu again for nothing.
	if len(fx.ids) > 0 {
		m.mu.Lock()
		fx.ids = slices.DeleteFunc(fx.ids, func(id string) bool {
			e := m.jobs[id]
			return e == nil || e.version <= e.flushed
		})
		m.mu.Unlock()
	}
	if len(fx.ids) == 0 {
		m.start(fx.runs)
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	if !m.storeMu.lockWithin(t.C) {
		if len(fx.runs) > 0 {
			m.spawn(func() { _ = m.finish(fx) })
		}
		return fmt.Errorf("%w: a write to it has not returned for %s; the change is kept and saved once it answers", ErrStoreSlow, wait)
	}
	done := make(chan error, 1)
	go func() {
		err := m.commitLocked(fx.ids)
		m.storeMu.Unlock()
		m.start(fx.runs)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w: the change's write has not returned in %s; it is kept and saved once the store answers", ErrStoreSlow, wait)
	}
}

// finishWrite is finish for the proxy's calls (Admit, Observe and the
// release), on a write's path. Their records are committed before the
// write goes on, as finish commits them, so that a job whose writes were
// acknowledged is known after a SIGKILL; but within writeWait: a state
// volume that hangs would otherwise hold every write whose job changes
// state (its first, the first after a stall) for as long as it hangs. Past
// it the write goes on, and the commit, or the next tick, writes the
// records once the store answers. Actions still start only once their
// records are committed (finishWithin).
func (m *Manager) finishWrite(fx effects) {
	if err := m.finishWithin(fx, writeWait); errors.Is(err, ErrStoreSlow) {
		m.deferredWrite()
	}
}

// deferredWrite counts and logs (throttled) a write that went on before
// its job's record was saved.
func (m *Manager) deferredWrite() {
	m.met.deferred.Inc()
	m.deferLog.Do(func() {
		m.log.Warn("state store slower than a second: writes go on before their job's record is saved, and a crash now would lose it", "wait", writeWait)
	})
}

// storeLock is a mutex (storeMu) whose Lock a write can give up on after a
// while (finishWrite), which sync.Mutex cannot.
type storeLock struct{ ch chan struct{} }

func newStoreLock() storeLock { return storeLock{ch: make(chan struct{}, 1)} }

func (l storeLock) Lock() { l.ch <- struct{}{} }

// Unlock panics on a lock not held, as sync.Mutex does, rather than block
// for ever.
func (l storeLock) Unlock() {
	select {
	case <-l.ch:
	default:
		panic("state: unlock of an unlocked store lock")
	}
}

// lockWithin locks l unless timeout fires first; it reports whether it did.
func (l storeLock) lockWithin(timeout <-chan time.Time) bool {
	select {
	case l.ch <- struct{}{}:
		return true
	case <-timeout:
		return false
	}
}

// start runs the actions of runs.
func (m *Manager) start(runs []runReq) {
	for _, r := range runs {
		m.spawn(func() { m.runAction(r) })
	}
}

// spawn runs fn in a goroutine that Close waits for, unless the Manager is
// closed: then the work is left for the next start.
func (m *Manager) spawn(fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn()
	}()
}

// commit writes the current record of each job in ids that changed since
// its last commit, in one store transaction.
func (m *Manager) commit(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	return m.commitLocked(ids)
}

// commitLocked is commit for a caller that holds m.storeMu (and not m.mu).
// The records are read here, under storeMu, so a commit writes the latest
// state and never puts an older one back over a newer one.
func (m *Manager) commitLocked(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	batch := make([]Record, 0, len(ids))
	versions := make(map[string]uint64, len(ids))
	m.mu.Lock()
	for _, id := range ids {
		e := m.jobs[id]
		if _, dup := versions[id]; dup || e == nil || e.version <= e.flushed {
			continue // listed twice, pruned, or written already
		}
		versions[id] = e.version
		batch = append(batch, m.recordLocked(e))
	}
	m.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := m.store.Put(batch...); err != nil {
		m.writeError(err)
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range batch {
		e := m.jobs[r.ID]
		if e == nil {
			continue
		}
		e.flushed = max(e.flushed, versions[r.ID])
		for _, c := range r.Checkpoints {
			e.durableSeq = max(e.durableSeq, c.Seq)
		}
	}
	return nil
}

// writeError counts and logs (throttled) a failed store write. It requires
// that m.storeMu is held.
func (m *Manager) writeError(err error) {
	m.met.writeErrors.Inc()
	m.errLog.Do(func() { m.log.Error("state write failed; keeping jobs in memory and retrying", "err", err) })
}

// recordLocked snapshots e. It requires that m.mu is held.
func (m *Manager) recordLocked(e *entry) Record {
	r := Record{
		ID:           e.job.ID(),
		MachineState: e.job.Snapshot(),
		Settings:     e.settings,
		Totals:       e.totals,
		Loader:       e.loader,
		LastProgress: e.lastProgress,
		Checkpoints:  slices.Clone(e.checkpoints),
	}
	if e.total.Unit != "" {
		t := e.total
		r.Total = &t
	}
	return r
}

// getOrCreateLocked returns the job, creating it in state Pending with
// settings s if absent. It requires that m.mu is held.
func (m *Manager) getOrCreateLocked(id string, s Settings, now time.Time, fx *effects) (*entry, error) {
	if e := m.jobs[id]; e != nil {
		return e, nil
	}
	if m.live >= m.cfg.MaxJobs && !m.makeRoomLocked(id) {
		return nil, fmt.Errorf("%w: %d live jobs, limit %d, none idle; job %q not created", ErrTooManyJobs, m.live, m.cfg.MaxJobs, id)
	}
	e := m.newEntry(NewJob(id, m.policy(id, s), now, m.rnd), s)
	m.jobs[id] = e
	m.live++
	e.version++
	fx.ids = append(fx.ids, id)
	m.log.Info("job created", "job", id)
	return e, nil
}

// makeRoomLocked forgets the job idle the longest (not the default job,
// none with a write in flight or waiting, and none whose cancel is being
// committed) so that job newID may be
// created or reopened under MaxJobs, and reports whether it found one.
// An idle job is one whose loader went away, often without completing it;
// forgetting it cancels nothing and cleans nothing up, and a later write
// for it starts it again. Its record is deleted at the next tick. It
// requires that m.mu is held.
func (m *Manager) makeRoomLocked(newID string) bool {
	var oldest *entry
	for id, e := range m.jobs {
		if e.job.State != Idle || id == m.cfg.DefaultJob || e.inflight > 0 || e.waiters > 0 || e.proposed {
			continue
		}
		if oldest == nil || e.job.Since.Before(oldest.job.Since) {
			oldest = e
		}
	}
	if oldest == nil {
		return false
	}
	id := oldest.job.ID()
	delete(m.jobs, id)
	m.live--
	m.forgotten = append(m.forgotten, id)
	m.log.Info("idle job forgotten to make room", "job", id, "idle_since", oldest.job.Since, "for", newID)
	return true
}

// Admit is called by the proxy before forwarding a write for job id. It
// creates the job if it is new (then pending → running). While the job is
// held (backoff, or stalled after a backoff) it blocks until the job's probe
// slot, with no other write of the job in flight, or a state change,
// honouring ctx. On success it returns a context derived from ctx that is
// cancelled (with a *NotAcceptingError cause) when the job is cancelled,
// and a release func that the proxy must call once the upstream attempt has
// ended (after Observe).
//
// Errors: ErrInvalidJobID, ErrTooManyJobs, *NotAcceptingError (cancelling,
// cleaning or terminal), ErrClosed, ErrDraining (held, once Drain was
// called), or ctx's error while held.
func (m *Manager) Admit(ctx context.Context, id string) (context.Context, func(), error) {
	return m.AdmitWithin(ctx, id, 0)
}

// AdmitWithin is Admit with a bound on how long a held job's write waits
// (the proxy's queue timeout; 0 means no bound). Past it the error wraps
// context.DeadlineExceeded. The bound applies to the wait only, not to the
// context returned.
func (m *Manager) AdmitWithin(ctx context.Context, id string, maxWait time.Duration) (context.Context, func(), error) {
	var waitUntil time.Time
	if maxWait > 0 {
		waitUntil = m.now().Add(maxWait)
	}
	if !ValidJobID(id) {
		return nil, nil, fmt.Errorf("%w: %q", ErrInvalidJobID, id)
	}
	for {
		var fx effects
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, nil, ErrClosed
		}
		now := m.now()
		e, err := m.getOrCreateLocked(id, Settings{}, now, &fx)
		if err != nil {
			m.mu.Unlock()
			return nil, nil, err
		}
		var acts []Action
		if e.reopened > e.flushed {
			// Reopened, not yet recorded (the reopen's commit failed, or
			// is under way): held as while it was cleaned up. Commits
			// (the next tick's) do not wake it: it asks again every second.
			acts = []Action{ActHold}
		} else if acts, err = m.stepLocked(e, Event{Type: EvAdmit}, now, &fx); err != nil {
			m.mu.Unlock()
			m.finishWrite(fx)
			return nil, nil, err
		}
		if slices.Contains(acts, ActHold) {
			// e.job is read under m.mu only: a tick may replace it. A job
			// held without a probe slot (a stream being cleaned up before
			// it reopens) waits for its change, asking again every second.
			if m.draining {
				held := e.job.State
				m.mu.Unlock()
				m.finishWrite(fx)
				return nil, nil, fmt.Errorf("state: job %q held in %s: %w", id, held, ErrDraining)
			}
			ch, wait, held := e.changed, time.Second, e.job.State
			if e.job.Hold {
				wait = e.job.ProbeAt().Sub(now)
			}
			if e.inflight > 0 {
				// The probe waits for the job's writes in flight, whatever
				// the slot; the release of each wakes this one (changed).
				wait = time.Second
			}
			if !waitUntil.IsZero() {
				if !now.Before(waitUntil) {
					m.mu.Unlock()
					m.finishWrite(fx)
					return nil, nil, fmt.Errorf("state: job %q held in %s longer than %v: %w", id, held, maxWait, context.DeadlineExceeded)
				}
				wait = min(wait, waitUntil.Sub(now))
			}
			e.waiters++
			m.mu.Unlock()
			m.finishWrite(fx)
			err := holdWait(ctx, ch, wait)
			m.mu.Lock()
			e.waiters--
			m.mu.Unlock()
			if err != nil {
				return nil, nil, fmt.Errorf("state: job %q held in %s: %w", id, held, err)
			}
			continue
		}
		e.inflight++
		// The probe's release must say so: only it frees the probe slot.
		probe := e.job.Probe()
		actx, cancel := context.WithCancelCause(ctx)
		abortCtx := e.abortCtx
		stop := context.AfterFunc(abortCtx, func() { cancel(context.Cause(abortCtx)) })
		m.mu.Unlock()
		m.finishWrite(fx)
		var once sync.Once
		release := func() {
			once.Do(func() {
				stop()
				cancel(context.Canceled)
				var fx effects
				m.mu.Lock()
				e.inflight--
				_, _ = m.stepLocked(e, Event{Type: EvRelease, Probe: probe}, m.now(), &fx)
				if e.inflight == 0 && e.drainCancel {
					e.drainCancel = false
					m.runLocked(e, ActRunCancel, &fx)
				}
				m.mu.Unlock()
				m.finishWrite(fx)
			})
		}
		return actx, release, nil
	}
}

// holdWait waits for the probe slot (at most a second, then the caller asks
// again), a change of the job, or the end of ctx.
func holdWait(ctx context.Context, changed <-chan struct{}, wait time.Duration) error {
	t := time.NewTimer(min(max(wait, time.Millisecond), time.Second))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-changed:
	case <-t.C:
	}
	return nil
}

// Observe reports the outcome of one upstream attempt for job id. Unknown
// jobs and kinds are ignored (a pruned job's late results).
//
// Call it before the attempt's write is released (as Admit says). An
// outcome does not say which write it is for; it is taken as the probe's
// when the job's probe is in flight, which is right because a held job
// admits its probe only once no other write of it is in flight.
func (m *Manager) Observe(id string, o Observation) {
	var ev Event
	m.mu.Lock()
	e := m.jobs[id]
	if e == nil {
		m.mu.Unlock()
		return
	}
	now := m.now()
	switch o.Kind {
	case ObsOK:
		items := max(o.Items, 0)
		e.totals.Requests++
		e.totals.Bytes += max(o.Bytes, 0)
		e.totals.Items += items
		e.lastProgress = now
		e.win.add(now, 1, max(o.Bytes, 0), items, 0)
		ev = Event{Type: EvProgress}
	case ObsThrottled, ObsOverloaded:
		e.totals.Throttled++
		ev = Event{Type: EvThrottle, RetryAfter: max(o.RetryAfter, 0)}
	case ObsTimeout:
		e.totals.Timeouts++
		ev = Event{Type: EvUpstreamError, Timeout: true}
	case ObsServerError, ObsClientError:
		e.totals.Errors++
		ev = Event{Type: EvUpstreamError}
	case ObsUnreachable:
		e.totals.Errors++
		ev = Event{Type: EvUpstreamError, Cause: CauseUpstreamUnreachable}
	case ObsAbandoned:
		// The store did not answer within the loader's patience.
		e.totals.Timeouts++
		ev = Event{Type: EvUpstreamError, Timeout: true, Abandoned: true}
	default:
		m.mu.Unlock()
		m.errLog.Do(func() { m.log.Warn("unknown observation kind ignored", "job", id, "kind", o.Kind.String()) })
		return
	}
	ev.Probe = e.job.Probe()
	var fx effects
	_, _ = m.stepLocked(e, ev, now, &fx)
	m.mu.Unlock()
	m.finishWrite(fx)
}

// Register creates job id in state pending with settings s, or replaces the
// settings of an existing live job (one created by its first write, say).
// A job that is cancelling, cleaning or terminal is not changed:
// *NotAcceptingError. Invalid settings: an error wrapping ErrInvalid.
func (m *Manager) Register(id string, s Settings) (JobView, error) {
	return m.register(id, s, nil)
}

// RegisterWithTotal is Register that also sets the job's total (SetTotal)
// in the same record: one write, so that a loader registering with its
// size waits for the state store once, and a registration kept in memory
// while the store is slow keeps its total too.
func (m *Manager) RegisterWithTotal(id string, s Settings, t Total) (JobView, error) {
	if err := t.Validate(); err != nil {
		return JobView{}, err
	}
	return m.register(id, s, &t)
}

func (m *Manager) register(id string, s Settings, total *Total) (JobView, error) {
	if !ValidJobID(id) {
		return JobView{}, fmt.Errorf("%w: %q", ErrInvalidJobID, id)
	}
	if err := s.Validate(); err != nil {
		return JobView{}, err
	}
	var fx effects
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return JobView{}, ErrClosed
	}
	now := m.now()
	e, ok := m.jobs[id]
	switch {
	case !ok:
		var err error
		if e, err = m.getOrCreateLocked(id, s, now, &fx); err != nil {
			m.mu.Unlock()
			return JobView{}, err
		}
	case !e.job.State.Accepting():
		err := &NotAcceptingError{Job: id, State: e.job.State, Reason: e.job.Reason} // under mu: an action steps the job
		m.mu.Unlock()
		return JobView{}, err
	default:
		e.settings = s
		e.job.SetPolicy(m.policy(id, s))
		e.job.Registered(now)
		e.version++
		fx.ids = append(fx.ids, id)
	}
	if total != nil && e.total != *total {
		e.total = *total
		e.version++
	}
	v := m.viewLocked(e, now)
	m.mu.Unlock()
	if err := m.finishWithin(fx, requestWait); err != nil {
		return v, fmt.Errorf("state: job %q: registration not durable: %w", id, err)
	}
	return v, nil
}

// ReportProgress records progress reported by the loader for job id (see
// Progress). A report that changes nothing is a heartbeat: the loader is
// alive (see Settings.HeartbeatInterval). A checkpoint is committed before
// ReportProgress returns; if the commit fails the error says so and the
// view still shows the previous durable checkpoint. Errors: ErrNotFound,
// *NotAcceptingError, ErrInvalid.
func (m *Manager) ReportProgress(id string, p Progress) (JobView, error) {
	if p.Records < 0 || p.Bytes < 0 {
		return JobView{}, fmt.Errorf("%w: records %d and bytes %d must not be negative", ErrInvalid, p.Records, p.Bytes)
	}
	if len(p.Checkpoint) > MaxCheckpointBytes {
		return JobView{}, fmt.Errorf("%w: checkpoint is %d bytes, at most %d", ErrInvalid, len(p.Checkpoint), MaxCheckpointBytes)
	}
	if len(p.Checkpoint) > 0 && !jsonValid(p.Checkpoint) {
		return JobView{}, fmt.Errorf("%w: checkpoint is not valid JSON", ErrInvalid)
	}
	var fx effects
	m.mu.Lock()
	e, err := m.getLocked(id)
	if err != nil {
		m.mu.Unlock()
		return JobView{}, err
	}
	if !e.job.State.Accepting() {
		err := &NotAcceptingError{Job: id, State: e.job.State, Reason: e.job.Reason} // under mu: an action steps the job
		m.mu.Unlock()
		return JobView{}, err
	}
	now := m.now()
	changed := p.Records != e.loader.Records || p.Bytes != e.loader.Bytes
	var seq uint64
	if len(p.Checkpoint) > 0 {
		if n := len(e.checkpoints); n == 0 || !bytes.Equal(e.checkpoints[n-1].Data, p.Checkpoint) {
			changed = true
		}
		e.cpSeq++
		seq = e.cpSeq
		e.checkpoints = append(e.checkpoints, Checkpoint{Seq: seq, At: now, Records: p.Records, Bytes: p.Bytes,
			Data: slices.Clone(p.Checkpoint)})
		e.trimCheckpoints(m.cfg.CheckpointsRetained)
	}
	switch {
	case p.Records < e.loader.Records:
		e.recordsFell = true
	case p.Records > e.loader.Records:
		e.recordsFell = false
	}
	if changed {
		e.win.add(now, 0, 0, 0, max(p.Records-e.loader.Records, 0))
		e.loader.Records, e.loader.Bytes = p.Records, p.Bytes
		e.lastProgress = now
		_, _ = m.stepLocked(e, Event{Type: EvProgress}, now, &fx)
	} else {
		_, _ = m.stepLocked(e, Event{Type: EvHeartbeat}, now, &fx)
	}
	if seq > 0 {
		e.version++
		fx.ids = append(fx.ids, id)
	}
	m.mu.Unlock()
	if seq == 0 {
		// Only a checkpoint's answer says it is durable: the state change
		// a report makes (a stalled job running again) waits as a write's
		// does, and goes on unsaved past that.
		m.finishWrite(fx)
		return m.Get(id)
	}
	if err := m.finishWithin(fx, requestWait); err != nil {
		v, _ := m.Get(id)
		return v, fmt.Errorf("state: job %q: checkpoint %d not durable: %w", id, seq, err)
	}
	return m.Get(id)
}

// trimCheckpoints keeps the newest n checkpoints, and the newest durable one
// even if it is older. It requires that Manager.mu is held.
func (e *entry) trimCheckpoints(n int) {
	for len(e.checkpoints) > n {
		drop := 0
		if e.checkpoints[0].Seq == e.durableSeq && len(e.checkpoints) > 1 {
			drop = 1
			if len(e.checkpoints) <= n+1 {
				return
			}
		}
		e.checkpoints = slices.Delete(e.checkpoints, drop, drop+1)
	}
}

// Cancel requests the cancel of job id. force: if the cancel action runs out
// of retries the cleanup runs anyway (instead of the job failing with
// cancel_failed), like Pegasus' cancel_bulk_load -f; a forced request also
// upgrades a cancel already under way. Cancelling a job that is already
// cancelling, cleaning or cancelled changes nothing; a completed or failed
// job gives a *TransitionError. reason (at most 256 bytes) defaults to
// "requested".
//
// The cancel takes effect only once the job's record saying so is
// committed: then new writes are refused, in-flight ones aborted, and the
// cancel action starts when the last of them has ended. If the store write
// fails, Cancel changes nothing (the job goes on, nothing is aborted) and
// returns an error wrapping ErrNotDurable: the caller should retry. A store
// that does not answer in requestWait gives an error wrapping ErrStoreSlow
// (storeRequest).
func (m *Manager) Cancel(id string, force bool, reason string) (JobView, error) {
	if len(reason) > maxReason {
		return JobView{}, fmt.Errorf("%w: reason is %d bytes, at most %d", ErrInvalid, len(reason), maxReason)
	}
	return m.request(id, Event{Type: EvCancel, Force: force, Reason: reason})
}

// Complete declares job id done: it becomes completed, with no cleanup.
// A job that is cancelling, cleaning, cancelled or failed gives a
// *TransitionError, and so does the default job, a stream, which never
// completes; completing a completed job changes nothing but commits its
// record, so that a complete retried after its commit failed succeeds
// only once the record is written.
func (m *Manager) Complete(id string) (JobView, error) {
	return m.request(id, Event{Type: EvComplete})
}

// Reopen makes a cancelled or failed job take writes again: it becomes
// running, with a new run's timers and deadline (counted from now), and
// nothing of the last run's stall or cancel. Any other state gives a
// *TransitionError; with MaxJobs live jobs and none idle to forget,
// ErrTooManyJobs. reason (at most 256 bytes) defaults to "reopened".
//
// Like a cancel, a reopen takes effect only once its record is committed:
// if the store write fails, the job stays as it was, and the error wraps
// ErrNotDurable.
func (m *Manager) Reopen(id, reason string) (JobView, error) {
	if len(reason) > maxReason {
		return JobView{}, fmt.Errorf("%w: reason is %d bytes, at most %d", ErrInvalid, len(reason), maxReason)
	}
	return m.request(id, Event{Type: EvReopen, Reason: reason})
}

// Delete forgets a completed, cancelled or failed job: its record is
// removed from the store, then from memory and the metrics, and a later
// write for the id starts a new job. It returns the job's last view. A
// live job gives a *TransitionError (cancel it first). If the store cannot
// delete the record, nothing changes and the error wraps ErrNotDurable:
// a record forgotten in memory only would come back at the next start.
func (m *Manager) Delete(id string) (JobView, error) {
	return m.storeRequest(id, "delete", func() (JobView, error) {
		defer m.storeMu.Unlock()
		return m.deleteLocked(id)
	})
}

// deleteLocked is Delete for a caller that holds m.storeMu.
func (m *Manager) deleteLocked(id string) (JobView, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return JobView{}, ErrClosed
	}
	e, err := m.getLocked(id)
	if err != nil {
		m.mu.Unlock()
		return JobView{}, err
	}
	// Stepped on a copy: deleting changes no state, and a refusal must
	// change nothing either.
	acts, err := e.job.clone().Step(Event{Type: EvDelete}, m.now())
	if err == nil && !slices.Equal(acts, []Action{ActDelete}) {
		panic(fmt.Sprintf("BUG: state: job %q: delete in %s gives %v", id, e.job.State, acts))
	}
	v := m.viewLocked(e, m.now())
	m.mu.Unlock()
	if err != nil {
		return v, err
	}
	// Only requests, which hold storeMu, move a finished job: it is still
	// finished now.
	if err := m.store.Delete(id); err != nil {
		m.writeError(err)
		return v, fmt.Errorf("state: job %q: delete not done, the record stays; retry: %w: %w", id, ErrNotDurable, err)
	}
	m.mu.Lock()
	if m.jobs[id] == e {
		delete(m.jobs, id)
		if e.waiters > 0 {
			close(e.changed)
			e.changed = make(chan struct{})
		}
	}
	m.mu.Unlock()
	m.log.Info("job deleted", "job", id, "state", v.State.String())
	return v, nil
}

// storeRequest runs fn, a request from outside for job id that needs the
// state store, holding m.storeMu, which fn releases. It answers within
// requestWait: when the store's lock is not taken by then (a write to the
// store hangs), with an error wrapping ErrNotDurable and ErrStoreSlow, and
// fn is not run; when fn has not returned by then, with an error wrapping
// ErrStoreSlow, and fn's outcome is decided when the store answers: a
// cancel, reopen or delete whose write then fails is not done. Nobody
// waits for that outcome any more, so it is logged.
func (m *Manager) storeRequest(id, what string, fn func() (JobView, error)) (JobView, error) {
	t := time.NewTimer(requestWait)
	defer t.Stop()
	if !m.storeMu.lockWithin(t.C) {
		v, _ := m.Get(id)
		return v, fmt.Errorf("state: job %q: %s not done, a write to the state store has not returned for %s; retry: %w: %w", id, what, requestWait, ErrNotDurable, ErrStoreSlow)
	}
	type result struct {
		v   JobView
		err error
	}
	// Unbuffered, with gaveUp: fn's goroutine learns whether its outcome
	// was answered, or is left to the log.
	res := make(chan result)
	gaveUp := make(chan struct{})
	go func() {
		v, err := fn()
		select {
		case res <- result{v, err}:
		case <-gaveUp:
			if err != nil {
				m.log.Warn("job request answered while its record was being written failed once the state store answered",
					"job", id, "request", what, "err", err)
			} else {
				m.log.Info("job request answered while its record was being written is done", "job", id, "request", what)
			}
		}
	}()
	select {
	case r := <-res:
		return r.v, r.err
	case <-t.C:
		close(gaveUp)
		v, _ := m.Get(id)
		return v, fmt.Errorf("state: job %q: the %s's record has not been written in %s; what comes of it is decided when the state store answers: a cancel, reopen or delete whose write then fails is not done (get the job to see): %w", id, what, requestWait, ErrStoreSlow)
	}
}

// request steps job id with a request from outside. Requests hold storeMu
// from the step to the commit, so that a completion cannot come between a
// cancel's try and its apply (tryLocked).
func (m *Manager) request(id string, ev Event) (JobView, error) {
	if v, ok := m.changesNothing(id, ev); ok {
		return v, nil
	}
	return m.storeRequest(id, ev.Type.String(), func() (JobView, error) {
		return m.requestLocked(id, ev)
	})
}

// changesNothing reports whether request ev would change nothing of job id,
// whose record is saved (a complete or a cancel repeated), and returns the
// job's view if so: such a request needs nothing of a store that may not
// answer now. Stepped on a copy, as Delete does. A job with a cancel or
// reopen being written is not settled: what a request does to it depends
// on that write, so the request waits behind it.
func (m *Manager) changesNothing(id string, ev Event) (JobView, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.jobs[id]
	if e == nil || m.closed || e.version > e.flushed || e.proposed {
		return JobView{}, false
	}
	j := e.job.clone()
	acts, err := j.Step(ev, m.now())
	if err != nil || len(acts) > 0 || j.State != e.job.State || j.Reason != e.job.Reason ||
		j.Force != e.job.Force || j.Reopen != e.job.Reopen {
		return JobView{}, false
	}
	return m.viewLocked(e, m.now()), true
}

// requestLocked is request for a caller that holds m.storeMu; it releases
// it.
func (m *Manager) requestLocked(id string, ev Event) (JobView, error) {
	var fx effects
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.storeMu.Unlock()
		return JobView{}, ErrClosed
	}
	e, err := m.getLocked(id)
	if err != nil {
		m.mu.Unlock()
		m.storeMu.Unlock()
		return JobView{}, err
	}
	now := m.now()
	if ev.Type == EvReopen && e.job.State.Terminal() && m.live >= m.cfg.MaxJobs && !m.makeRoomLocked(id) {
		// Built under mu: an action's step (a job ending) changes m.live.
		err := fmt.Errorf("%w: %d live jobs, limit %d, none idle; job %q not reopened", ErrTooManyJobs, m.live, m.cfg.MaxJobs, id)
		m.mu.Unlock()
		m.storeMu.Unlock()
		return JobView{}, err
	}
	var p *proposal
	if ev.Type == EvCancel || ev.Type == EvReopen {
		p, err = m.tryLocked(e, ev, now, &fx)
	} else {
		_, err = m.stepLocked(e, ev, now, &fx)
		if err == nil && ev.Type == EvComplete {
			// A complete repeated after its record failed to be written
			// changes nothing in memory; it is done once that record is.
			fx.ids = append(fx.ids, id)
		}
	}
	was := e.job.State
	m.mu.Unlock()
	if p != nil {
		err = m.commitProposalsLocked([]*proposal{p}, &fx)
		if err != nil {
			err = fmt.Errorf("state: job %q: %s not done, the job stays %s; retry: %w", id, ev.Type, was, err)
		}
	}
	if err == nil {
		err = m.commitLocked(fx.ids)
		if p != nil {
			// The request is recorded; what moved meanwhile is written at
			// the next tick. A job that moved to a state that refuses the
			// request (its cancel failed for good) answers as it would
			// had the request come after: the request did nothing.
			err = p.err
		}
	}
	m.mu.Lock()
	v := m.viewLocked(e, m.now())
	m.mu.Unlock()
	m.storeMu.Unlock()
	m.start(fx.runs)
	return v, err
}

func (m *Manager) getLocked(id string) (*entry, error) {
	e := m.jobs[id]
	if e == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return e, nil
}

// Get returns the full view of job id, or ErrNotFound.
func (m *Manager) Get(id string) (JobView, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.getLocked(id)
	if err != nil {
		return JobView{}, err
	}
	return m.viewLocked(e, m.now()), nil
}

// List returns a summary of every job, sorted by id.
func (m *Manager) List() []JobSummary {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make([]JobSummary, 0, len(m.jobs))
	for _, e := range m.jobs {
		out = append(out, m.summaryLocked(e, now))
	}
	sort.Slice(out, func(i, k int) bool { return out[i].ID < out[k].ID })
	return out
}

// Counts returns the number of jobs in each state; every state is present.
func (m *Manager) Counts() map[State]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.countsLocked()
}

func (m *Manager) countsLocked() map[State]int {
	c := make(map[State]int, numStates)
	for _, s := range States() {
		c[s] = 0
	}
	for _, e := range m.jobs {
		c[e.job.State]++
	}
	return c
}
