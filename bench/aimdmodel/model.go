package main

import (
	"math"
	"math/rand"
	"slices"
	"time"
)

// law is the idealised law: Chiu and Jain's additive increase and
// multiplicative decrease, the one kind of law known to pull synchronised
// senders together.
type law struct {
	cut  float64 // the multiplicative decrease, a fraction of the rate
	rise float64 // the additive increase, requests/s per second, the same for every sender
	// deaf is how long after a cut the sender ignores throttles: a refusal
	// that comes in the same episode (the bucket dry) as the one it cut
	// for is the same news.
	deaf time.Duration
}

// scenario is the independent-sidecars benchmark's, in the model's terms.
type scenario struct {
	n        int     // senders; the last joins late
	perShare float64 // the fair share, requests/s; capacity n × perShare
	maxRate  float64 // what a sender's greedy writers can carry, requests/s
	burst    time.Duration
	latency  time.Duration // when a sender learns an answer
	duration time.Duration
	joinAt   time.Duration
	settle   time.Duration // aggregate figures from here
	fairFrom time.Duration // fairness from here
	oracle   bool          // every sender starts at the fair share
}

// benchWriters are the greedy writers per sidecar of the bench's table at
// each N (package bench, independentSizes); other Ns get 16.
var benchWriters = map[int]int{4: 64, 8: 16, 32: 32, 64: 16}

// benchScenario is the bench's independent-sidecars scenario: capacity
// 100 requests/s per sidecar, a 100 ms burst, the 100 ms latency of a
// saturated store (the simulated store's latency is pinned at ×10 of its
// 10 ms base from 90% utilisation), 35 s with the last sidecar joining at
// 15 s. A greedy writer waits for each answer, so a sidecar's writers carry
// at most one write each per 100 ms.
func benchScenario(n int) scenario {
	writers, ok := benchWriters[n]
	if !ok {
		writers = 16
	}
	return scenario{
		n: n, perShare: 100, maxRate: float64(writers) / 0.1,
		burst: 100 * time.Millisecond, latency: 100 * time.Millisecond,
		duration: 35 * time.Second, joinAt: 15 * time.Second,
		settle: 5 * time.Second, fairFrom: 25 * time.Second,
	}
}

// outcome is one run's figures, as the bench computes them.
type outcome struct {
	slowest, fastest float64 // goodput ÷ fair share over [fairFrom, end), every sender
	joinerShare      float64 // the joiner's, over the same
	throttle         float64 // refused ÷ sent over [settle, end)
	goodput          float64 // taken ÷ capacity over [settle, end)
	join             time.Duration
	joined           bool // the joiner held 80% of its share for 3 s
}

const (
	step       = time.Millisecond
	bucket     = 100 * time.Millisecond // the bench's time series resolution
	joinWindow = time.Second            // the joiner's goodput is judged over 1 s windows…
	joinHold   = 3 * time.Second        // …that must stay at 80% of the share for 3 s
	joinShare  = 0.8
	startRate  = 10.0 // requests/s a sender starts from, doubling every startDbl
	startDbl   = 500 * time.Millisecond
)

type sender struct {
	rate      float64
	starting  bool          // doubling until its first throttle
	deafUntil time.Duration // throttles before this are ignored
	start     time.Duration
	next      time.Duration // its next write (a Poisson process at rate)
	answers   []answer      // sent, not yet known to it, in order
	taken     []float64     // writes the store took, per bucket
}

type answer struct {
	at      time.Duration
	refused bool
}

// tokenBucket is the store: it takes a write while it holds a token,
// and refills at its capacity up to its burst.
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

// run plays sc under l once, from seed.
func run(sc scenario, l law, seed int64) outcome {
	rng := rand.New(rand.NewSource(seed))
	store := newTokenBucket(sc.perShare*float64(sc.n), sc.burst)
	buckets := int(sc.duration / bucket)
	ss := make([]*sender, sc.n)
	for i := range ss {
		s := &sender{rate: startRate, starting: true, taken: make([]float64, buckets)}
		if sc.oracle {
			s.rate, s.starting = sc.perShare, false
		}
		if i == sc.n-1 {
			s.start = sc.joinAt
		}
		s.next = s.start + poisson(rng, s.rate)
		ss[i] = s
	}
	var sent, refused, taken float64
	order := make([]int, sc.n)
	for i := range order {
		order[i] = i
	}
	for now := time.Duration(0); now < sc.duration; now += step {
		store.refill(step)
		// Who sends first within a step is nobody's privilege.
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			s := ss[i]
			if now < s.start {
				continue
			}
			s.learn(now, l)
			if s.starting {
				s.rate *= math.Pow(2, step.Seconds()/startDbl.Seconds())
			} else {
				s.rate += l.rise * step.Seconds()
			}
			s.rate = min(max(s.rate, 1), sc.maxRate)
			for s.next < now+step {
				s.next += poisson(rng, s.rate)
				ok := store.take()
				if ok {
					s.taken[int(now/bucket)]++
				}
				s.answers = append(s.answers, answer{at: now + sc.latency, refused: !ok})
				if now >= sc.settle {
					sent++
					if ok {
						taken++
					} else {
						refused++
					}
				}
			}
		}
	}
	return measure(sc, ss, sent, refused, taken)
}

// learn applies the answers that have reached the sender by now.
func (s *sender) learn(now time.Duration, l law) {
	k := 0
	for ; k < len(s.answers) && s.answers[k].at <= now; k++ {
		if !s.answers[k].refused || now < s.deafUntil {
			continue
		}
		if s.starting {
			s.starting = false
			s.rate /= 2
		} else {
			s.rate *= 1 - l.cut
		}
		s.deafUntil = now + l.deaf
	}
	s.answers = s.answers[k:]
}

func poisson(rng *rand.Rand, rate float64) time.Duration {
	return time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
}

func measure(sc scenario, ss []*sender, sent, refused, taken float64) outcome {
	capacity := sc.perShare * float64(sc.n)
	o := outcome{
		throttle: refused / sent,
		goodput:  taken / (capacity * (sc.duration - sc.settle).Seconds()),
	}
	from, end := int(sc.fairFrom/bucket), int(sc.duration/bucket)
	shares := make([]float64, len(ss))
	for i, s := range ss {
		shares[i] = rateOver(s.taken, from, end) / sc.perShare
	}
	o.slowest, o.fastest = slices.Min(shares), slices.Max(shares)
	o.joinerShare = shares[len(ss)-1]
	// As the bench: the joiner has its share from the first 1 s window
	// that begins a run of windows, 3 s long, each at 80% of the share.
	joiner := ss[len(ss)-1]
	win, hold := int(joinWindow/bucket), int((joinHold-joinWindow)/bucket)
	good := 0
	for u := int(sc.joinAt / bucket); u+win <= end; u++ {
		if rateOver(joiner.taken, u, u+win) >= joinShare*sc.perShare {
			good++
		} else {
			good = 0
		}
		if good == hold+1 {
			o.join, o.joined = time.Duration(u-hold)*bucket-sc.joinAt, true
			break
		}
	}
	return o
}

// rateOver is the writes per second in buckets [from, to).
func rateOver(taken []float64, from, to int) float64 {
	var n float64
	for _, v := range taken[from:to] {
		n += v
	}
	return n / (time.Duration(to-from) * bucket).Seconds()
}
