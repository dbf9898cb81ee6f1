package proxy

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/state"
)

// HeaderWeight and HeaderPriority give the weight and the priority class
// (live or bulk) of the write's job in the limiter's fair queue, for a job
// whose registration does not set them (see state.Settings). Bounds and
// names as for registration: state.MinWeight to state.MaxWeight, and
// state.PriorityLive or state.PriorityBulk.
const (
	HeaderWeight   = "X-Sluice-Weight"
	HeaderPriority = "X-Sluice-Priority"
)

// FlowSettings is what the proxy reads of a job's registration to place
// its writes in the limiter's fair queue; a Jobs that implements it has
// registrations win over headers. A weight of 0 and a priority of "" mean
// unset.
type FlowSettings interface {
	FlowSettings(job string) (weight float64, priority string)
}

// flowError is a bad X-Sluice-Weight or X-Sluice-Priority: the loader's
// 400.
type flowError struct{ code, msg, header, value string }

func (e *flowError) write(w http.ResponseWriter) {
	apierror.Write(w, http.StatusBadRequest, e.code, e.msg, map[string]any{"header": e.header, "value": apierror.Truncate(e.value, 64)})
}

// flowOf is the limiter flow of a write of job: the job's registered
// weight and class, else its headers', else 1 and bulk. A header out of
// bounds is an error even where the registration wins: the loader asked
// for something sluice cannot do.
func (p *Proxy) flowOf(r *http.Request, job string) (limiter.Flow, *flowError) {
	f := limiter.Flow{Key: job, Weight: 1, Class: limiter.Bulk}
	var weight float64
	var priority string
	if fs, ok := p.jobs.(FlowSettings); ok {
		weight, priority = fs.FlowSettings(job)
	}
	if h := r.Header.Get(HeaderWeight); h != "" {
		w, err := strconv.ParseFloat(h, 64)
		if err != nil || !state.ValidWeight(w) {
			return f, &flowError{"invalid_weight", fmt.Sprintf("%s must be a number in [%v, %v]", HeaderWeight, state.MinWeight, state.MaxWeight), HeaderWeight, h}
		}
		if weight == 0 {
			weight = w
		}
	}
	if h := r.Header.Get(HeaderPriority); h != "" {
		if !state.ValidPriority(h) {
			return f, &flowError{"invalid_priority", fmt.Sprintf("%s must be %s or %s", HeaderPriority, state.PriorityLive, state.PriorityBulk), HeaderPriority, h}
		}
		if priority == "" {
			priority = h
		}
	}
	if weight > 0 {
		f.Weight = weight
	}
	if priority == state.PriorityLive {
		f.Class = limiter.Live
	}
	return f, nil
}
