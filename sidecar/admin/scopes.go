package admin

import (
	"time"

	"github.com/sluice-dev/sluice/limiter"
)

// ScopesStatus is the "scopes" object of /v1/status, present when scopes
// are on (SLUICE_SCOPES_MAX > 0): the scopes that have a limiter of their
// own because the store throttled them lately, the most recently used
// first. A scope that is not listed passes the store's limiter only.
type ScopesStatus struct {
	Max       int           `json:"max"`
	Evictions uint64        `json:"evictions"` // limiters dropped, least recently used, for a new scope at max
	Retired   uint64        `json:"retired"`   // limiters dropped once their scope was clean and recovered
	Active    []ScopeStatus `json:"active"`
}

// ScopeStatus is one scope's limiter in ScopesStatus.
type ScopeStatus struct {
	Scope        string    `json:"scope"`
	Phase        string    `json:"phase"`
	RateLimit    float64   `json:"rate_limit"` // SLUICE_RATE_UNIT per second
	Concurrency  int       `json:"concurrency_limit"`
	InFlight     int       `json:"in_flight"`
	Queued       int       `json:"queue_length"`
	PausedUntil  time.Time `json:"paused_until,omitzero"`
	LastThrottle time.Time `json:"last_throttle,omitzero"`
	LastReason   string    `json:"last_reason,omitempty"`
	Throttles    uint64    `json:"throttles"` // since its limiter was made, the throttle that made it included
	Since        time.Time `json:"since"`     // when its limiter was made
}

// scopesStatus reads the scopes' limiters for /v1/status.
func scopesStatus(s *limiter.Scopes) *ScopesStatus {
	if s == nil {
		return nil
	}
	scopes, stats := s.Status()
	st := &ScopesStatus{Max: stats.Max, Evictions: stats.Evictions, Retired: stats.Retired, Active: make([]ScopeStatus, len(scopes))}
	for i, sc := range scopes {
		st.Active[i] = ScopeStatus{
			Scope:        sc.Scope,
			Phase:        sc.Phase,
			RateLimit:    sc.Rate,
			Concurrency:  sc.Concurrency,
			InFlight:     sc.InFlight,
			Queued:       sc.Queued,
			PausedUntil:  sc.PausedUntil,
			LastThrottle: sc.LastThrottle,
			LastReason:   sc.LastReason,
			Throttles:    sc.Samples[limiter.Congested],
			Since:        sc.Since,
		}
	}
	return st
}
