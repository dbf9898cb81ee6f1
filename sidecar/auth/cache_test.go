package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestRefreshAt(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f := func(name string, lifetime, refreshBefore time.Duration, rnd float64, wantWindow time.Duration) {
		t.Helper()
		a := &Authenticator{cfg: Config{RefreshBefore: refreshBefore}, rand: func() float64 { return rnd }}
		got := lifetime
		if lifetime == 0 {
			got = -a.refreshAt(time.Time{}, now).Sub(now) // no expiry: refresh after noExpiryRefresh
		} else {
			got = now.Add(lifetime).Sub(a.refreshAt(now.Add(lifetime), now))
		}
		if got != wantWindow {
			t.Errorf("%s: window before expiry = %v, want %v", name, got, wantWindow)
		}
	}
	// Incident 5: a 15-minute credential with a 15-minute window is
	// refreshed half-way, not immediately.
	f("15-minute credential, 15-minute window, no jitter", 15*time.Minute, 15*time.Minute, 0, 7*time.Minute+30*time.Second)
	f("15-minute credential, 15-minute window, full jitter", 15*time.Minute, 15*time.Minute, 1, 6*time.Minute)
	f("window below half the lifetime", time.Hour, 5*time.Minute, 0, 5*time.Minute)
	f("jitter only shrinks the window", time.Hour, 5*time.Minute, 1, 4*time.Minute)
	// Incident 4: the same token handed back with 5 minutes left makes the
	// next window 2.5 minutes, not "refresh now".
	f("same token handed back again", 5*time.Minute, 5*time.Minute, 0, 150*time.Second)
	f("tiny lifetime", time.Second, 5*time.Minute, 0, 500*time.Millisecond)
	f("window far above lifetime", 10*time.Minute, 24*time.Hour, 0, 5*time.Minute)
	f("no expiry", 0, 5*time.Minute, 0, -noExpiryRefresh)
}

func TestBackoff(t *testing.T) {
	f := func(name string, minInterval, backoffMax time.Duration, rnd float64, want []time.Duration) {
		t.Helper()
		a := &Authenticator{cfg: Config{MinInterval: minInterval, BackoffMax: backoffMax}, rand: func() float64 { return rnd }}
		for i, w := range want {
			if got := a.backoff(i + 1); got != w {
				t.Errorf("%s: backoff(%d) = %v, want %v", name, i+1, got, w)
			}
		}
	}
	s, ms := time.Second, time.Millisecond
	// limiter.Backoff: the n-th failure draws from [floor, floor·2^n),
	// capped; rnd 1 stands for the top of the window.
	f("top of the window", 10*s, time.Minute, 1, []time.Duration{20 * s, 40 * s, 60 * s, 60 * s})
	f("middle of the window", 10*s, time.Minute, 0.5, []time.Duration{15 * s, 25 * s, 35 * s, 35 * s})
	f("zero draw stays at the min interval", 10*s, time.Minute, 0, []time.Duration{10 * s, 10 * s, 10 * s})
	f("no min interval starts at 1s", 0, 8*s, 1, []time.Duration{2 * s, 4 * s, 8 * s, 8 * s})
	f("a cap below 1s is still the cap", 100*ms, 500*ms, 0.5, []time.Duration{500 * ms, 500 * ms})
	a := &Authenticator{cfg: Config{MinInterval: 10 * s, BackoffMax: time.Minute}, rand: func() float64 { return 1 }}
	if got := a.backoff(10000); got != time.Minute {
		t.Errorf("backoff(10000) = %v, want the 1m cap", got)
	}
}

// applyNow calls Apply and fails the test if it took any (bubble) time:
// under synctest, time only passes while Apply is blocked.
func applyNow(t *testing.T, a *Authenticator, req *http.Request) error {
	t.Helper()
	start := time.Now()
	err := a.Apply(req)
	if d := time.Since(start); d != 0 {
		t.Fatalf("Apply blocked for %v", d)
	}
	return err
}

// fetchesPerWindow counts the calls in consecutive windows of length w
// starting at origin.
func fetchesPerWindow(calls []time.Time, origin time.Time, w time.Duration, n int) []int {
	out := make([]int, n)
	for _, c := range calls {
		if i := int(c.Sub(origin) / w); i >= 0 && i < n {
			out[i]++
		}
	}
	return out
}

// Incident 5 replayed: 15-minute credentials, SLUICE_TOKEN_REFRESH_BEFORE=15m,
// a steady stream of requests for six simulated hours. The AWS Java SDK's
// fixed 15-minute window made every request fetch; here fetches stay at two
// per credential lifetime at most, the same in every hour.
func TestIncident5FifteenMinuteCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &tokenServer{lifetime: 15 * time.Minute}
		c := testConfig(SourceTokenURL)
		c.RefreshBefore = 15 * time.Minute
		h := newHarness(t, c, srv, nil)
		origin := time.Now()
		h.start(t)

		const hours = 6
		const every = 250 * time.Millisecond
		requests := 0
		for time.Since(origin) < hours*time.Hour {
			req := newRequest(t, "POST", "http://store.test/_bulk", "{}")
			if err := applyNow(t, h.a, req); err != nil {
				t.Fatalf("request %d at %v: %v", requests, time.Since(origin), err)
			}
			if got := req.Header.Get("Authorization"); !strings.HasPrefix(got, "Bearer tok-") {
				t.Fatalf("Authorization = %q", got)
			}
			requests++
			time.Sleep(every)
		}

		calls := srv.callTimes()
		lifetimes := hours * 4
		t.Logf("%d requests, %d fetches over %d credential lifetimes", requests, len(calls), lifetimes)
		if len(calls) > 2*lifetimes+1 || len(calls) < lifetimes {
			t.Errorf("fetches = %d, want between %d and %d", len(calls), lifetimes, 2*lifetimes+1)
		}
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].Sub(calls[i-1]); gap < 15*time.Minute/2 {
				t.Errorf("fetch %d only %v after the previous one; want at least half the lifetime", i, gap)
			}
		}
		// Constant: every hour sees the same small number of fetches.
		for i, n := range fetchesPerWindow(calls[1:], origin, time.Hour, hours) {
			if n < 6 || n > 8 {
				t.Errorf("hour %d: %d fetches, want 6–8 (one every 7.5–9 minutes)", i, n)
			}
		}
		if got := metricValue(t, h.reg, "sluice_auth_fetches_total", "result", ResultSuccess); int(got) != len(calls) {
			t.Errorf("sluice_auth_fetches_total{result=success} = %v, want %d", got, len(calls))
		}
	})
}

// Incident 4 replayed: a metadata server that hands back the same token
// until less than 5 minutes remain, reporting expires_in rounded down, and
// a 5-minute refresh window. Refreshing exactly 5 minutes early therefore
// gets the same token back with "5 minutes" left: the arrow-rs client
// fetched again on every request from then on. Here the observed lifetime
// halves the window, so the next fetch gets a new token.
func TestIncident4SameTokenUntilFiveMinutesBeforeExpiry(t *testing.T) {
	for _, tc := range []struct {
		name string
		rand func() float64
	}{
		{"no jitter, the worst case", func() float64 { return 0 }},
		{"default jitter", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &tokenServer{lifetime: time.Hour - 500*time.Millisecond, mintBelow: 5 * time.Minute}
				c := testConfig(SourceTokenURL)
				c.RefreshBefore = 5 * time.Minute
				c.MinInterval = 100 * time.Millisecond // arrow-rs's fix alone; the clamp must do the work
				h := newHarness(t, c, srv, nil)
				if tc.rand != nil {
					h.a.rand = tc.rand
				}
				origin := time.Now()
				h.start(t)

				const hours = 4
				for time.Since(origin) < hours*time.Hour {
					req := newRequest(t, "GET", "http://store.test/b/o", "")
					if err := applyNow(t, h.a, req); err != nil {
						t.Fatalf("at %v: %v", time.Since(origin), err)
					}
					time.Sleep(100 * time.Millisecond)
				}
				calls := srv.callTimes()
				t.Logf("%d fetches, %d tokens minted, unchanged=%v", len(calls), srv.minted,
					metricValue(t, h.reg, "sluice_auth_fetches_total", "result", ResultUnchanged))
				if len(calls) > 2*hours+1 {
					t.Errorf("fetches = %d over %d hours, want at most %d", len(calls), hours, 2*hours+1)
				}
				if srv.minted < hours {
					t.Errorf("minted %d tokens in %d hours: refreshes came too late", srv.minted, hours)
				}
				for i, n := range fetchesPerWindow(calls, origin, time.Minute, hours*60) {
					if n > 1 {
						t.Errorf("minute %d: %d fetches (a burst)", i, n)
					}
				}
				if tc.rand != nil && metricValue(t, h.reg, "sluice_auth_fetches_total", "result", ResultUnchanged) == 0 {
					t.Errorf("the replay never received the same token again; it does not exercise a shrinking lifetime")
				}
			})
		})
	}
}

// A token server that hangs or fails: requests keep flowing on the cached
// credential without waiting, fetches are backed off, after real expiry
// requests fail with *UnavailableError and readiness drops, and recovery
// is automatic.
func TestFailingTokenServer(t *testing.T) {
	for _, tc := range []struct {
		mode, result string
	}{
		{"hang", ResultTimeout},
		{"500", ResultError},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &tokenServer{lifetime: 15 * time.Minute}
				c := testConfig(SourceTokenURL)
				h := newHarness(t, c, srv, nil)
				// Every draw in the middle: the backoff waits the mean of
				// its window, so the counts below are exact, not likely.
				h.a.rand = func() float64 { return 0.5 }
				origin := time.Now()
				h.start(t)
				synctest.Wait()
				if !h.a.Ready() {
					t.Fatal("not ready after the first fetch")
				}
				srv.setMode(tc.mode)

				// Until the credential truly expires, every request succeeds at once.
				expiry := origin.Add(15 * time.Minute)
				for time.Now().Before(expiry) {
					if err := applyNow(t, h.a, newRequest(t, "POST", "http://store.test/", "x")); err != nil {
						t.Fatalf("at %v, before expiry: %v", time.Since(origin), err)
					}
					time.Sleep(time.Second)
				}
				attempts := len(srv.callTimes()) - 1
				t.Logf("%d fetch attempts while the credential was valid", attempts)
				// The window opens 4–5 minutes before expiry; with a 10 s
				// timeout and backoffs drawn in the middle of [10 s, 20 s),
				// [10 s, 40 s), then [10 s, 1 min) there is room for at most
				// about ten attempts, against 300 requests.
				if attempts < 2 || attempts > 12 {
					t.Errorf("%d fetch attempts while the credential was valid, want 2–12", attempts)
				}

				time.Sleep(time.Second)
				err := applyNow(t, h.a, newRequest(t, "POST", "http://store.test/", "x"))
				var ue *UnavailableError
				if !errors.As(err, &ue) {
					t.Fatalf("after expiry Apply = %v, want *UnavailableError", err)
				}
				if ue.StatusCode() != http.StatusServiceUnavailable || ue.Source != SourceTokenURL || !ue.ExpiredAt.Equal(expiry) {
					t.Errorf("UnavailableError = %+v", ue)
				}
				if !strings.Contains(err.Error(), "token-url") || !strings.Contains(err.Error(), tc.result) {
					t.Errorf("error %q does not name the source and the last result %q", err, tc.result)
				}
				if h.a.Ready() {
					t.Error("Ready after expiry")
				}
				if st := h.a.Status(); st.Ready || st.LastResult != tc.result || st.ConsecutiveFailures == 0 || st.LastError == "" {
					t.Errorf("Status = %+v", st)
				}
				if !strings.Contains(h.logs.String(), "no valid upstream credential") {
					t.Error("the loss of the credential was not logged")
				}

				// Keep failing for 15 more minutes: attempts stay bounded by
				// the backoff at its cap, 35 s (the middle of [10 s, 1 min)).
				before := len(srv.callTimes())
				time.Sleep(15 * time.Minute)
				calls := srv.callTimes()
				t.Logf("%d attempts in 15 minutes of outage", len(calls)-before)
				if n := len(calls) - before; n > 15*60/35+1 {
					t.Errorf("%d attempts in 15 minutes of outage, want at most %d", n, 15*60/35+1)
				}
				for i := 1; i < len(calls); i++ {
					if gap := calls[i].Sub(calls[i-1]); gap < c.MinInterval {
						t.Errorf("attempts %d and %d only %v apart", i-1, i, gap)
					}
				}

				// Recovery without intervention.
				// An attempt that started just before could still time out
				// and back off by at most BackoffMax.
				srv.setMode("ok")
				recovery := c.FetchTimeout + c.BackoffMax + time.Second
				time.Sleep(recovery)
				if !h.a.Ready() {
					t.Fatalf("not ready %v after the server recovered: %+v", recovery, h.a.Status())
				}
				if err := applyNow(t, h.a, newRequest(t, "POST", "http://store.test/", "x")); err != nil {
					t.Fatalf("after recovery: %v", err)
				}
				if st := h.a.Status(); st.LastResult != ResultSuccess || st.LastError != "" || st.ConsecutiveFailures != 0 {
					t.Errorf("Status after recovery = %+v", st)
				}
				if !strings.Contains(h.logs.String(), "credential available again") {
					t.Error("the recovery was not logged")
				}
				if got := metricValue(t, h.reg, "sluice_auth_fetches_total", "result", tc.result); got == 0 {
					t.Errorf("sluice_auth_fetches_total{result=%q} = 0", tc.result)
				}
			})
		})
	}
}

// Many requests arriving before the first credential wait for the one
// fetch under way (single-flight) instead of failing or fetching.
func TestStartupRequestsShareTheFirstFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &tokenServer{lifetime: time.Hour, latency: 2 * time.Second}
		h := newHarness(t, testConfig(SourceTokenURL), srv, nil)
		if h.a.Ready() {
			t.Fatal("ready before any fetch")
		}
		h.start(t)
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for range 50 {
			wg.Go(func() {
				req := newRequest(t, "POST", "http://store.test/", "x")
				if err := h.a.Apply(req); err != nil {
					errs <- err
				} else if req.Header.Get("Authorization") != "Bearer tok-1" {
					errs <- errors.New("wrong header " + req.Header.Get("Authorization"))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := len(srv.callTimes()); n != 1 {
			t.Errorf("%d fetches for 50 concurrent startup requests, want 1", n)
		}
	})
}

// Without Start, Apply has no fetch to wait for: it fails at once.
func TestApplyWithoutCredentialFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(SourceTokenURL), &tokenServer{lifetime: time.Hour}, nil)
		err := applyNow(t, h.a, newRequest(t, "GET", "http://store.test/", ""))
		var ue *UnavailableError
		if !errors.As(err, &ue) || !ue.ExpiredAt.IsZero() || !strings.Contains(err.Error(), "none obtained yet") {
			t.Fatalf("Apply = %v, want *UnavailableError for a credential never obtained", err)
		}
	})
}

// A request whose context ends while it waits for the first fetch returns.
func TestStartupWaitHonoursRequestContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &tokenServer{lifetime: time.Hour}
		srv.setMode("hang")
		h := newHarness(t, testConfig(SourceTokenURL), srv, nil)
		h.start(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req := newRequest(t, "GET", "http://store.test/", "").WithContext(ctx)
		start := time.Now()
		err := h.a.Apply(req)
		var ue *UnavailableError
		if !errors.As(err, &ue) {
			t.Fatalf("Apply = %v", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("Apply returned after %v, want the request's 1s deadline", d)
		}
	})
}

func TestStartTwiceAndNilAuthenticator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &tokenServer{lifetime: time.Hour}
		h := newHarness(t, testConfig(SourceTokenURL), srv, nil)
		h.start(t)
		h.a.Start(context.Background()) // no second loop
		synctest.Wait()
		if n := len(srv.callTimes()); n != 1 {
			t.Errorf("%d fetches, want 1", n)
		}
	})

	var a *Authenticator
	a.Start(context.Background())
	<-a.Done()
	req := newRequest(t, "GET", "http://store.test/", "")
	req.Header.Set("Authorization", "Basic loader")
	if err := a.Apply(req); err != nil || req.Header.Get("Authorization") != "Basic loader" {
		t.Errorf("nil Apply = %v, header %q", err, req.Header.Get("Authorization"))
	}
	if !a.Ready() || a.Status().Source != SourceNone {
		t.Errorf("nil Ready = %v, Status = %+v", a.Ready(), a.Status())
	}
}

func TestNewNone(t *testing.T) {
	for _, src := range []string{"", SourceNone} {
		c := DefaultConfig()
		c.Source = src
		a, err := New(c, Options{})
		if a != nil || err != nil {
			t.Errorf("New(source %q) = %v, %v; want nil, nil", src, a, err)
		}
	}
	c := DefaultConfig()
	c.TokenURL = "http://x/"
	if _, err := New(c, Options{}); err == nil || !strings.Contains(err.Error(), "SLUICE_TOKEN_URL") {
		t.Errorf("New with a stray SLUICE_TOKEN_URL = %v", err)
	}
}

func TestMetricsLint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(SourceTokenURL), &tokenServer{lifetime: time.Hour}, nil)
		h.start(t)
		synctest.Wait()
		lintMetrics(t, h.reg)
		want := float64(time.Now().Add(time.Hour).Unix())
		if got := metricValue(t, h.reg, "sluice_auth_credential_expiry_timestamp_seconds"); got != want {
			t.Errorf("expiry gauge = %v, want %v", got, want)
		}
		if n := seriesCount(t, h.reg, "sluice_auth_fetches_total"); n != 4 {
			t.Errorf("sluice_auth_fetches_total has %d series, want one per result", n)
		}
		if n := metricValue(t, h.reg, "sluice_auth_fetch_duration_seconds"); n != 1 {
			t.Errorf("sluice_auth_fetch_duration_seconds has %v observations, want 1", n)
		}
		if _, err := New(testConfig(SourceTokenURL), Options{Registerer: h.reg}); err == nil {
			t.Error("registering twice on one registry did not fail")
		}
	})
}

// Status is JSON-ready with stable snake_case keys and no secret.
func TestStatusJSON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &tokenServer{lifetime: time.Hour}
		h := newHarness(t, testConfig(SourceTokenURL), srv, nil)
		h.start(t)
		synctest.Wait()
		b, err := json.Marshal(h.a.Status())
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		want := map[string]any{
			"source": "token-url", "ready": true, "last_result": "success", "fetches": 1.0, "consecutive_failures": 0.0,
			"expiry":       now.Add(time.Hour).Format(time.RFC3339Nano),
			"last_refresh": now.Format(time.RFC3339Nano),
			"last_attempt": now.Format(time.RFC3339Nano),
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("status[%q] = %v, want %v (%s)", k, m[k], v, b)
			}
		}
		if _, ok := m["next_refresh"]; !ok {
			t.Errorf("no next_refresh in %s", b)
		}
		if _, ok := m["last_error"]; ok || strings.Contains(string(b), "tok-1") {
			t.Errorf("status %s", b)
		}
	})
}
