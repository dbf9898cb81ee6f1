package bench

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"

	"github.com/sluice-dev/sluice/internal/storesim"
	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// saneScenario is small enough for every `go test` run.
var saneScenario = scenario{
	name: "sane", style: storesim.StyleS3, profile: "s3",
	capacity: 100, phase: 6 * time.Second, writers: 64, settle: 2 * time.Second,
	store: storesim.Config{BaseLatency: 10 * time.Millisecond, MaxLatencyFactor: 10, Burst: 100 * time.Millisecond,
		RejectCost: 0.05, LatencyJitter: 0.2, NetworkDelay: 2 * time.Millisecond, Seed: 1},
}

func contenderNamed(t *testing.T, name string) contender {
	t.Helper()
	for _, c := range contenders {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no contender %q", name)
	return contender{}
}

// TestSimulatorSane drives the static token bucket, whose offered load is
// known exactly (C whatever the capacity), and checks the store's answer:
// capacity honoured, throttles counted, the recorder agreeing with the
// store's own counters.
func TestSimulatorSane(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := saneScenario
		r, err := s.single(t.Context(), contenderNamed(t, "static"))
		if err != nil {
			t.Fatal(err)
		}
		sched := s.schedule()
		phase := func(i int) (from, to int) {
			p, start := sched.Phase(i)
			return bucketOf(start), bucketOf(start + p.Duration)
		}
		f := func(name string, i int, wantShare, shareTol, wantThrottle, throttleTol float64) {
			t.Helper()
			from, to := phase(i)
			from += bucketOf(s.settle)
			if got := r.share(r.total, from, to); math.Abs(got-wantShare) > shareTol {
				t.Errorf("%s: goodput share %.3f, want %.3f ± %.3f", name, got, wantShare, shareTol)
			}
			if got := throttleRatio(r.total, from, to); math.Abs(got-wantThrottle) > throttleTol {
				t.Errorf("%s: throttle ratio %.3f, want %.3f ± %.3f", name, got, wantThrottle, throttleTol)
			}
		}
		// Offered C at capacity C: all in, nothing throttled.
		f("C", phaseC, 1, 0.03, 0, 0.02)
		// Offered C at C/2: a + 0.05·(C−a) = C/2 → a = 0.947·C/2 kept;
		// the rest, about 53% of the attempts, throttled.
		f("C/2", phaseHalf, 0.9/0.95, 0.04, 1-0.9/0.95/2, 0.04)
		// Offered C at 2C: half the capacity used, nothing throttled.
		f("2C", phaseDouble, 0.5, 0.03, 0, 0.01)

		// Capacity honoured in every 1s window (a burst of 100ms on top).
		per := bucketOf(time.Second)
		for u := 0; u+per <= len(r.capacity); u++ {
			var capa float64
			for i := u; i < u+per; i++ {
				capa += r.capacity[i] * bucketWidth.Seconds()
			}
			if good := goodputRate(r.total, u, u+per); good > capa*1.1+1 {
				t.Fatalf("window at %v: goodput %.1f/s over capacity %.1f/s", time.Duration(u)*bucketWidth, good, capa)
			}
		}
		// Throttles counted: the recorder and the store agree.
		var att, thr int64
		for i := range r.total.attempts {
			att += r.total.attempts[i]
			thr += r.total.throttled[i]
		}
		if att != r.stats.Attempts || thr != r.stats.Throttled || att == 0 || thr == 0 {
			t.Errorf("recorder saw %d attempts, %d throttled; store counted %d, %d", att, thr, r.stats.Attempts, r.stats.Throttled)
		}
		if r.writes.ok == 0 || r.writes.failed != 0 {
			t.Errorf("loader: %d acknowledged, %d failed; want some and none", r.writes.ok, r.writes.failed)
		}
	})
}

// TestEveryContenderRuns checks that each contender runs against the store
// on virtual time, gets writes through, and keeps the store within capacity.
func TestEveryContenderRuns(t *testing.T) {
	for _, c := range contenders {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := saneScenario
				s.phase = 3 * time.Second
				r, err := s.single(t.Context(), c)
				if err != nil {
					t.Fatal(err)
				}
				total := len(r.capacity)
				if share := r.share(r.total, 0, total); share < 0.2 || share > 1.05 {
					t.Errorf("goodput share %.3f, want in [0.2, 1.05]", share)
				}
				if r.writes.ok == 0 {
					t.Error("no write acknowledged")
				}
			})
		})
	}
}

func TestJain(t *testing.T) {
	f := func(xs []float64, want float64) {
		t.Helper()
		if got := jain(xs); math.Abs(got-want) > 1e-9 {
			t.Errorf("jain(%v) = %v, want %v", xs, got, want)
		}
	}
	f([]float64{5, 5, 5, 5}, 1)
	f([]float64{1, 0, 0, 0}, 0.25)
	f([]float64{1, 1, 0, 0}, 0.5)
	f([]float64{0, 0}, 0)
}

func TestPercentile(t *testing.T) {
	xs := make([]time.Duration, 100)
	for i := range xs {
		xs[i] = time.Duration(i+1) * time.Millisecond
	}
	f := func(p float64, want time.Duration) {
		t.Helper()
		if got := percentile(xs, p); got != want {
			t.Errorf("percentile(%v) = %v, want %v", p, got, want)
		}
	}
	f(0.5, 50*time.Millisecond)
	f(0.99, 99*time.Millisecond)
	f(1, 100*time.Millisecond)
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}

// synthetic builds a run of constant capacity c whose goodput per bucket is
// good(i) and throttled share thr(i) out of 10 attempts.
func synthetic(n int, c float64, good func(i int) float64, thr func(i int) int64) *run {
	r := &run{capacity: make([]float64, n), total: newSeries(n)}
	for i := range n {
		r.capacity[i] = c
		r.total.accepted[i] = good(i) * bucketWidth.Seconds()
		r.total.attempts[i] = 10
		r.total.throttled[i] = thr(i)
	}
	return r
}

func TestConverge(t *testing.T) {
	none := func(int) int64 { return 0 }
	for _, tc := range []struct {
		name   string
		good   func(i int) float64
		thr    func(i int) int64
		want   time.Duration
		wantOK bool
	}{
		{"at once", func(int) float64 { return 100 }, none, 0, true},
		// Goodput reaches 95 at bucket 20 (2s): the first 1s window fully
		// past it starts at 2s (any earlier one averages below 90).
		{"after 2s", func(i int) float64 {
			if i < 20 {
				return 0
			}
			return 95
		}, none, 2 * time.Second, true},
		{"never close enough", func(int) float64 { return 85 }, none, 0, false},
		{"throttled", func(int) float64 { return 100 }, func(int) int64 { return 1 }, 0, false},
		// A dip from 2.5s to 2.8s, before 3s of good windows, fails every
		// 1s window holding two of its buckets or more (a single empty
		// bucket still averages 90); the hold restarts at 2.7s.
		{"relapse", func(i int) float64 {
			if i >= 25 && i <= 27 {
				return 0
			}
			return 100
		}, none, 2700 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := synthetic(100, 100, tc.good, tc.thr)
			got, ok := r.converge(r.total, 0, 100)
			if ok != tc.wantOK || got != tc.want {
				t.Errorf("converge = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestARCControlLaw(t *testing.T) {
	f := func(name string, setup func(c *arcClient), want int) {
		t.Helper()
		c := &arcClient{limit: 10, pastMean: 0.1, pastVar: 0.0001, pastInit: true}
		setup(c)
		c.adjustLocked(time.Unix(0, 0))
		if c.limit != want {
			t.Errorf("%s: limit %d, want %d", name, c.limit, want)
		}
	}
	f("limit reached, RTT at mean: +1", func(c *arcClient) { c.reachedLimit, c.curSum, c.curN = true, 0.1, 1 }, 11)
	f("limit not reached: hold", func(c *arcClient) { c.curSum, c.curN = 0.1, 1 }, 10)
	f("RTT above mean but within 2.5σ: hold", func(c *arcClient) { c.reachedLimit, c.curSum, c.curN = true, 0.12, 1 }, 10)
	f("RTT beyond mean+2.5σ: ×0.9", func(c *arcClient) { c.curSum, c.curN = 0.2, 1 }, 9)
	f("back-pressure: ×0.9", func(c *arcClient) { c.reachedLimit, c.backPressure, c.curSum, c.curN = true, true, 0.1, 1 }, 9)
	f("back-pressure at 1: stays 1", func(c *arcClient) { c.limit, c.backPressure = 1, true }, 1)
	f("at max: no growth", func(c *arcClient) { c.limit, c.reachedLimit, c.curSum, c.curN = arcMax, true, 0.1, 1 }, arcMax)
}

func TestBackPressure(t *testing.T) {
	for _, tc := range []struct {
		a    attempt
		want bool
	}{
		{attempt{status: 429}, true},
		{attempt{status: 503}, true},
		{attempt{status: 500}, true},
		{attempt{status: 501}, false},
		{attempt{status: 400}, false},
		{attempt{status: 200}, false},
		{attempt{err: context.DeadlineExceeded}, true},
		{attempt{err: errors.New("reset")}, false},
	} {
		if got := backPressure(tc.a); got != tc.want {
			t.Errorf("backPressure(%+v) = %v, want %v", tc.a, got, tc.want)
		}
	}
}

func TestAWSError(t *testing.T) {
	throttles := retry.IsErrorThrottles(retry.DefaultThrottles)
	f := func(style storesim.Style, a attempt, wantCode string, wantThrottle bool) {
		t.Helper()
		err := awsError(style, a)
		if wantCode == "" {
			if err != nil {
				t.Errorf("awsError(%d) = %v, want nil", a.status, err)
			}
			return
		}
		var coded interface{ ErrorCode() string }
		if !errors.As(err, &coded) || coded.ErrorCode() != wantCode {
			t.Errorf("awsError(%d %s) = %v, want code %s", a.status, a.body, err, wantCode)
		}
		if got := throttles.IsErrorThrottle(err).Bool(); got != wantThrottle {
			t.Errorf("code %s: throttle %v, want %v", wantCode, got, wantThrottle)
		}
	}
	f(storesim.StyleS3, attempt{status: 200}, "", false)
	f(storesim.StyleS3, attempt{status: 503, body: []byte(storesim.S3ErrorBody("SlowDown", storesim.S3SlowDownMessage, "X"))}, "SlowDown", true)
	f(storesim.StyleS3, attempt{status: 500, body: []byte(storesim.S3ErrorBody("InternalError", "oops", "X"))}, "InternalError", false)
	f(storesim.StyleDynamoDB, attempt{status: 400, body: []byte(`{"__type":"` + storesim.DynamoDBThroughputType + `","message":"m"}`)}, "ProvisionedThroughputExceededException", true)
	f(storesim.StyleGeneric, attempt{status: 429}, "Throttling", true)
	f(storesim.StyleGeneric, attempt{status: 404}, "HTTP404", false)
}

// TestSluiceWiring checks the sluice contender against the real store
// responses: the real classifier sees a SlowDown as congestion, and the
// sample carries it to the limiter as the proxy does.
func TestSluiceWiring(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store, err := storesim.NewServer(storesim.Config{Style: storesim.StyleS3, Schedule: storesim.Constant(1)})
		if err != nil {
			t.Fatal(err)
		}
		e := env{id: "x", rt: store.Transport(), style: storesim.StyleS3, profile: classify.S3}
		c := &sluiceClient{e: e}
		w := saneScenario.payload()
		a := send(t.Context(), &e, w) // takes the one token of the burst…
		if res := c.classify(t.Context(), w, a); res.Kind != classify.OK {
			t.Fatalf("first write: %+v, want OK", res)
		}
		a = send(t.Context(), &e, w) // …so this one is a SlowDown
		res := c.classify(t.Context(), w, a)
		if res.Kind != classify.Throttled || res.Reason != "s3_slowdown" {
			t.Fatalf("second write: %+v, want Throttled s3_slowdown", res)
		}
		if s := sample(res, a.latency); s.Outcome != limiter.Congested || s.Share != 1 || s.Latency != a.latency {
			t.Errorf("sample = %+v, want Congested with share 1", s)
		}
		if s := sample(classify.Result{Kind: classify.ClientError}, 0); s.Outcome != limiter.Neutral {
			t.Errorf("client error sample = %+v, want Neutral", s)
		}
		if s := sample(classify.Result{Kind: classify.ServerError}, 0); s.Outcome != limiter.Failed {
			t.Errorf("server error sample = %+v, want Failed", s)
		}
	})
}

func TestNaiveUsesRetryablehttpDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Capacity 0: every attempt is a SlowDown. retryablehttp's defaults
		// make 5 attempts, waiting 1+2+4+8 = 15s in all.
		store, err := storesim.NewServer(storesim.Config{Style: storesim.StyleS3, Schedule: storesim.Constant(0), RejectLatency: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := newNaive(env{id: "n", rt: store.Transport()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if cl.write(t.Context(), saneScenario.payload()) {
			t.Fatal("write acknowledged by a store with no capacity")
		}
		if took := time.Since(start); took != 15*time.Second+5*time.Millisecond {
			t.Errorf("gave up after %v, want 15s of backoff plus 5 attempts of 1ms", took)
		}
		if st := store.StatsNow(); st.Attempts != 5 || st.Throttled != 5 {
			t.Errorf("store saw %+v, want 5 throttled attempts", st)
		}
	})
}

func TestPlotSVG(t *testing.T) {
	res := []singleResult{{name: "a<b", capacity: []float64{1, 2, 3}, sendRate: []float64{1, 500, 3}, goodput: []float64{1, 2, 3}, limit: []float64{1, 1, 1}}}
	b := plotSVG(scenario{name: "t", capacity: 2}, res)
	d := xml.NewDecoder(strings.NewReader(string(b)))
	polylines := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, b)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 4 {
		t.Errorf("%d polylines, want 4 (capacity, send rate, goodput, limit)", polylines)
	}
	if !strings.Contains(string(b), ">500<") {
		t.Error("clipped send rate is not labelled")
	}
}

func TestUpdateSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	doc := "# B\nbefore\n<!-- x:begin -->\nold\n<!-- x:end -->\nafter\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateSection(path, "x", "new\ntable"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := "# B\nbefore\n<!-- x:begin -->\nnew\ntable\n<!-- x:end -->\nafter\n"; string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if err := updateSection(path, "y", "z"); err == nil {
		t.Error("missing section: no error")
	}
}
