package admin

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/state"
)

// FlowStatus is one job's place in the limiter's fair queue, in
// /v1/status: its class and weight, its share of the units granted over
// the last 5 to 10 seconds, and its writes' queue wait there.
type FlowStatus struct {
	Job                 string  `json:"job"`
	Priority            string  `json:"priority"`
	Weight              float64 `json:"weight"`
	Share               float64 `json:"share"`
	QueueWaitSeconds    float64 `json:"queue_wait_seconds"`
	QueueWaitMaxSeconds float64 `json:"queue_wait_max_seconds"`
	Queued              int     `json:"queued"`
}

// ClassStatus is one priority class in /v1/status: its writes waiting now
// and its grants since start.
type ClassStatus struct {
	Priority         string  `json:"priority"`
	Queued           int     `json:"queued"`
	Grants           uint64  `json:"grants"`
	QueueWaitSeconds float64 `json:"queue_wait_seconds_total"`
}

func flowStatuses(flows []limiter.FlowStats) []FlowStatus {
	out := make([]FlowStatus, 0, len(flows))
	for _, f := range flows {
		out = append(out, FlowStatus{
			Job: f.Key, Priority: f.Class.String(), Weight: f.Weight, Share: f.Share,
			QueueWaitSeconds: f.MeanWait.Seconds(), QueueWaitMaxSeconds: f.MaxWait.Seconds(), Queued: f.Queued,
		})
	}
	return out
}

func classStatuses(snap limiter.Snapshot) []ClassStatus {
	out := make([]ClassStatus, 0, len(snap.Classes))
	for _, c := range snap.Classes {
		out = append(out, ClassStatus{Priority: c.Class.String(), Queued: c.Queued, Grants: c.Grants, QueueWaitSeconds: c.WaitSum})
	}
	return out
}

// withFlow fills js's share of the limiter from its flow, if it wrote
// recently: the class and weight the proxy used (the registration's, else
// the headers'), the share and the wait.
func withFlow(js *state.JobSummary, flows []limiter.FlowStats) {
	i, ok := slices.BinarySearchFunc(flows, js.ID, func(f limiter.FlowStats, id string) int { return strings.Compare(f.Key, id) })
	if !ok {
		return
	}
	f := flows[i]
	js.Priority, js.Weight = f.Class.String(), f.Weight
	js.Share, js.Queued = f.Share, f.Queued
	js.QueueWaitSeconds, js.QueueWaitMaxSeconds = f.MeanWait.Seconds(), f.MaxWait.Seconds()
}

// jobsWithFlows is the job list with each job's share of the limiter.
func (s *API) jobsWithFlows() []state.JobSummary {
	jobs := s.d.Jobs.List()
	flows := s.flows(s.d.Limiter.Snapshot())
	for i := range jobs {
		withFlow(&jobs[i], flows)
	}
	return jobs
}

// flows is snap's flows (the store's limiter) with their writes' waits in
// the scopes' limiters added: a write to a throttled table waits in its
// scope's queue and then, most often, finds the store's limiter free, so
// the store's figures alone would show the job that is held back as not
// waiting at all. Share stays the store's.
func (s *API) flows(snap limiter.Snapshot) []limiter.FlowStats {
	if s.d.Scopes == nil || s.d.Scopes.Active() == 0 {
		return snap.Flows
	}
	scopes, _ := s.d.Scopes.Status()
	return addScopeWaits(snap.Flows, scopes)
}

// addScopeWaits returns flows (sorted by Key) with each scope's flows
// added: their queued writes, and their mean and longest waits on top of
// the store's (a write waits in its scopes' queues, then in the store's).
// A job that waits only in a scope gets a row of its own, with no share.
//
// The scopes' mean waits are each over that scope's writes only: a job
// writing to two tables, each write to one, would show twice its wait if
// they were added. Their total wait is spread over the job's writes (its
// grants in the store's limiter; in its scopes' while the store has
// granted it none), which also counts in full the wait of a write that
// went through several scopes.
func addScopeWaits(flows []limiter.FlowStats, scopes []limiter.ScopeStatus) []limiter.FlowStats {
	out := slices.Clone(flows)
	find := func(key string) (int, bool) {
		return slices.BinarySearchFunc(out, key, func(g limiter.FlowStats, k string) int { return strings.Compare(g.Key, k) })
	}
	type scoped struct {
		wait   time.Duration // summed over the scopes' grants
		grants uint64
	}
	waits := map[string]scoped{}
	for _, sc := range scopes {
		for _, f := range sc.Flows {
			i, ok := find(f.Key)
			if !ok {
				out = slices.Insert(out, i, limiter.FlowStats{Key: f.Key, Class: f.Class, Weight: f.Weight})
			}
			g := &out[i]
			g.Queued += f.Queued
			g.QueuedCost += f.QueuedCost
			g.MaxWait += f.MaxWait
			w := waits[f.Key]
			w.wait += f.MeanWait * time.Duration(f.Grants)
			w.grants += f.Grants
			waits[f.Key] = w
		}
	}
	for key, w := range waits {
		i, _ := find(key)
		g := &out[i]
		if writes := cmp.Or(g.Grants, w.grants); writes > 0 {
			g.MeanWait += w.wait / time.Duration(writes)
		}
	}
	return out
}
