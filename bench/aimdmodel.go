package bench

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"time"
)

// The idealised-law model asks whether any law that learns of the other
// sidecars only through its own throttles could meet the independent
// sidecars' targets on the independent scenario's store, once every
// friction of a real sidecar is taken away. Without a shared budget
// (fleet mode) the sidecars' own throttles are all they learn of each
// other; the model separates what that limits from what sluice's law does
// with it.
//
// It keeps only what the argument needs: N senders, each a Poisson
// process at its own rate, on a token bucket of the scenario's capacity
// and burst, each learning of a refusal a saturated store's latency after
// it sent (the simulated store's latency is pinned at its maximum from 90%
// utilisation, so it carries no news). Their law is the ideal one for
// fairness, Chiu and Jain's: every sender climbs by the same absolute step
// and cuts by a fraction at a throttle, then ignores throttles for a
// while, so that one episode of the bucket running dry costs one cut.
// Nothing else: no slots, no latency finding, no capacity probe. A sender
// starts in one of three ways (modelStart). A sender carries at most what
// the scenario's greedy writers can, one write each per latency. The
// store's events go into a run like any contender's, and
// analyseIndependent measures it.

// aimdLaw is the idealised law.
type aimdLaw struct {
	cut  float64 // the multiplicative decrease, a fraction of the rate
	rise float64 // the additive increase, requests/s per second, the same for every sender
	// deaf is how long after a cut the sender ignores throttles: a refusal
	// that comes in the same episode (the bucket dry) as the one it cut
	// for is the same news.
	deaf time.Duration
}

func (l aimdLaw) String() string {
	return fmt.Sprintf("%g%%, %g/s², %v", 100*l.cut, l.rise, l.deaf)
}

// aimdGrid is the settings the model sweeps: from laws gentle enough to
// throttle well under 1% to ones quick enough (climbs of 32–64 requests/s
// per second, deaf for one latency) to undo any start within the
// scenario, at the throttles that costs.
func aimdGrid() []aimdLaw {
	var laws []aimdLaw
	for _, c := range []float64{0.02, 0.05, 0.1, 0.2, 0.3, 0.5} {
		for _, r := range []float64{1, 2, 4, 8, 16, 32, 64} {
			for _, d := range []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second} {
				laws = append(laws, aimdLaw{cut: c, rise: r, deaf: d})
			}
		}
	}
	return laws
}

// modelStart is how a sender starts, not knowing its share.
type modelStart int

const (
	// startFirst doubles until the first refusal, then halves, as TCP's
	// slow start does (and sluice's startup, from the goodput). On a store
	// the incumbents hold at about 1% refusals, the joiner's first refusal
	// comes at a rate that says nothing of its share.
	startFirst modelStart = iota
	// startSustained doubles until refusals in modelSustained dry
	// episodes (refusals at least modelEpisodeGap apart) within
	// modelEpisodeWindow: the store refusing again and again, as it does
	// once the senders' total passes its capacity, not the incumbents'
	// one in a hundred. It then goes back to the rate the refused writes
	// were sent at, a latency earlier, and cuts once.
	startSustained
	// startFair starts every sender, the joiner too, at its fair share:
	// the oracle, to separate what the start costs from what the law
	// holds.
	startFair
)

func (st modelStart) String() string {
	switch st {
	case startFirst:
		return "doubling to the first refusal"
	case startSustained:
		return fmt.Sprintf("doubling to refusals in %d episodes", modelSustained)
	default:
		return "at the fair share"
	}
}

const (
	modelSustained     = 3
	modelEpisodeGap    = 100 * time.Millisecond
	modelEpisodeWindow = time.Second

	modelStep        = time.Millisecond
	modelStartRate   = 10.0 // requests/s a sender starts from, doubling every modelStartDouble
	modelStartDouble = 500 * time.Millisecond
)

// tokenBucket is the model's store: it takes a write while it holds a
// token, and refills at its capacity up to its burst.
type tokenBucket struct {
	tokens, max, rate float64
}

func newTokenBucket(rate float64, burst time.Duration) *tokenBucket {
	b := &tokenBucket{max: rate * burst.Seconds(), rate: rate}
	b.tokens = b.max
	return b
}

func (b *tokenBucket) refill(d time.Duration) {
	b.tokens = math.Min(b.tokens+b.rate*d.Seconds(), b.max)
}

func (b *tokenBucket) take() bool {
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

type modelSender struct {
	rate      float64
	how       modelStart
	starting  bool            // doubling, until how says it has found the store full
	episodes  []time.Duration // startSustained: when the refusals that count came, within modelEpisodeWindow
	deafUntil time.Duration   // throttles before this are ignored
	start     time.Duration
	next      time.Duration // its next write (a Poisson process at rate)
	answers   []modelAnswer // sent, not yet known to it, in order
}

type modelAnswer struct {
	at      time.Duration
	refused bool
}

// learn applies the answers that have reached the sender by now, each
// sent latency before it came.
func (s *modelSender) learn(now, latency time.Duration, l aimdLaw) {
	k := 0
	for ; k < len(s.answers) && s.answers[k].at <= now; k++ {
		switch {
		case !s.answers[k].refused:
		case s.starting && s.how == startSustained:
			if s.storeFull(now) {
				s.starting = false
				s.rate *= math.Pow(2, -latency.Seconds()/modelStartDouble.Seconds()) * (1 - l.cut)
				s.deafUntil = now + l.deaf
			}
		case now < s.deafUntil:
		case s.starting:
			s.starting = false
			s.rate /= 2
			s.deafUntil = now + l.deaf
		default:
			s.rate *= 1 - l.cut
			s.deafUntil = now + l.deaf
		}
	}
	s.answers = s.answers[k:]
}

// storeFull counts a refusal that came at now toward startSustained's
// episodes, and reports whether they now say the store is full.
func (s *modelSender) storeFull(now time.Duration) bool {
	if n := len(s.episodes); n > 0 && now-s.episodes[n-1] < modelEpisodeGap {
		return false // the same dry episode
	}
	s.episodes = append(s.episodes, now)
	for now-s.episodes[0] > modelEpisodeWindow {
		s.episodes = s.episodes[1:]
	}
	return len(s.episodes) >= modelSustained
}

// runModel plays ib under l once, each sender starting as how says, from
// seed, and records it as the bench records a contender.
func runModel(ib independentBench, l aimdLaw, how modelStart, seed int64) *run {
	fb := ib.fleetBench()
	rng := rand.New(rand.NewSource(seed))
	store := newTokenBucket(fb.capacity(), fb.store.Burst)
	latency := time.Duration(float64(fb.store.BaseLatency) * fb.store.MaxLatencyFactor)
	maxRate := float64(ib.writers) / latency.Seconds()
	buckets := bucketOf(fb.duration)
	r := &run{capacity: make([]float64, buckets), total: newSeries(buckets), clients: map[string]series{}}
	for i := range r.capacity {
		r.capacity[i] = fb.capacity()
	}
	ss := make([]*modelSender, fb.n)
	clients := make([]series, fb.n)
	for i := range ss {
		s := &modelSender{rate: modelStartRate, how: how, starting: true}
		if how == startFair {
			s.rate, s.starting = fb.perMember, false
		}
		if i == fb.n-1 {
			s.start = fb.joinAt
		}
		s.next = s.start + poisson(rng, s.rate)
		ss[i], clients[i] = s, newSeries(buckets)
		r.clients[sidecarID(i)] = clients[i]
	}
	order := make([]int, fb.n)
	for i := range order {
		order[i] = i
	}
	for now := time.Duration(0); now < fb.duration; now += modelStep {
		store.refill(modelStep)
		// Who sends first within a step is nobody's privilege.
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			s := ss[i]
			if now < s.start {
				continue
			}
			s.learn(now, latency, l)
			if s.starting {
				s.rate *= math.Pow(2, modelStep.Seconds()/modelStartDouble.Seconds())
			} else {
				s.rate += l.rise * modelStep.Seconds()
			}
			s.rate = min(max(s.rate, 1), maxRate)
			for s.next < now+modelStep {
				s.next += poisson(rng, s.rate)
				ok := store.take()
				s.answers = append(s.answers, modelAnswer{at: now + latency, refused: !ok})
				b := int(now / bucketWidth)
				for _, sr := range []series{r.total, clients[i]} {
					sr.attempts[b]++
					if ok {
						sr.accepted[b]++
					} else {
						sr.throttled[b]++
					}
				}
			}
		}
	}
	return r
}

func poisson(rng *rand.Rand, rate float64) time.Duration {
	return time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
}

// sweepModel runs every law reps times on ib, on all CPUs, and returns
// each law's medians, as the bench takes them.
func sweepModel(ib independentBench, laws []aimdLaw, how modelStart, reps int) []independentRow {
	runs := make([][]independentRow, len(laws))
	for i := range runs {
		runs[i] = make([]independentRow, reps)
	}
	type job struct{ li, rep int }
	jobs := make(chan job)
	var wg sync.WaitGroup
	fb := ib.fleetBench()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range jobs {
				runs[j.li][j.rep] = analyseIndependent(fb, laws[j.li].String(), runModel(ib, laws[j.li], how, int64(1+j.rep)))
			}
		})
	}
	for li := range laws {
		for rep := range reps {
			jobs <- job{li, rep}
		}
	}
	close(jobs)
	wg.Wait()
	out := make([]independentRow, len(laws))
	for i, rs := range runs {
		out[i] = medianIndependent(rs)
	}
	return out
}

// keepsBudget: the throttle and goodput targets, the two a law can meet
// without being fair; the fairest of the laws that keep them is the
// question.
func (r independentRow) keepsBudget() bool {
	return r.throttle <= targetIndepThrottle && r.share >= targetIndepGoodput
}

func (r independentRow) meetsAll() bool {
	return r.keepsBudget() && r.meetsAllButThrottle()
}

// meetsAllButThrottle: fair, the joiner in, the capacity used, at
// whatever throttle ratio that took.
func (r independentRow) meetsAllButThrottle() bool {
	return r.share >= targetIndepGoodput && r.slowest >= targetIndepSlowest && r.fastest <= targetIndepFastest &&
		r.join.ok && r.join.d <= targetIndepJoin
}

// spread is how far the worst sidecar is from its fair share.
func (r independentRow) spread() float64 { return max(1-r.slowest, r.fastest-1) }

func (r independentRow) joinText() string {
	if !r.join.ok {
		return "never"
	}
	return fmt.Sprintf("%.1fs", r.join.d.Seconds())
}

// modelRow is one table row: the fairest law among those that keep the
// throttle and goodput targets, and how many laws meet every target.
type modelRow struct {
	start string
	n     int
	laws  int
	kept  int            // laws that keep the budget
	all   int            // laws that meet every target
	best  independentRow // the fairest law that keeps the budget (its name is the law), if kept > 0
	// cheapest is the law that meets every target but the throttle ratio
	// at the lowest throttle ratio, if cheap > 0 laws meet them: what
	// fairness and joining cost in throttles.
	cheap    int
	cheapest independentRow
}

func summariseModel(start string, n int, res []independentRow) modelRow {
	m := modelRow{start: start, n: n, laws: len(res)}
	for _, r := range res {
		if r.meetsAll() {
			m.all++
		}
		if r.meetsAllButThrottle() {
			m.cheap++
			if m.cheap == 1 || r.throttle < m.cheapest.throttle {
				m.cheapest = r
			}
		}
		if !r.keepsBudget() {
			continue
		}
		m.kept++
		if m.kept == 1 || r.spread() < m.best.spread() {
			m.best = r
		}
	}
	return m
}

// modelMarkdown renders the model's table.
func modelMarkdown(laws []aimdLaw, reps int, rows []modelRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The independent scenario's store as a token bucket, refusals known a saturated latency after the send, an additive-increase law at %d settings (cuts of %v%% to %v%%, rises of %v to %v requests/s per second, deaf for %v to %v); medians of %d runs each, with the figures and windows of the independent sidecars' table.\n\n",
		len(laws), 100*laws[0].cut, 100*laws[len(laws)-1].cut, laws[0].rise, laws[len(laws)-1].rise, laws[0].deaf, laws[len(laws)-1].deaf, reps)
	b.WriteString("| start | N | settings at ≤ 1% throttles and ≥ 97% goodput | fairest of them (cut, rise, deaf) | slowest ÷ fair | fastest ÷ fair | throttle | goodput | joiner at 80% after | settings meeting every target |\n")
	b.WriteString("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, m := range rows {
		if m.kept == 0 {
			fmt.Fprintf(&b, "| %s | %d | 0 of %d | | | | | | | %d |\n", m.start, m.n, m.laws, m.all)
			continue
		}
		r := m.best
		fmt.Fprintf(&b, "| %s | %d | %d of %d | %s | %.1f%% | %.1f%% | %.2f%% | %.1f%% | %s | %d |\n",
			m.start, m.n, m.kept, m.laws, r.name, 100*r.slowest, 100*r.fastest, 100*r.throttle, 100*r.share, r.joinText(), m.all)
	}
	b.WriteString("\nWhat fairness and joining cost in throttles: of the settings that meet every target but the throttle ratio (within 85–115% of the share, the joiner at 80% within 5 s, ≥ 97% goodput), the one that throttles least.\n\n")
	b.WriteString("| start | N | settings meeting all but the throttle ratio | the one throttling least (cut, rise, deaf) | throttle | slowest ÷ fair | fastest ÷ fair | goodput | joiner at 80% after |\n")
	b.WriteString("|---|---:|---:|---|---:|---:|---:|---:|---:|\n")
	for _, m := range rows {
		if m.cheap == 0 {
			fmt.Fprintf(&b, "| %s | %d | 0 of %d | | | | | | |\n", m.start, m.n, m.laws)
			continue
		}
		r := m.cheapest
		fmt.Fprintf(&b, "| %s | %d | %d of %d | %s | %.2f%% | %.1f%% | %.1f%% | %.1f%% | %s |\n",
			m.start, m.n, m.cheap, m.laws, r.name, 100*r.throttle, 100*r.slowest, 100*r.fastest, 100*r.share, r.joinText())
	}
	return b.String()
}
