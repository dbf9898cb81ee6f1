// Package state keeps the lifecycle of bulk-load jobs: an explicit,
// deterministic state machine per job (Job.Step), a Manager that feeds it
// with the proxy's observations, a clock tick and the admin API's requests,
// runs the cancel and cleanup actions it asks for, and commits every
// transition to a crash-safe Store before acting on it.
//
// See README.md for the transition diagram.
package state

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/sluice-dev/sluice/limiter"
)

// State is the lifecycle state of one job. The zero value is Pending.
type State uint8

const (
	// Pending: the job is known (registered, or created by its first write)
	// but no write for it has been admitted yet.
	Pending State = iota
	// Running: writes are admitted and the store acknowledges them.
	Running
	// Idle: the loader sent nothing for StallAfter and the job does not ask
	// to be watched for that (no heartbeat interval, no progress probe): a
	// continuous shipper's quiet spell, or a load that finished without
	// saying so. Nothing is wrong, so nothing is done: an idle job is
	// never cancelled for being idle, and its next write or progress makes
	// it running again.
	Idle
	// Throttled: the store recently throttled (or timed out) some of the
	// job's writes; writes still go through at the limiter's pace.
	Throttled
	// Backoff: the store throttled repeatedly or sent Retry-After; the job's
	// writes are held and a single probe write is let through at
	// exponentially growing, jittered intervals.
	Backoff
	// Stalled: the job tried and got nothing acknowledged for StallAfter
	// (StallCause says what it got instead), or it promised heartbeats and
	// sent none, or its progress probe showed no progress. It alerts; it is
	// cancelled after CancelGrace only if its cause is among the job's
	// auto-cancel causes.
	Stalled
	// Cancelling: new writes are refused (held, for a stream that reopens),
	// in-flight ones aborted, and the cancel action is running.
	Cancelling
	// Cleaning: the cancel action succeeded (or was skipped); the cleanup
	// action is running.
	Cleaning
	// Completed (terminal): the loader declared the job done.
	Completed
	// Cancelled (terminal): cancel and cleanup both succeeded or were
	// skipped. An operator may reopen it.
	Cancelled
	// Failed (terminal): the cancel or cleanup action ran out of retries.
	// An operator may reopen it once the store is put right.
	Failed

	numStates
)

var stateNames = [numStates]string{
	"pending", "running", "idle", "throttled", "backoff", "stalled",
	"cancelling", "cleaning", "completed", "cancelled", "failed",
}

// States lists every state in order.
func States() []State {
	s := make([]State, numStates)
	for i := range s {
		s[i] = State(i)
	}
	return s
}

// String returns the lower-case name used in the API, logs and metrics.
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Terminal reports whether the job is over: it takes no writes, nothing
// moves it by itself, and only an operator's reopen (of a cancelled or
// failed job) leaves it.
func (s State) Terminal() bool { return s == Completed || s == Cancelled || s == Failed }

// Accepting reports whether writes for a job in state s may be forwarded.
func (s State) Accepting() bool { return s < Cancelling }

// ParseState parses a name returned by String.
func ParseState(name string) (State, error) {
	for i, n := range stateNames {
		if n == name {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("state: unknown state %q", name)
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) {
	if s >= numStates {
		return nil, fmt.Errorf("state: invalid state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *State) UnmarshalText(b []byte) error {
	v, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// transitions is the table of legal transitions, consulted by become.
// README.md draws it.
var transitions = map[State][]State{
	Pending:    {Running, Idle, Throttled, Stalled, Cancelling, Completed},
	Running:    {Idle, Throttled, Stalled, Cancelling, Completed},
	Idle:       {Running, Stalled, Cancelling, Completed},
	Throttled:  {Running, Idle, Backoff, Stalled, Cancelling, Completed},
	Backoff:    {Idle, Throttled, Stalled, Cancelling, Completed},
	Stalled:    {Running, Idle, Backoff, Cancelling, Completed},
	Cancelling: {Cleaning, Failed},
	Cleaning:   {Cancelled, Failed},
	Cancelled:  {Running},
	Failed:     {Running},
}

// Legal reports whether the table allows from → to.
func Legal(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// EventType names what happened to a job.
type EventType uint8

const (
	// EvAdmit: a write for the job asks to be forwarded.
	EvAdmit EventType = iota + 1
	// EvRelease: an admitted write ended (all its upstream attempts).
	// Probe is the write's probe id if it was admitted as the probe.
	EvRelease
	// EvProgress: the store acknowledged a write, or the loader or the
	// progress probe reported progress. Probe: see Event.
	EvProgress
	// EvThrottle: the store throttled a write (429, 503 overloaded, per-item
	// bulk rejections); RetryAfter is its hint, 0 if none.
	EvThrottle
	// EvUpstreamError: an attempt failed; Timeout says it timed out (a
	// congestion signal, treated like a throttle) rather than erred, and
	// Cause, if set, what else it says of the store
	// (CauseUpstreamUnreachable).
	EvUpstreamError
	// EvTick: time passed; stall, grace, deadline and quiet periods are
	// checked only on ticks.
	EvTick
	// EvCancel: cancel requested (Force, Reason).
	EvCancel
	// EvActionSucceeded: Action (ActRunCancel or ActRunCleanup) succeeded,
	// found the job already gone, or was Skipped for want of a configured
	// action.
	EvActionSucceeded
	// EvActionFailed: an attempt of Action failed; Final when the retries
	// are exhausted.
	EvActionFailed
	// EvComplete: the loader declared the job done.
	EvComplete
	// EvHeartbeat: the loader said it is alive without reporting progress
	// (a progress report with the same numbers as the last one).
	EvHeartbeat
	// EvReopen: an operator asks a cancelled or failed job to take writes
	// again (Reason).
	EvReopen
	// EvDelete: an operator asks to forget a finished job's record.
	EvDelete

	numEventTypes
)

var eventNames = [numEventTypes]string{
	"", "admit", "release", "progress", "throttle", "upstream_error", "tick",
	"cancel", "action_succeeded", "action_failed", "complete", "heartbeat",
	"reopen", "delete",
}

func (t EventType) String() string {
	if t > 0 && t < numEventTypes {
		return eventNames[t]
	}
	return fmt.Sprintf("event(%d)", uint8(t))
}

// Event is one input to Job.Step. Only the fields named by Type's doc are
// read.
//
// Probe names the write an EvRelease, EvProgress, EvThrottle or
// EvUpstreamError comes from when that write is the job's probe: the value
// of Job.Probe right after the write's EvAdmit, 0 for any other write and
// for progress not reported by a write. A held job decides its probe from
// these events alone: the answer of a write admitted before the hold says
// nothing about the store now, and taking it for the probe's would end the
// hold, or extend it, or let a second probe in, on another write's word.
type Event struct {
	Type       EventType
	Probe      uint64        // EvRelease, EvProgress, EvThrottle, EvUpstreamError
	RetryAfter time.Duration // EvThrottle
	Timeout    bool          // EvUpstreamError
	Abandoned  bool          // EvUpstreamError: the loader gave up before the store answered (see Job.abandoned)
	Cause      StallCause    // EvUpstreamError: "" is upstream_errors, or upstream_timeouts with Timeout
	Force      bool          // EvCancel
	Reopen     bool          // EvCancel: sluice's own cancel of a stream, applied as recorded: it reopens once cleaned up
	Reason     string        // EvCancel; "requested" if empty. EvReopen; "reopened" if empty
	Action     Action        // EvActionSucceeded, EvActionFailed
	Skipped    bool          // EvActionSucceeded
	Final      bool          // EvActionFailed
	Err        string        // EvActionFailed
	Attempt    *Attempt      // EvActionSucceeded, EvActionFailed: recorded on the job if set
}

// Action is something the caller of Step must do, in the order returned.
type Action uint8

const (
	// ActPersist: commit the job's record to the store before any later
	// action of the same Step starts.
	ActPersist Action = iota + 1
	// ActAbortInflight: abort the job's in-flight upstream attempts. It
	// follows an ActPersist: no write is told the job is cancelling before
	// the record saying so is committed.
	ActAbortInflight
	// ActRunCancel: once the job's in-flight attempts have all ended, run
	// its cancel action (retrying), then report EvActionSucceeded or
	// EvActionFailed. The wait matters: a write already sent cannot be
	// recalled, and a cancel that ran before it landed would leave it
	// behind in the store.
	ActRunCancel
	// ActRunCleanup: run the job's cleanup action the same way.
	ActRunCleanup
	// ActHold: (EvAdmit only) the write must wait until the job changes
	// (or, while Hold, its probe slot ProbeAt), then ask again.
	ActHold
	// ActReopen: the job takes writes again; writes admitted from now on
	// must not be aborted by the cancel that ended its last run. It
	// follows an ActPersist.
	ActReopen
	// ActDelete: (EvDelete only) remove the job's record from the store,
	// then from memory; the machine itself does not change.
	ActDelete
)

var actionNames = [...]string{"", "persist", "abort_inflight", "cancel", "cleanup", "hold", "reopen", "delete"}

func (a Action) String() string {
	if int(a) < len(actionNames) && a > 0 {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Transition is one entry of a job's history.
type Transition struct {
	From   State     `json:"from"`
	To     State     `json:"to"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Attempt records one run of a cancel or cleanup action.
type Attempt struct {
	Action   string        `json:"action"` // "cancel" or "cleanup"
	N        int           `json:"n"`      // 1 for the first attempt
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration_ns"`
	Result   string        `json:"result"` // ok, already_gone, skipped, error, timeout
	Status   int           `json:"status,omitempty"`
	ExitCode *int          `json:"exit_code,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// Attempt results.
const (
	ResultOK          = "ok"
	ResultAlreadyGone = "already_gone"
	ResultSkipped     = "skipped"
	ResultError       = "error"
	ResultTimeout     = "timeout"
)

// Bounds of the per-job history and attempt lists.
const (
	HistoryLen  = 32
	AttemptsLen = 64
)

// Policy holds a job's resolved settings as the machine uses them.
type Policy struct {
	StallAfter  time.Duration // no progress this long → stalled or idle; >0
	CancelGrace time.Duration // stalled this long → cancelling (if the cause auto-cancels)
	Deadline    time.Duration // since creation or the last reopen → cancelling; 0 = none
	// AutoCancel is the master switch: false, no stall cancels the job.
	AutoCancel bool
	// AutoCancelCauses are the stall causes that cancel the job after
	// CancelGrace (with AutoCancel).
	AutoCancelCauses []StallCause
	// HeartbeatInterval > 0: the loader writes or reports at least this
	// often, so a job without progress whose loader fell silent this long
	// is stalled (loader_idle) rather than idle.
	HeartbeatInterval time.Duration
	// Probed: a progress probe watches the job (a load the store runs
	// itself), so no progress is a stall (probe_no_progress) even though
	// no write goes through sluice.
	Probed bool
	// Stream: the default job, the writes of a continuous shipper. It never
	// ends by itself: no deadline, no completion, and after a cancel of
	// sluice's own (a stall) it reopens once cleaned up.
	Stream       bool
	QuietAfter   time.Duration   // throttled → running after progress and no throttle this long
	BackoffAfter int             // consecutive throttles (no progress between) → backoff…
	BackoffQuiet time.Duration   // …once there has also been no progress for this long
	Backoff      limiter.Backoff // probe schedule in backoff
}

// TransitionError is returned by Step for a request that is not legal in the
// job's current state (complete a cancelled job, cancel a completed one, an
// action result for an action that is not running).
type TransitionError struct {
	Job   string
	From  State
	Event EventType
	Why   string // optional, when the state alone does not say
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("state: job %q: %s not allowed in state %s", e.Job, e.Event, e.From)
	if e.Why != "" {
		msg += ": " + e.Why
	}
	return msg
}

// NotAcceptingError is returned for a write to a job that is cancelling,
// cleaning or terminal.
type NotAcceptingError struct {
	Job    string
	State  State
	Reason string
}

func (e *NotAcceptingError) Error() string {
	return fmt.Sprintf("state: job %q is %s (%s) and accepts no writes", e.Job, e.State, e.Reason)
}

// ReopeningError is the cause with which the in-flight writes of a stream
// are aborted when sluice cancels it on its own: the stream reopens once
// cleaned up, so the loader should send them again later. It wraps
// context.Canceled, which the proxy answers with a 429 and a Retry-After,
// not the 409 that tells a loader to drop its data.
type ReopeningError struct {
	Job   string
	State State
}

func (e *ReopeningError) Error() string {
	return fmt.Sprintf("state: job %q is %s and takes writes again once cleaned up; retry", e.Job, e.State)
}

func (e *ReopeningError) Unwrap() error { return context.Canceled }

// MachineState is the persisted part of a Job. Fields added since the
// first release are optional, so that older records load as they were.
type MachineState struct {
	State      State      `json:"state"`
	Since      time.Time  `json:"since"`
	Reason     string     `json:"reason,omitempty"`
	StallCause StallCause `json:"stall_cause,omitempty"`
	Created    time.Time  `json:"created"`
	// Opened is when an operator (or a stream's own cancel) last reopened
	// the job; its deadline counts from then.
	Opened time.Time `json:"opened,omitzero"`
	Force  bool      `json:"force,omitempty"`
	// Reopen: sluice cancelled a stream on its own; it takes writes again
	// once cleaned up, and holds them until then.
	Reopen   bool         `json:"reopen,omitempty"`
	Hold     bool         `json:"hold,omitempty"`
	Stalls   uint64       `json:"stalls,omitempty"`
	History  []Transition `json:"history,omitempty"`
	Attempts []Attempt    `json:"attempts,omitempty"`
}

type stepFunc func(j *Job, ev Event, now time.Time) ([]Action, error)

// Job is the state machine of one job. It does no I/O and reads no clock:
// Step takes the time and returns the actions for the caller to perform.
// A Job is not safe for concurrent use; the Manager serialises access.
type Job struct {
	id  string
	p   Policy
	rnd func() float64

	MachineState
	step stepFunc

	stallClock    time.Time // last progress, or creation, restart, reopen, or a stopped loader's next write (resume)
	graceClock    time.Time // when the job stalled, or its restart: the cancel grace counts from it
	lastHeartbeat time.Time // last write asked, progress or heartbeat, or creation, restart, reopen
	lastThrottle  time.Time
	lastActive    time.Time               // last write asked, progress or heartbeat in this process; zero after a restore
	consecutive   int                     // throttles since the last progress
	seen          [len(countedCauses)]int // failed attempts by cause since the last progress
	writes        int                     // admitted writes not yet released
	probe         uint64                  // the probe write in flight while Hold, 0 if none
	probes        uint64                  // probe ids handed out; the last one's id
	probeFailed   bool                    // the probe in flight has moved the schedule
	probeAt       time.Time               // next probe slot while Hold
	probeAttempt  int                     // probe slots scheduled since the last reset: the Backoff attempt

	// abandoned counts the writes the loader gave up on before the store
	// answered, since the last progress or admitted write. Each becomes a
	// timeout in seen when the loader writes again: a loader whose own
	// timeout is shorter than sluice's, in front of a store that answers
	// nothing, is trying and getting nothing through, and would otherwise
	// look idle for ever. Until then it may be a loader that was stopped
	// with writes in flight, a finished load that must stay idle.
	abandoned int

	emitted []Transition // since the last TakeTransitions
}

// NewJob returns a job in state Pending created at now. rnd draws jitter in
// [0, 1); nil means math/rand/v2.
func NewJob(id string, p Policy, now time.Time, rnd func() float64) *Job {
	j := &Job{id: id}
	j.init(p, rnd)
	j.State, j.Since, j.Created, j.Reason = Pending, now, now, "created"
	j.stallClock, j.lastHeartbeat = now, now
	j.step = stepFor(Pending)
	return j
}

// RestoreJob rebuilds a job from its persisted state after a restart at now.
// Stall, grace, heartbeat and quiet timers restart from now, so a restart
// never by itself makes a job stall or be cancelled; a held job probes at
// once. Call Resume for the actions to restart.
//
// A record written before idleness was told apart from a stall may say
// stalled with cause loader_idle: such a job is idle now (a transition,
// for TakeTransitions), unless its policy watches its loader's heartbeat
// (it stays stalled) or a progress probe (the cause becomes
// probe_no_progress).
func RestoreJob(id string, ms MachineState, p Policy, now time.Time, rnd func() float64) *Job {
	j := &Job{id: id, MachineState: ms}
	j.init(p, rnd)
	j.stallClock, j.lastHeartbeat, j.graceClock = now, now, now
	j.lastThrottle = now // a throttled job stays so for a quiet period
	j.probeAt = now
	if ms.State == Backoff {
		j.Hold = true
	}
	j.step = stepFor(ms.State)
	if j.State == Stalled && j.StallCause == CauseLoaderIdle && p.HeartbeatInterval <= 0 {
		if p.Probed {
			j.StallCause = CauseProbeNoProgress
		} else {
			j.become(Idle, "restored: a quiet loader is idle, not stalled", now)
		}
	}
	return j
}

func (j *Job) init(p Policy, rnd func() float64) {
	if rnd == nil {
		rnd = rand.Float64
	}
	j.rnd = rnd
	j.SetPolicy(p)
}

// SetPolicy replaces the job's policy (a re-registration). Timers keep
// running.
func (j *Job) SetPolicy(p Policy) {
	p.AutoCancelCauses = slices.Clone(p.AutoCancelCauses)
	if p.BackoffAfter < 1 {
		p.BackoffAfter = 1
	}
	j.p = p
}

// clone returns a copy of j that can be stepped without changing j: the
// Manager tries a cancel on a copy and applies it to j only once the copy's
// record is committed.
func (j *Job) clone() *Job {
	c := *j
	c.History = slices.Clone(j.History)
	c.Attempts = slices.Clone(j.Attempts)
	c.emitted = slices.Clone(j.emitted)
	return &c
}

// Registered tells the job that its loader registered it at now: a
// heartbeat interval runs from then, not from the last run's heartbeat,
// hours old perhaps. It is no activity (see the deadline, EvTick).
func (j *Job) Registered(now time.Time) { j.lastHeartbeat = now }

// ID returns the job's id.
func (j *Job) ID() string { return j.id }

// Policy returns the job's policy.
func (j *Job) Policy() Policy { return j.p }

// ProbeAt returns when a held job lets its next probe write through, if
// no write of the job is in flight by then.
func (j *Job) ProbeAt() time.Time { return j.probeAt }

// Probe returns the id of the held job's probe write in flight, 0 if none.
// Read right after an EvAdmit that admitted a write, it is that write's
// probe id (0: not the probe); the caller stamps the write's events with
// it (Event.Probe).
func (j *Job) Probe() uint64 { return j.probe }

// Snapshot returns a copy of the persisted part.
func (j *Job) Snapshot() MachineState {
	ms := j.MachineState
	ms.History = append([]Transition(nil), ms.History...)
	ms.Attempts = append([]Attempt(nil), ms.Attempts...)
	return ms
}

// TakeTransitions returns the transitions made since the last call, for the
// caller to log and count once each.
func (j *Job) TakeTransitions() []Transition {
	t := j.emitted
	j.emitted = nil
	return t
}

// Resume returns the actions to restart after RestoreJob: the action of a
// job that was cancelling or cleaning when the process stopped.
func (j *Job) Resume() []Action {
	switch j.State {
	case Cancelling:
		return []Action{ActAbortInflight, ActRunCancel}
	case Cleaning:
		return []Action{ActRunCleanup}
	}
	return nil
}

// Step feeds one event to the job at time now and returns the actions to
// perform. A request that is illegal in the current state returns a
// *TransitionError (or *NotAcceptingError for EvAdmit) and changes nothing.
//
// Each EvAdmit that admits a write (no error, no ActHold) must be matched
// by one EvRelease when the write ends: a held job lets its probe through
// only when none of its writes is in flight.
func (j *Job) Step(ev Event, now time.Time) ([]Action, error) {
	if ev.Type == 0 || ev.Type >= numEventTypes {
		return nil, fmt.Errorf("state: job %q: unknown event type %d", j.id, ev.Type)
	}
	if (ev.Type == EvActionSucceeded || ev.Type == EvActionFailed) && ev.Action != ActRunCancel && ev.Action != ActRunCleanup {
		return nil, fmt.Errorf("state: job %q: %s for action %s", j.id, ev.Type, ev.Action)
	}
	if ev.Type == EvRelease && j.writes > 0 {
		// Counted in every state: a write admitted before a cancel or the
		// end still ends.
		j.writes--
	}
	if j.State.Terminal() {
		return j.stepTerminal(ev, now)
	}
	if !j.State.Accepting() {
		return j.step(j, ev, now)
	}
	// Checks common to every live state.
	switch ev.Type {
	case EvAdmit, EvHeartbeat:
		j.lastHeartbeat, j.lastActive = now, now
		if ev.Type == EvAdmit && j.abandoned > 0 {
			j.seen[countedIndex(CauseUpstreamTimeouts)] += j.abandoned
			j.abandoned = 0
		}
	case EvProgress:
		j.stallClock, j.lastHeartbeat, j.lastActive = now, now, now
		j.seen = [len(countedCauses)]int{}
		j.consecutive, j.abandoned = 0, 0
	case EvThrottle, EvUpstreamError:
		if ev.Type == EvUpstreamError && ev.Abandoned {
			j.abandoned++
			// A held job's probe that its loader gave up on failed all
			// the same: the schedule moves on, or the next held write
			// would be the next probe at once, one a loader timeout
			// against a store that hangs.
			j.failedProbe(ev, now)
			return nil, nil // nothing else until the loader writes again
		}
		c := failureCause(ev)
		j.seen[countedIndex(c)]++
		if c == CauseStoreThrottling || c == CauseUpstreamTimeouts {
			j.lastThrottle = now
			j.consecutive++
		}
	case EvCancel:
		// Reopen only for the Manager's re-application of a stream's own
		// stall cancel whose record says so (tryLocked's again); a
		// request never sets it.
		j.Force, j.Reopen = ev.Force, ev.Reopen && j.p.Stream
		reason := ev.Reason
		if reason == "" {
			reason = "requested"
		}
		j.become(Cancelling, reason, now)
		return []Action{ActPersist, ActAbortInflight, ActRunCancel}, nil
	case EvComplete:
		if j.p.Stream {
			return nil, &TransitionError{Job: j.id, From: j.State, Event: ev.Type,
				Why: "the default job is a stream and never completes (cancel it, or send writes under a job of their own)"}
		}
		j.become(Completed, "completed", now)
		return []Action{ActPersist}, nil
	case EvActionSucceeded, EvActionFailed, EvReopen, EvDelete:
		return nil, &TransitionError{Job: j.id, From: j.State, Event: ev.Type}
	case EvTick:
		// A deadline stops work that goes on too long; an idle job does
		// none, and may be a load that finished without saying so, whose
		// cleanup would delete it. It meets its deadline at its next write.
		//
		// A job still running but quiet at its deadline may be a load that
		// finished in the last StallAfter, not yet called idle: it too
		// meets its deadline only when it is found writing (a write in
		// flight, or its loader active since the deadline). A stalled job
		// has had its verdict, and it is not idle: it tried and got
		// nothing through, or its loader fell silent against its promise;
		// the deadline stops it whatever the stall's cause, as before.
		// Only a progress probe's stall may be a finished load.
		if j.p.Deadline > 0 && j.State != Idle && now.Sub(j.opened()) >= j.p.Deadline &&
			(j.State == Stalled && j.StallCause != CauseProbeNoProgress || j.writes > 0 ||
				!j.lastActive.IsZero() && j.lastActive.Sub(j.opened()) >= j.p.Deadline) {
			j.become(Cancelling, "deadline_exceeded", now)
			return []Action{ActPersist, ActAbortInflight, ActRunCancel}, nil
		}
		if j.State == Stalled || now.Sub(j.stallClock) < j.p.StallAfter {
			break
		}
		switch to, _ := j.quiet(now); {
		case to == Stalled:
			j.become(Stalled, "no_progress", now)
			acts := []Action{ActPersist}
			if more, _ := j.step(j, ev, now); len(more) > 0 {
				acts = more // grace 0: cancel in the same tick
			}
			return acts, nil
		case to == Idle && j.State != Idle:
			j.become(Idle, "no_writes", now)
			return []Action{ActPersist}, nil
		}
	}
	acts, err := j.step(j, ev, now)
	if ev.Type == EvAdmit && err == nil && !slices.Contains(acts, ActHold) {
		j.writes++
	}
	return acts, err
}

// opened is when the job's current run began: its creation, or its last
// reopen.
func (j *Job) opened() time.Time {
	if !j.Opened.IsZero() {
		return j.Opened
	}
	return j.Created
}

// failureCause is the stall cause an EvThrottle or EvUpstreamError counts
// towards.
func failureCause(ev Event) StallCause {
	switch {
	case ev.Type == EvThrottle:
		return CauseStoreThrottling
	case ev.Cause != "":
		return ev.Cause
	case ev.Timeout:
		return CauseUpstreamTimeouts
	}
	return CauseUpstreamErrors
}

// quiet says what a live job without progress for StallAfter is, and why:
//
//   - Stalled, with the cause its failed writes counted most, if any
//     failed since its last progress: it tried and did not get through;
//   - its own state while one of its writes is still out: that write's
//     answer will say;
//   - Stalled (loader_idle) if it promised heartbeats and its loader fell
//     silent for longer than promised: the loader hung;
//   - Stalled (probe_no_progress) if a progress probe watches it;
//   - otherwise Idle: the loader simply sent nothing.
func (j *Job) quiet(now time.Time) (State, StallCause) {
	best, cause := 0, StallCause("")
	for i, n := range j.seen {
		if n > best {
			best, cause = n, countedCauses[i]
		}
	}
	switch {
	case cause != "":
		return Stalled, cause
	case j.writes > 0:
		return j.State, ""
	case j.p.HeartbeatInterval > 0 && now.Sub(j.lastHeartbeat) >= j.p.HeartbeatInterval:
		return Stalled, CauseLoaderIdle
	case j.p.Probed:
		return Stalled, CauseProbeNoProgress
	}
	return Idle, ""
}

// autoCancels reports whether a stall with cause c cancels the job.
func (p *Policy) autoCancels(c StallCause) bool {
	return p.AutoCancel && slices.Contains(p.AutoCancelCauses, c)
}

func stepFor(s State) stepFunc {
	switch s {
	case Pending:
		return stepPending
	case Running:
		return stepRunning
	case Idle:
		return stepIdle
	case Throttled:
		return stepThrottled
	case Backoff:
		return stepBackoff
	case Stalled:
		return stepStalled
	case Cancelling:
		return stepCancelling
	case Cleaning:
		return stepCleaning
	}
	return nil // terminal states are handled by stepTerminal
}

// become is the only place that changes j.State: it checks the table, sets
// every state-dependent field, and records the transition.
func (j *Job) become(to State, reason string, now time.Time) {
	if !Legal(j.State, to) {
		panic(fmt.Sprintf("BUG: state: job %q: illegal transition %s → %s (%s)", j.id, j.State, to, reason))
	}
	from := j.State
	t := Transition{From: from, To: to, Reason: reason, At: now}
	j.State, j.Since, j.Reason = to, now, reason
	j.step = stepFor(to)
	switch to {
	case Running, Throttled, Idle:
		j.StallCause = ""
		j.Hold, j.probe = false, 0
		if to == Running {
			j.probeAttempt = 0
		}
		if from.Terminal() {
			// Reopened: a new run, with nothing of the last one's stall,
			// cancel or deadline.
			j.Force, j.Reopen, j.Opened = false, false, now
			j.stallClock, j.lastHeartbeat, j.lastThrottle = now, now, now
			j.seen, j.consecutive, j.abandoned = [len(countedCauses)]int{}, 0, 0
		}
	case Backoff:
		j.StallCause = ""
	case Stalled:
		_, j.StallCause = j.quiet(now)
		j.Stalls++
		j.graceClock = now
	case Cancelling, Cleaning, Completed, Cancelled:
		j.Hold, j.probe = false, 0
	case Failed:
		// A stream whose cancel or cleanup failed does not reopen by
		// itself: what the store holds is unknown until a human looks.
		j.Hold, j.probe, j.Reopen = false, 0, false
	}
	if to == Idle || to == Stalled && j.StallCause == CauseLoaderIdle {
		// Found quiet, its loader stopped: the writes it gave up on are
		// the stopped run's, not timeouts of the run its next write
		// begins (whose stall clock is as old as the last progress).
		j.abandoned = 0
	}
	j.History = append(j.History, t)
	if n := len(j.History) - HistoryLen; n > 0 {
		j.History = append(j.History[:0], j.History[n:]...)
	}
	j.emitted = append(j.emitted, t)
}

func (j *Job) record(a *Attempt) {
	if a == nil {
		return
	}
	j.Attempts = append(j.Attempts, *a)
	if n := len(j.Attempts) - AttemptsLen; n > 0 {
		j.Attempts = append(j.Attempts[:0], j.Attempts[n:]...)
	}
}

// enterBackoff holds the job's writes until a probe slot.
func (j *Job) enterBackoff(retryAfter time.Duration, reason string, now time.Time) []Action {
	j.become(Backoff, reason, now)
	j.Hold = true
	j.probe = 0
	j.scheduleProbe(retryAfter, now)
	return []Action{ActPersist}
}

func (j *Job) scheduleProbe(retryAfter time.Duration, now time.Time) {
	j.probeAt = now.Add(j.p.Backoff.Delay(j.probeAttempt, retryAfter, j.rnd))
	j.probeAttempt++
}

// admitHeld lets one probe write through per slot while the job is held.
// The probe goes alone: it waits until every write admitted before it (the
// previous probe, or writes admitted before the hold) has been released.
// A caller that cannot tell which write an answer comes from (the
// Manager's Observe) can then stamp every answer given while the probe is
// in flight as the probe's.
func (j *Job) admitHeld(now time.Time) []Action {
	if !j.Hold {
		return nil
	}
	if j.probe != 0 || j.writes > 0 || now.Before(j.probeAt) {
		return []Action{ActHold}
	}
	j.probes++
	j.probe, j.probeFailed = j.probes, false
	return nil
}

// isProbe reports whether ev comes from the probe write in flight.
func (j *Job) isProbe(ev Event) bool {
	return j.probe != 0 && ev.Probe == j.probe
}

// failedProbe reschedules after the probe's first throttled or failed
// attempt: one step of the schedule per probe, as the next probe cannot go
// before this one is released anyway. The probe stays in flight until
// released: the proxy may try it again, and a later attempt's success is
// still the probe's. Other results (other writes', the probe's later
// attempts) do not move the schedule, except that a Retry-After can push
// it later.
func (j *Job) failedProbe(ev Event, now time.Time) {
	if !j.Hold {
		return
	}
	if j.isProbe(ev) && !j.probeFailed {
		j.probeFailed = true
		j.scheduleProbe(ev.RetryAfter, now)
		return
	}
	if ev.RetryAfter > 0 {
		if at := now.Add(j.p.Backoff.Clamp(ev.RetryAfter)); at.After(j.probeAt) {
			j.probeAt = at
		}
	}
}

func stepPending(j *Job, ev Event, now time.Time) ([]Action, error) {
	switch ev.Type {
	case EvAdmit:
		j.become(Running, "first_write", now)
		return []Action{ActPersist}, nil
	case EvProgress:
		j.become(Running, "progress", now)
		return []Action{ActPersist}, nil
	}
	return stepRunning(j, ev, now)
}

// stepIdle: the loader is back as soon as it writes or reports progress.
// What else comes is counted by Step's common checks, and a tick that
// finds the job should be watched after all (a heartbeat interval set by
// a re-registration, say) stalls it there.
func stepIdle(j *Job, ev Event, now time.Time) ([]Action, error) {
	switch ev.Type {
	case EvAdmit:
		j.resume(now)
		return []Action{ActPersist}, nil
	case EvProgress:
		j.become(Running, "progress", now)
		return []Action{ActPersist}, nil
	}
	return nil, nil
}

// resume makes a job whose loader had stopped (idle, or stalled with
// loader_idle) running at its new first write. The new run is judged from
// now: its stall clock was the last run's progress, hours old perhaps, and
// the first throttle of the new run would make the next tick call the job
// stalled at once, with only CancelGrace before its cancel and cleanup. A
// job is idle only with no failed write since its progress, so nothing
// the clock was counting is lost.
func (j *Job) resume(now time.Time) {
	j.stallClock = now
	j.become(Running, "write_resumed", now)
}

// stepRunning: any throttle makes the job throttled first, so its history
// always shows the way it went (running → throttled → backoff); a
// Retry-After or repeated throttling then holds it in the same step.
func stepRunning(j *Job, ev Event, now time.Time) ([]Action, error) {
	switch ev.Type {
	case EvThrottle:
		j.become(Throttled, string(CauseStoreThrottling), now)
		if acts, _ := stepThrottled(j, ev, now); len(acts) > 0 {
			return acts, nil
		}
		return []Action{ActPersist}, nil
	case EvUpstreamError:
		if ev.Timeout {
			j.become(Throttled, string(CauseUpstreamTimeouts), now)
			if acts, _ := stepThrottled(j, ev, now); len(acts) > 0 {
				return acts, nil
			}
			return []Action{ActPersist}, nil
		}
	}
	return nil, nil
}

func stepThrottled(j *Job, ev Event, now time.Time) ([]Action, error) {
	switch ev.Type {
	case EvProgress, EvTick:
		if j.stallClock.After(j.lastThrottle) && now.Sub(j.lastThrottle) >= j.p.QuietAfter {
			j.become(Running, "throttling_ceased", now)
			return []Action{ActPersist}, nil
		}
	case EvThrottle:
		if j.rejectingAll(now) {
			reason := "repeated_throttling"
			if ev.RetryAfter > 0 {
				reason = "retry_after"
			}
			return j.enterBackoff(ev.RetryAfter, reason, now), nil
		}
	case EvUpstreamError:
		if ev.Timeout && j.rejectingAll(now) {
			return j.enterBackoff(0, "repeated_timeouts", now), nil
		}
	}
	return nil, nil
}

// rejectingAll reports whether the store seems to reject all of the job's
// writes: BackoffAfter throttles in a row and no progress for BackoffQuiet.
// A store that throttles some writes while accepting others (a quota that
// sends Retry-After: 1 with every rejection) never holds the job: the
// limiter already paces it, and holding it would leave capacity idle.
func (j *Job) rejectingAll(now time.Time) bool {
	return j.consecutive >= j.p.BackoffAfter && now.Sub(j.stallClock) >= j.p.BackoffQuiet
}

func stepBackoff(j *Job, ev Event, now time.Time) ([]Action, error) {
	switch ev.Type {
	case EvAdmit:
		return j.admitHeld(now), nil
	case EvRelease:
		if j.isProbe(ev) {
			j.probe = 0
		}
	case EvProgress:
		// Only the probe's own success ends the hold: writes admitted
		// before it may still land after the store stopped accepting, and
		// must not make the job flap (their progress still counts).
		if !j.isProbe(ev) {
			return nil, nil
		}
		j.become(Throttled, "probe_succeeded", now)
		j.probeAttempt = 0
		return []Action{ActPersist}, nil
	case EvThrottle, EvUpstreamError:
		j.failedProbe(ev, now)
	}
	return nil, nil
}

func stepStalled(j *Job, ev Event, now time.Time) ([]Action, error) {
	switch ev.Type {
	case EvAdmit:
		if j.StallCause == CauseLoaderIdle {
			// The loader that had fallen silent writes again.
			j.resume(now)
			return []Action{ActPersist}, nil
		}
		return j.admitHeld(now), nil
	case EvHeartbeat:
		if j.StallCause == CauseLoaderIdle {
			// Alive after all, with nothing to write: idle.
			j.become(Idle, "loader_heartbeat", now)
			return []Action{ActPersist}, nil
		}
	case EvRelease:
		if j.isProbe(ev) {
			j.probe = 0
		}
	case EvProgress:
		if j.Hold && !j.isProbe(ev) {
			// Stalled in backoff, and the progress is not the probe's: a
			// write admitted before the hold that landed late, the
			// loader's report, the progress probe. The stall is over,
			// but nothing says the store takes writes again: releasing
			// the held writes would send them all into a store that
			// refused every one, as backoff itself never does on such
			// progress. Back to backoff, held, the probe schedule as it
			// was.
			j.become(Backoff, "progress_while_held", now)
			return []Action{ActPersist}, nil
		}
		j.become(Running, "progress_resumed", now)
		return []Action{ActPersist}, nil
	case EvThrottle, EvUpstreamError:
		j.failedProbe(ev, now)
	case EvTick:
		// Both clocks: the grace since the stall, and a full stall window
		// plus grace since the last progress or restart. The grace is not
		// counted from Since: read back from the record after a restart,
		// Since is a wall-clock time, and a wall clock set back behind it
		// would put the cancel off until it caught up, hours perhaps.
		if j.p.autoCancels(j.StallCause) && now.Sub(j.graceClock) >= j.p.CancelGrace &&
			now.Sub(j.stallClock) >= j.p.StallAfter+j.p.CancelGrace {
			// A stream is cancelled to run its cleanup, not to end it.
			j.Reopen = j.p.Stream
			j.become(Cancelling, "stalled", now)
			return []Action{ActPersist, ActAbortInflight, ActRunCancel}, nil
		}
	}
	return nil, nil
}

func stepCancelling(j *Job, ev Event, now time.Time) ([]Action, error) {
	return j.stepAction(ev, now, ActRunCancel)
}

func stepCleaning(j *Job, ev Event, now time.Time) ([]Action, error) {
	return j.stepAction(ev, now, ActRunCleanup)
}

// stepAction handles a job whose action (cancel or cleanup) is running.
func (j *Job) stepAction(ev Event, now time.Time, running Action) ([]Action, error) {
	switch ev.Type {
	case EvAdmit:
		if j.Reopen {
			// The stream takes writes again once cleaned up: its loader
			// waits (at most its queue timeout, then 429) rather than
			// being told with a 409 to drop its data.
			return []Action{ActHold}, nil
		}
		return nil, &NotAcceptingError{Job: j.id, State: j.State, Reason: j.Reason}
	case EvCancel:
		// Already cancelling: a forced request upgrades the running one,
		// and any request keeps a stream that sluice cancelled from
		// reopening: an operator wants it stopped.
		if ev.Force && !j.Force || j.Reopen {
			j.Force = j.Force || ev.Force
			j.Reopen = false
			return []Action{ActPersist}, nil
		}
		return nil, nil
	case EvComplete, EvReopen, EvDelete:
		return nil, &TransitionError{Job: j.id, From: j.State, Event: ev.Type}
	case EvActionSucceeded, EvActionFailed:
		if ev.Action != running {
			return nil, &TransitionError{Job: j.id, From: j.State, Event: ev.Type}
		}
		j.record(ev.Attempt)
	default:
		return nil, nil // late observations and ticks change nothing
	}
	name := running.String()
	switch {
	case ev.Type == EvActionFailed && !ev.Final:
		return nil, nil
	case ev.Type == EvActionFailed && running == ActRunCancel && j.Force:
		j.become(Cleaning, "cancel_failed_forced", now)
		return []Action{ActPersist, ActRunCleanup}, nil
	case ev.Type == EvActionFailed:
		j.become(Failed, name+"_failed", now)
		return []Action{ActPersist}, nil
	}
	reason := name + "_succeeded"
	if ev.Skipped {
		reason = name + " skipped: no action configured"
	}
	if running == ActRunCancel {
		j.become(Cleaning, reason, now)
		return []Action{ActPersist, ActRunCleanup}, nil
	}
	reopen := j.Reopen
	j.become(Cancelled, reason, now)
	if reopen {
		j.become(Running, "stream_reopened", now)
		return []Action{ActPersist, ActReopen}, nil
	}
	return []Action{ActPersist}, nil
}

func (j *Job) stepTerminal(ev Event, now time.Time) ([]Action, error) {
	switch ev.Type {
	case EvRelease, EvProgress, EvThrottle, EvUpstreamError, EvTick, EvHeartbeat:
		return nil, nil // late results of writes admitted before the end
	case EvAdmit:
		return nil, &NotAcceptingError{Job: j.id, State: j.State, Reason: j.Reason}
	case EvComplete:
		if j.State == Completed {
			return nil, nil
		}
	case EvCancel:
		if j.State == Cancelled {
			return nil, nil
		}
	case EvReopen:
		// A completed job is done by its loader's word; reopening it would
		// make that word false. A cancelled or failed one was stopped.
		if j.State == Cancelled || j.State == Failed {
			reason := ev.Reason
			if reason == "" {
				reason = "reopened"
			}
			j.become(Running, reason, now)
			return []Action{ActPersist, ActReopen}, nil
		}
	case EvDelete:
		return []Action{ActDelete}, nil
	}
	return nil, &TransitionError{Job: j.id, From: j.State, Event: ev.Type}
}
