package state

import (
	"fmt"
	"slices"
	"strings"
)

// StallCause says why a job is stalled. The cause decides the remedy: a
// stall always alerts, and it cancels the job (then cleans up) only when
// its cause is among the job's auto-cancel causes (Policy.AutoCancelCauses,
// DefaultAutoCancelCauses unless the operator says otherwise).
type StallCause string

// Stall causes. The first four are counted from what a job's writes got
// since its last progress (Job.seen; the most frequent wins, ties in this
// order). A new kind of failed attempt (Observation kinds) gets a cause
// here and a row in countedCauses, and nothing else has to change.
const (
	// CauseStoreThrottling: the store throttled the job's writes (429,
	// 503 overloaded, per-item rejections). The job is trying and not
	// getting through; cancelled by default.
	CauseStoreThrottling StallCause = "store_throttling"
	// CauseUpstreamTimeouts: the job's writes timed out; cancelled by
	// default, like throttling.
	CauseUpstreamTimeouts StallCause = "upstream_timeouts"
	// CauseUpstreamErrors: the store answered with errors (5xx, or a 4xx
	// such as an expired credential). An outage ends, and a cancel would
	// turn it into lost data: alert only, unless the operator opts in.
	CauseUpstreamErrors StallCause = "upstream_errors"
	// CauseUpstreamUnreachable: the store could not be reached at all
	// (ObsUnreachable). Like errors: alert only unless opted in.
	CauseUpstreamUnreachable StallCause = "upstream_unreachable"
	// CauseLoaderIdle: the job was registered with a heartbeat interval and
	// its loader neither wrote nor reported for that long: it hung. A job
	// without a heartbeat interval whose loader goes quiet is Idle, never
	// stalled with this cause. Alert only unless opted in.
	CauseLoaderIdle StallCause = "loader_idle"
	// CauseProbeNoProgress: the job's progress probe (a load the store runs
	// itself) showed no progress, and no write through sluice failed. A
	// load that finished looks the same, so: alert only unless opted in.
	CauseProbeNoProgress StallCause = "probe_no_progress"
)

// countedCauses are the causes counted per failed write, in the order that
// breaks ties; Job.seen has one counter per entry.
var countedCauses = [...]StallCause{
	CauseStoreThrottling, CauseUpstreamTimeouts, CauseUpstreamErrors, CauseUpstreamUnreachable,
}

// StallCauses lists every cause, counted ones first.
func StallCauses() []StallCause {
	return append(countedCauses[:len(countedCauses):len(countedCauses)], CauseLoaderIdle, CauseProbeNoProgress)
}

// DefaultAutoCancelCauses are the causes that cancel a stalled job unless
// the operator chose others: the store throttles it or times out, that is
// the job is trying and cannot get through, and holding on to it keeps
// the store busy for nothing.
func DefaultAutoCancelCauses() []StallCause {
	return []StallCause{CauseStoreThrottling, CauseUpstreamTimeouts}
}

// ParseStallCause parses a cause name.
func ParseStallCause(name string) (StallCause, error) {
	c := StallCause(name)
	if !slices.Contains(StallCauses(), c) {
		return "", fmt.Errorf("state: unknown stall cause %q (known: %s)", name, causeNames(StallCauses()))
	}
	return c, nil
}

// ParseStallCauses parses a comma-separated list of cause names; "none" is
// the empty list (not nil), since an unset list means "the defaults".
func ParseStallCauses(list string) ([]StallCause, error) {
	out := []StallCause{}
	if strings.TrimSpace(list) == "none" {
		return out, nil
	}
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		c, err := ParseStallCause(name)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

func causeNames(cs []StallCause) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = string(c)
	}
	return strings.Join(names, ", ")
}

// countedIndex returns the index of c in countedCauses; a cause that is not
// counted (or unknown) counts as an error.
func countedIndex(c StallCause) int {
	if i := slices.Index(countedCauses[:], c); i >= 0 {
		return i
	}
	return slices.Index(countedCauses[:], CauseUpstreamErrors)
}
