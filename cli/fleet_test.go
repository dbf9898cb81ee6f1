package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/sidecar/admin"
)

// TestStatusFleet: `sluice status` shows fleet mode when /v1/status has a
// fleet object (the rung of the ladder in words, the lease, the budget and
// whether it is configured, the refresh errors, the members with this
// sidecar marked), and nothing of it when fleet mode is off.
func TestStatusFleet(t *testing.T) {
	now := time.Now()
	leased := &admin.FleetStatus{
		// The Redis URL as the sidecar shows it.
		Redis: redact.URL("redis://:pw@redis.test:6379"), Resource: "dynamodb:orders", Member: "pod-b-7-1a2b",
		Mode: "leased", Lease: 225, LeaseUntil: now.Add(2 * time.Second), Budget: 900, Capacity: 900,
		Demand: 100000, Weight: 1, MemberCount: 3, LastRefresh: now.Add(-time.Second),
		Members: []admin.FleetMember{
			{ID: "pod-c-9-ffee", Weight: 2, Demand: 100000, Lease: 450, Age: "2m0s"},
			{ID: "pod-a-3-0042", Weight: 1, Demand: 100000, Lease: 225, Age: "5m3s"},
			{ID: "pod-b-7-1a2b", Weight: 1, Demand: 100000, Lease: 225, Age: "1s"},
		},
	}
	degraded := &admin.FleetStatus{
		Redis: "rediss://redis.test:6380", Resource: "s3:bucket/prefix", Member: "pod-a", Mode: "safe_share",
		Degraded: true, Lease: 300, Budget: 1200, Demand: 450, Weight: 1, MemberCount: 4,
		LastRefresh: now.Add(-7 * time.Second), LastError: "dial tcp 10.0.0.7:6380: i/o timeout", RefreshErrors: 5,
	}
	f := func(name string, fl *admin.FleetStatus, want, notWant []string) {
		t.Helper()
		raw, err := json.Marshal(admin.Status{Readiness: "ready", RateUnit: "requests", Jobs: map[string]int{}, Fleet: fl})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := printStatus(&out, raw, now); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: status lacks %q:\n%s", name, w, out.String())
			}
		}
		for _, w := range notWant {
			if strings.Contains(out.String(), w) {
				t.Errorf("%s: status shows %q:\n%s", name, w, out.String())
			}
		}
	}
	f("off", nil, []string{"readiness", "uptime"}, []string{"fleet", "lease", "members"})
	f("leased", leased, []string{
		"fleet ", "dynamodb:orders on redis://:" + redact.Placeholder + "@redis.test:6379, as pod-b-7-1a2b\n",
		"leased: no faster than its lease and its own limit\n",
		"225.0 requests/s until ", "(in 2s), of a budget of 900.0 requests/s (configured)\n",
		"demand ", "100000.0 requests/s, weight 1\n",
		"(1s ago)", "members ", " 3\n",
		"MEMBER", "WEIGHT", "DEMAND", "LEASE", "AGE",
		"pod-b-7-1a2b (this)", "450.0", "5m3s",
	}, []string{"refresh errors", "degraded", "run again"})
	f("degraded", degraded, []string{
		"safe_share: Redis has not answered; capped at its share of the last budget (degraded: the last refresh failed)\n",
		"last lease ", "300.0 requests/s, of a budget of 1200.0 requests/s (learned)\n",
		"refresh errors ", "5, last: dial tcp 10.0.0.7:6380: i/o timeout\n",
		"(7s ago)",
		"the member list is fetched at the sidecar's next refresh",
	}, []string{"MEMBER", "until"})

	// Members sorted by id, so that successive calls read alike.
	var out bytes.Buffer
	if err := printFleet(&out, leased, "bytes", now); err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(out.String(), "MEMBER")
	a, b, c := strings.Index(table, "pod-a-3"), strings.Index(table, "pod-b-7"), strings.Index(table, "pod-c-9")
	if !(0 <= a && a < b && b < c) || !strings.Contains(out.String(), "225.0 bytes/s") {
		t.Errorf("members not sorted by id, or not in the rate unit:\n%s", out.String())
	}
}
