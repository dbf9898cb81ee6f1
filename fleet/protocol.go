package fleet

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scripts are run by hash (EVALSHA); a server that has not cached one
// (restarted, SCRIPT FLUSH, a new replica) answers NOSCRIPT and the script
// is sent whole (EVAL) in the same call: redis.Script.Run.
var (
	//go:embed scripts/update.lua
	updateSrc string
	//go:embed scripts/leave.lua
	leaveSrc string

	updateScript = redis.NewScript(updateSrc)
	leaveScript  = redis.NewScript(leaveSrc)
)

// keyPrefix starts every key fleet mode writes, so that an operator can
// find them (SCAN MATCH sluice:fleet:*) on a Redis shared with others.
const keyPrefix = "sluice:fleet:"

// Keys returns the two Redis keys of resource's budget: the members hash
// and the state hash. The resource is the hash tag ({…}), so both live in
// the same slot of a Redis Cluster and one script may touch both.
func Keys(resource string) (members, state string) {
	tag := keyPrefix + "{" + resource + "}:"
	return tag + "members", tag + "state"
}

// maxResourceLen bounds a resource name (it is part of two keys).
const maxResourceLen = 200

// ValidResource reports why s cannot name a shared budget, or nil: 1–200
// characters of A-Za-z0-9 and ._:/@=+-, so that it reads the same in keys,
// logs and metrics, and cannot end the hash tag.
func ValidResource(s string) error {
	if s == "" || len(s) > maxResourceLen {
		return fmt.Errorf("fleet: resource must be 1-%d characters, got %d", maxResourceLen, len(s))
	}
	for _, r := range s {
		if !resourceRune(r) {
			return fmt.Errorf("fleet: resource %q: character %q not allowed (A-Za-z0-9 and ._:/@=+- only)", s, r)
		}
	}
	return nil
}

func resourceRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:/@=+-", r)
}

// Params tune the protocol. Every member of a fleet should use the same.
type Params struct {
	// MemberTTL: a member that has not reported for this long is dropped
	// and its share goes to the others (a member killed without leaving).
	MemberTTL time.Duration
	// Period is the budget's growth step; two periods are its cooldown
	// between cuts.
	Period time.Duration
	// KeyTTL: the keys of a resource nobody reported to for this long
	// expire.
	KeyTTL time.Duration
	// Beta is the cut: the budget goes to Beta of what the fleet took.
	Beta float64
	// Recover is how long the budget's curve takes back to the level of
	// the last cut.
	Recover time.Duration
}

// Report is what one member tells the fleet at a refresh. Rates are in
// units/s (the sidecars' SLUICE_RATE_UNIT, the same across the fleet).
type Report struct {
	Member string
	// Seq orders this member's reports: one it already made (a retry) or
	// an older one that arrives late changes nothing. It must grow with
	// every new report.
	Seq     uint64
	Demand  float64 // what the member would send if it were unlimited
	Weight  float64 // its share relative to the others'; > 0
	Goodput float64 // what the store took from it lately
	// Throttles is the count of throttles the member saw while it
	// enforced a lease of ThrottleEpoch, since it got the first such
	// lease: cumulative, so a report made twice counts once.
	ThrottleEpoch string
	Throttles     uint64
	// Capacity is the store's configured budget; 0 lets the fleet learn it.
	Capacity float64
	// HintBudget starts a fleet that has no state: the member's initial
	// rate (HintKnown false), or the budget it last learned from this
	// fleet (HintKnown true), with the fleet's weight then (HintWeight),
	// after the server lost its state.
	HintBudget float64
	HintKnown  bool
	HintWeight float64
	// MinRate is the least budget per member.
	MinRate float64
	// WantMembers asks for the member list (for /v1/status).
	WantMembers bool
}

// Grant is the fleet's answer to a Report.
type Grant struct {
	Lease   float64 // what the member may send, units/s
	Budget  float64 // the fleet's budget, units/s
	Members int     // live members, the reporter included
	Weight  float64 // their total weight
	Epoch   string  // the budget's epoch: report throttles seen under this lease with it
	Now     time.Time
	Demand  float64 // the members' total demand
	Applied bool    // false: the report was a retry or older than one already applied
	// Throttles counts the throttles the fleet's members reported since
	// its state was created.
	Throttles uint64
	// List is the members, when the Report asked for them.
	List []MemberInfo
}

// MemberInfo is one member as the fleet sees it.
type MemberInfo struct {
	ID      string
	Weight  float64
	Demand  float64
	Lease   float64
	Joined  time.Time
	Updated time.Time
}

// errBadReply is a script answer that cannot be read: a bug, or a server
// that does not run the script as Redis does.
var errBadReply = errors.New("fleet: malformed reply from the update script")

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// fmtFloat writes v in fixed notation, which every Lua's tonumber reads.
func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func fmtMillis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// update runs the update script for r: one round trip.
func update(ctx context.Context, rdb redis.Scripter, resource string, p Params, r Report) (Grant, error) {
	for _, v := range []float64{r.Demand, r.Weight, r.Goodput, r.Capacity, r.HintBudget, r.HintWeight, r.MinRate} {
		if !finite(v) || v < 0 {
			return Grant{}, fmt.Errorf("fleet: report %+v: rates and weights must be finite and >= 0", r)
		}
	}
	if !(r.Weight > 0) {
		return Grant{}, fmt.Errorf("fleet: report weight %v must be > 0", r.Weight)
	}
	epoch := r.ThrottleEpoch
	if epoch == "" {
		epoch = "-" // a word, so the record splits the same
	}
	bit := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	members, state := Keys(resource)
	res, err := updateScript.Run(ctx, rdb, []string{members, state},
		r.Member, strconv.FormatUint(r.Seq, 10), fmtFloat(r.Demand), fmtFloat(r.Weight), fmtFloat(r.Goodput),
		epoch, strconv.FormatUint(r.Throttles, 10), fmtFloat(r.Capacity),
		fmtFloat(r.HintBudget), bit(r.HintKnown), fmtFloat(r.HintWeight), fmtFloat(r.MinRate),
		fmtMillis(p.MemberTTL), fmtMillis(p.Period), fmtFloat(p.Beta), fmtMillis(p.Recover), fmtMillis(p.KeyTTL),
		bit(r.WantMembers),
	).StringSlice()
	if err != nil {
		return Grant{}, err
	}
	return parseGrant(res)
}

// parseGrant reads the update script's reply.
func parseGrant(res []string) (Grant, error) {
	const head, per = 9, 6
	if len(res) < head || (len(res)-head)%per != 0 {
		return Grant{}, errBadReply
	}
	var g Grant
	var err error
	num := func(s string) float64 {
		v, e := strconv.ParseFloat(s, 64)
		if e != nil || !finite(v) {
			err = errBadReply
		}
		return v
	}
	millis := func(s string) time.Time {
		v, e := strconv.ParseInt(s, 10, 64)
		if e != nil {
			err = errBadReply
		}
		return time.UnixMilli(v)
	}
	g.Lease = num(res[0])
	g.Budget = num(res[1])
	g.Members = int(num(res[2]))
	g.Weight = num(res[3])
	g.Epoch = res[4]
	g.Now = millis(res[5])
	g.Demand = num(res[6])
	g.Applied = res[7] == "1"
	g.Throttles = uint64(num(res[8]))
	for i := head; i < len(res); i += per {
		g.List = append(g.List, MemberInfo{
			ID: res[i], Weight: num(res[i+1]), Demand: num(res[i+2]), Lease: num(res[i+3]),
			Joined: millis(res[i+4]), Updated: millis(res[i+5]),
		})
	}
	if err != nil {
		return Grant{}, err
	}
	return g, nil
}

// leave removes member from resource's fleet: its share goes back to the
// others at their next refresh.
func leave(ctx context.Context, rdb redis.Scripter, resource, member string) error {
	members, state := Keys(resource)
	return leaveScript.Run(ctx, rdb, []string{members, state}, member).Err()
}

// Protocol defaults.
const (
	// defaultBeta: a cut takes the budget to 0.95 of what the fleet took.
	// The members' own limiters cut deeper at once (to 0.9 of their
	// goodput), so the shared budget need only step below the store's
	// capacity, not empty its queue.
	defaultBeta = 0.95
	// defaultRecover: the budget's curve climbs back to the level of the
	// last cut in 4s, then probes past it, slowly for about as long. A
	// store's burst allowance hides a budget past its capacity for a
	// while, so a steeper probe is past it by far when the first throttle
	// comes, and makes the members' own limiters cut more often.
	defaultRecover = 4 * time.Second
)
