package admin

import "time"

// FleetStatus is the "fleet" object of /v1/status, present when fleet
// mode is on: where this sidecar stands in its fleet, and the fleet's
// members as last fetched from Redis (the list is fetched at a refresh
// after the status is first read, then at most every 5s while it is).
type FleetStatus struct {
	Redis         string        `json:"redis"` // redacted
	Resource      string        `json:"resource"`
	Member        string        `json:"member"`
	Mode          string        `json:"mode"`     // joining, leased, safe_share, local, left
	Degraded      bool          `json:"degraded"` // the last refresh failed
	Lease         float64       `json:"lease"`    // SLUICE_RATE_UNIT per second
	LeaseUntil    time.Time     `json:"lease_until,omitzero"`
	Budget        float64       `json:"budget"`
	Capacity      float64       `json:"capacity,omitempty"` // SLUICE_FLEET_CAPACITY; absent: learned
	Demand        float64       `json:"demand"`
	Weight        float64       `json:"weight"`
	MemberCount   int           `json:"member_count"`
	LastRefresh   time.Time     `json:"last_refresh,omitzero"`
	LastError     string        `json:"last_error,omitempty"`
	RefreshErrors uint64        `json:"refresh_errors"`
	Members       []FleetMember `json:"members"`
}

// FleetMember is one member of the fleet in FleetStatus.
type FleetMember struct {
	ID     string  `json:"id"`
	Weight float64 `json:"weight"`
	Demand float64 `json:"demand"`
	Lease  float64 `json:"lease"`
	Age    string  `json:"age"` // since it joined
}
