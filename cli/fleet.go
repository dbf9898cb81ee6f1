package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-dev/sluice/sidecar/admin"
)

// printFleet writes the fleet part of `sluice status`: where this sidecar
// stands in its fleet (the rung of the ladder, its lease, the fleet's
// budget) and the members as the sidecar last fetched them. Rates are in
// unit (SLUICE_RATE_UNIT) per second.
func printFleet(w io.Writer, f *admin.FleetStatus, unit string, now time.Time) error {
	rate := func(v float64) string { return fmt.Sprintf("%.1f %s/s", v, unit) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("fleet", fmt.Sprintf("%s on %s, as %s", f.Resource, f.Redis, f.Member))
	row("fleet mode", fleetModeWords(f, now))
	budget := "learned"
	if f.Capacity > 0 {
		budget = "configured"
	}
	switch f.Mode {
	case "leased":
		row("lease", fmt.Sprintf("%s until %s, of a budget of %s (%s)", rate(f.Lease), when(f.LeaseUntil, now), rate(f.Budget), budget))
	case "safe_share", "local":
		row("last lease", fmt.Sprintf("%s, of a budget of %s (%s)", rate(f.Lease), rate(f.Budget), budget))
	default:
		row("budget", fmt.Sprintf("%s (%s)", rate(f.Budget), budget))
	}
	row("demand", fmt.Sprintf("%s, weight %g", rate(f.Demand), f.Weight))
	row("last refresh", when(f.LastRefresh, now))
	if f.RefreshErrors > 0 || f.LastError != "" {
		row("refresh errors", fmt.Sprintf("%d, last: %s", f.RefreshErrors, orNone(f.LastError)))
	}
	row("members", f.MemberCount)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(f.Members) == 0 {
		if f.MemberCount > 0 {
			_, err := fmt.Fprintln(w, "  (the member list is fetched at the sidecar's next refresh: run again)")
			return err
		}
		return nil
	}
	members := slices.Clone(f.Members)
	slices.SortFunc(members, func(a, b admin.FleetMember) int { return strings.Compare(a.ID, b.ID) })
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  MEMBER\tWEIGHT\tDEMAND\tLEASE\tAGE\n")
	for _, m := range members {
		id := m.ID
		if id == f.Member {
			id += " (this)"
		}
		fmt.Fprintf(tw, "  %s\t%g\t%.1f\t%.1f\t%s\n", id, m.Weight, m.Demand, m.Lease, m.Age)
	}
	return tw.Flush()
}

// fleetModeWords says what the rung of the fallback ladder means for the
// sidecar's rate.
func fleetModeWords(f *admin.FleetStatus, now time.Time) string {
	var s string
	switch f.Mode {
	case "joining":
		s = "joining: no answer from the fleet yet, own limit alone"
	case "leased":
		s = "leased: no faster than its lease and its own limit"
	case "safe_share":
		s = "safe_share: Redis has not answered; capped at its share of the last budget"
	case "local":
		s = "local: Redis has not answered for long; own limit alone"
	case "left":
		s = "left: stopping"
	default:
		s = orDash(f.Mode)
	}
	if f.Degraded {
		s += " (degraded: the last refresh failed)"
	}
	return s
}
