package admin

import (
	"slices"
	"strings"

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

func flowStatuses(snap limiter.Snapshot) []FlowStatus {
	out := make([]FlowStatus, 0, len(snap.Flows))
	for _, f := range snap.Flows {
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
	flows := s.d.Limiter.Snapshot().Flows
	for i := range jobs {
		withFlow(&jobs[i], flows)
	}
	return jobs
}
