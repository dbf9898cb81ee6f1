package state

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sluice-dev/sluice/internal/redact"
)

// JobSummary is one line of the job list (GET /v1/jobs).
type JobSummary struct {
	ID           string            `json:"id"`
	State        State             `json:"state"`
	Since        time.Time         `json:"since"`
	Reason       string            `json:"reason,omitempty"`
	StallCause   StallCause        `json:"stall_cause,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Created      time.Time         `json:"created"`
	LastProgress *time.Time        `json:"last_progress,omitempty"`
	Totals       Totals            `json:"totals"`
	Loader       LoaderProgress    `json:"loader"`
	Rate         Rates             `json:"rate"`
	InFlight     int               `json:"in_flight"`
	Stalls       uint64            `json:"stalls"`
	// Progress is set once the job has a declared total (SetTotal).
	Progress *JobProgress `json:"progress,omitempty"`
	// Priority and Weight are the job's class and weight in the limiter's
	// fair queue: as registered; else as its writes said
	// (X-Sluice-Priority, X-Sluice-Weight) once it has written recently;
	// else bulk (the default job: SLUICE_DEFAULT_JOB_PRIORITY) and 1.
	Priority string  `json:"priority"`
	Weight   float64 `json:"weight"`
	// Share is the fraction of the units the limiter granted over the last
	// 5 to 10 seconds that went to this job; QueueWaitSeconds the mean time its
	// writes waited for them there, QueueWaitMaxSeconds the longest;
	// Queued its writes waiting now. The admin API fills them from the
	// limiter (FlowStats); the job manager does not know them.
	Share               float64 `json:"share"`
	QueueWaitSeconds    float64 `json:"queue_wait_seconds"`
	QueueWaitMaxSeconds float64 `json:"queue_wait_max_seconds"`
	Queued              int     `json:"queued"`
}

// JobView is the full view of a job (GET /v1/jobs/{id}).
type JobView struct {
	JobSummary
	// ProbeAt is the next probe slot of a held job.
	ProbeAt  *time.Time   `json:"probe_at,omitempty"`
	Force    bool         `json:"force,omitempty"`
	History  []Transition `json:"history"`
	Attempts []Attempt    `json:"attempts"`
	// Checkpoint is the latest durable checkpoint; Checkpoints are the
	// retained durable ones, oldest first.
	Checkpoint  *Checkpoint       `json:"checkpoint,omitempty"`
	Checkpoints []Checkpoint      `json:"checkpoints,omitempty"`
	Settings    EffectiveSettings `json:"settings"`
}

// EffectiveSettings are a job's settings after inheriting the defaults.
type EffectiveSettings struct {
	StallAfter  string `json:"stall_after"`
	CancelGrace string `json:"cancel_grace"`
	Deadline    string `json:"deadline,omitempty"`
	AutoCancel  bool   `json:"auto_cancel"`
	// AutoCancelCauses are the stall causes that cancel the job (with
	// AutoCancel); always a list, empty for none.
	AutoCancelCauses  []StallCause `json:"auto_cancel_causes"`
	HeartbeatInterval string       `json:"heartbeat_interval,omitempty"`
	// Stream: the default job, which never completes and reopens after a
	// cancel of sluice's own.
	Stream       bool        `json:"stream,omitempty"`
	Cancel       *ActionSpec `json:"cancel,omitempty"`
	Cleanup      *ActionSpec `json:"cleanup,omitempty"`
	ProbeURL     string      `json:"probe_url,omitempty"`
	ProbePointer string      `json:"probe_pointer,omitempty"`
}

func (m *Manager) summaryLocked(e *entry, now time.Time) JobSummary {
	j := e.job
	s := JobSummary{
		ID: j.ID(), State: j.State, Since: j.Since, Reason: j.Reason, StallCause: j.StallCause,
		Labels: e.settings.merge(m.defaults).Labels, Created: j.Created,
		Totals: e.totals, Loader: e.loader, Rate: e.win.rates(now, e.winSince), InFlight: e.inflight, Stalls: j.Stalls,
		Progress: e.progressLocked(now),
	}
	s.Weight, s.Priority = e.settings.Weight, m.priorityLocked(j.ID(), e.settings)
	if s.Weight == 0 {
		s.Weight = 1
	}
	if s.Priority == "" {
		s.Priority = PriorityBulk
	}
	if !e.lastProgress.IsZero() {
		t := e.lastProgress
		s.LastProgress = &t
	}
	return s
}

func (m *Manager) viewLocked(e *entry, now time.Time) JobView {
	j := e.job
	eff := e.settings.merge(m.defaults)
	p := j.Policy()
	v := JobView{
		JobSummary: m.summaryLocked(e, now),
		Force:      j.Force,
		History:    slices.Clone(j.History),
		Attempts:   slices.Clone(j.Attempts),
		Settings: EffectiveSettings{
			StallAfter: p.StallAfter.String(), CancelGrace: p.CancelGrace.String(), Deadline: durString(p.Deadline),
			AutoCancel: p.AutoCancel, AutoCancelCauses: append([]StallCause{}, p.AutoCancelCauses...),
			HeartbeatInterval: durString(p.HeartbeatInterval), Stream: p.Stream,
			Cancel: redactSpec(eff.Cancel), Cleanup: redactSpec(eff.Cleanup),
			ProbeURL: redact.URL(eff.ProbeURL), ProbePointer: eff.ProbePointer,
		},
	}
	if j.Hold {
		t := j.ProbeAt()
		v.ProbeAt = &t
	}
	for _, c := range e.checkpoints {
		if c.Seq <= e.durableSeq {
			v.Checkpoints = append(v.Checkpoints, c)
		}
	}
	if n := len(v.Checkpoints); n > 0 {
		c := v.Checkpoints[n-1]
		v.Checkpoint = &c
	}
	return v
}

// priorityLocked is job id's priority as set, by its settings or for the
// default job by the operator; "" when neither says. Requires that m.mu is
// held.
func (m *Manager) priorityLocked(id string, s Settings) string {
	if s.Priority == "" && id == m.cfg.DefaultJob {
		return m.cfg.DefaultJobPriority
	}
	return s.Priority
}

// FlowSettings returns job id's weight and priority as set (by its
// registration, or for the default job's priority by the operator): 0
// and "" where nothing is set, and for a job not known yet. The proxy
// falls back on a write's headers, then on 1 and bulk.
func (m *Manager) FlowSettings(id string) (weight float64, priority string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.jobs[id]; ok {
		return e.settings.Weight, m.priorityLocked(id, e.settings)
	}
	return 0, m.priorityLocked(id, Settings{})
}

func jsonValid(b []byte) bool { return json.Valid(b) }

// redactSpec returns a copy of an action fit to show: a password in its URL,
// its header values, its body and a command's credential arguments may be
// credentials for the store's admin API, and views end up in logs,
// terminals and bug reports.
func redactSpec(a *ActionSpec) *ActionSpec {
	if a == nil {
		return nil
	}
	c := *a
	c.URL = redact.URL(a.URL)
	if len(a.Argv) > 0 {
		c.Argv = redact.Argv(a.Argv)
	}
	if len(a.Headers) > 0 {
		c.Headers = make(map[string]string, len(a.Headers))
		for k := range a.Headers {
			c.Headers[k] = redact.Placeholder
		}
	}
	if a.Body != "" {
		c.Body = fmt.Sprintf("%s (%d bytes)", redact.Placeholder, len(a.Body))
	}
	return &c
}
