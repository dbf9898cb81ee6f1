package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeStore is an in-memory /api/v1/import: it answers each attempt with
// what answer says and stores the batch when that is a 2xx. It is a
// RoundTripper, so loaders run under synctest without sockets.
type fakeStore struct {
	// answer decides the attempt's status and headers; n counts the
	// attempts of this body so far, from 1.
	answer func(body []byte, n int) (int, http.Header)
	err    error         // returned for every attempt when set
	delay  time.Duration // before each answer (synctest's clock)

	mu       sync.Mutex
	attempts map[string][]time.Time // body → attempt times
	stored   bytes.Buffer           // the stored lines, in export format
}

func (f *fakeStore) RoundTrip(r *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if f.attempts == nil {
		f.attempts = map[string][]time.Time{}
	}
	f.attempts[string(body)] = append(f.attempts[string(body)], time.Now())
	n := len(f.attempts[string(body)])
	f.mu.Unlock()
	time.Sleep(f.delay)
	if f.err != nil {
		return nil, f.err
	}
	code, h := http.StatusNoContent, http.Header{}
	if f.answer != nil {
		code, h = f.answer(body, n)
	}
	rec := httptest.NewRecorder()
	for k, v := range h {
		rec.Header()[k] = v
	}
	rec.WriteHeader(code)
	if code/100 == 2 {
		f.mu.Lock()
		f.stored.Write(body)
		f.mu.Unlock()
	}
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

func (f *fakeStore) export(t *testing.T) *Stored {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := ParseExport(bytes.NewReader(f.stored.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testLoader(store *fakeStore) *Loader {
	return &Loader{
		URL: "http://store.test/api/v1/import", Job: "unit",
		Writers: 4, Batches: 5, BatchSize: 10,
		Start:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Client:     &http.Client{Transport: store},
		BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second,
	}
}

func TestLoaderRetriesUntilStored(t *testing.T) {
	f := func(name string, answer func([]byte, int) (int, http.Header), wantAttempts int64, wantStatus map[int]int64) {
		t.Helper()
		synctest.Test(t, func(t *testing.T) {
			store := &fakeStore{answer: answer}
			l := testLoader(store)
			res, err := l.Run(context.Background())
			if err != nil {
				t.Fatalf("%s: Run: %v", name, err)
			}
			if res.AckedSamples != l.Samples() || res.DroppedSamples != 0 || res.PendingSamples != 0 {
				t.Errorf("%s: acked/dropped/pending = %d/%d/%d, want %d/0/0", name, res.AckedSamples, res.DroppedSamples, res.PendingSamples, l.Samples())
			}
			if res.Attempts != wantAttempts {
				t.Errorf("%s: attempts = %d, want %d", name, res.Attempts, wantAttempts)
			}
			for code, n := range wantStatus {
				if res.Status[code] != n {
					t.Errorf("%s: status %d answered %d times, want %d (all: %v)", name, code, res.Status[code], n, res.Status)
				}
			}
			if c := l.Check(res, store.export(t)); !c.Exact() {
				t.Errorf("%s: store check: %v", name, c)
			}
		})
	}
	batches := int64(4 * 5)
	f("always accepted", nil, batches, map[int]int64{204: batches})
	f("503 twice, then stored", func(_ []byte, n int) (int, http.Header) {
		if n <= 2 {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusNoContent, nil
	}, 3*batches, map[int]int64{503: 2 * batches, 204: batches})
	f("429 then 500 then 502 then stored", func(_ []byte, n int) (int, http.Header) {
		return [...]int{429, 500, 502, 200}[min(n, 4)-1], nil
	}, 4*batches, map[int]int64{429: batches, 500: batches, 502: batches, 200: batches})
}

func TestLoaderHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &fakeStore{answer: func(_ []byte, n int) (int, http.Header) {
			if n == 1 {
				return http.StatusTooManyRequests, http.Header{"Retry-After": {"3"}}
			}
			return http.StatusNoContent, nil
		}}
		l := testLoader(store)
		res, err := l.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.RetryAfterWaits != 4*5 {
			t.Errorf("RetryAfterWaits = %d, want %d", res.RetryAfterWaits, 4*5)
		}
		for body, at := range store.attempts {
			if len(at) != 2 {
				t.Fatalf("batch %.40q: %d attempts, want 2", body, len(at))
			}
			if gap := at[1].Sub(at[0]); gap < 3*time.Second {
				t.Errorf("batch %.40q retried after %v, before its Retry-After of 3s", body, gap)
			}
		}
		// Each writer's 5 batches wait 3s each, one after the other.
		if res.Elapsed < 15*time.Second || res.Elapsed > 16*time.Second {
			t.Errorf("Elapsed = %v, want 15s", res.Elapsed)
		}
	})
}

func TestLoaderAllBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Every answer takes 100ms; writer 0's fourth batch is refused
		// once with Retry-After: 3, so writer 0 is still sending alone
		// long after the others are done.
		store := &fakeStore{delay: 100 * time.Millisecond, answer: func(body []byte, n int) (int, http.Header) {
			if n == 1 && bytes.Contains(body, []byte(`"writer":"0"},"values":[30,`)) {
				return http.StatusTooManyRequests, http.Header{"Retry-After": {"3"}}
			}
			return http.StatusNoContent, nil
		}}
		l := testLoader(store)
		res, err := l.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.AckedSamples != l.Samples() {
			t.Fatalf("acked %d of %d samples", res.AckedSamples, l.Samples())
		}
		// Writers 1-3 end at 500ms; writer 0 had 3 batches stored by then.
		if res.AllBusy != 500*time.Millisecond {
			t.Errorf("AllBusy = %v, want 500ms", res.AllBusy)
		}
		if want := int64(3*5+3) * int64(l.BatchSize); res.AckedAllBusy != want {
			t.Errorf("AckedAllBusy = %d, want %d", res.AckedAllBusy, want)
		}
		if res.Elapsed < 3500*time.Millisecond {
			t.Errorf("Elapsed = %v, want writer 0's 3s wait in it", res.Elapsed)
		}
		if got, want := res.BusyGoodput(), 18*10/0.5; got != want {
			t.Errorf("BusyGoodput = %v, want %v", got, want)
		}
	})
}

func TestLoaderDropsOn4xx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Batch 1 of every writer is refused with 400, as vmagent would
		// see it; the writer goes on with the next batch.
		store := &fakeStore{answer: func(body []byte, _ int) (int, http.Header) {
			if bytes.Contains(body, []byte(`"values":[10,`)) {
				return http.StatusBadRequest, nil
			}
			return http.StatusNoContent, nil
		}}
		l := testLoader(store)
		res, err := l.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		wantDropped := int64(l.Writers * l.BatchSize)
		if res.DroppedSamples != wantDropped || res.AckedSamples != l.Samples()-wantDropped {
			t.Errorf("dropped %d acked %d, want %d and %d", res.DroppedSamples, res.AckedSamples, wantDropped, l.Samples()-wantDropped)
		}
		if res.Unexpected4xx() != int64(l.Writers) {
			t.Errorf("Unexpected4xx = %d, want %d", res.Unexpected4xx(), l.Writers)
		}
		for w := range l.Writers {
			if res.Acked[w][1] || !res.Acked[w][0] || !res.Acked[w][2] {
				t.Errorf("writer %d acked batches %v, want all but batch 1", w, res.Acked[w])
			}
		}
		if c := l.Check(res, store.export(t)); !c.Exact() {
			t.Errorf("store check: %v", c)
		}
	})
}

func TestLoaderStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &fakeStore{err: errors.New("connection refused")}
		l := testLoader(store)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := l.Run(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Run error = %v, want deadline exceeded", err)
		}
		if res.PendingSamples != l.Samples() || res.AckedSamples != 0 {
			t.Errorf("pending %d acked %d, want %d and 0", res.PendingSamples, res.AckedSamples, l.Samples())
		}
		if res.Status[0] != res.Attempts || res.Attempts < int64(l.Writers)*5 {
			t.Errorf("transport errors %d of %d attempts, want all and several per writer", res.Status[0], res.Attempts)
		}
		if !strings.Contains(res.LastError, "connection refused") {
			t.Errorf("LastError = %q", res.LastError)
		}
		if res.Elapsed != 10*time.Second {
			t.Errorf("Elapsed = %v, want the 10s deadline", res.Elapsed)
		}
	})
}

func TestLoaderBackoff(t *testing.T) {
	l := &Loader{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}
	f := func(attempt int, lo, hi time.Duration) {
		t.Helper()
		for range 200 {
			if d := l.backoff(attempt); d < lo || d > hi {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, d, lo, hi)
			}
		}
	}
	f(0, 50*time.Millisecond, 100*time.Millisecond)
	f(2, 50*time.Millisecond, 400*time.Millisecond)
	f(10, 50*time.Millisecond, time.Second)
	f(100, 50*time.Millisecond, time.Second)
}

func TestLoaderRetryAfterParse(t *testing.T) {
	l := &Loader{MaxRetryAfter: 10 * time.Second}
	f := func(v string, want time.Duration) {
		t.Helper()
		if got := l.retryAfter(v); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
	f("", 0)
	f("2", 2*time.Second)
	f("0", 0)
	f("-5", 0)
	f("3600", 10*time.Second)
	f("soon", 0)
	f("Mon, 02 Jan 2006 15:04:05 GMT", 0) // in the past
}

func TestLoaderValidate(t *testing.T) {
	ok := Loader{URL: "http://x/api/v1/import", Job: "j", Writers: 1, Batches: 1, BatchSize: 1, Start: time.Unix(1, 0)}
	f := func(name string, mut func(*Loader), wantErr string) {
		t.Helper()
		l := ok
		mut(&l)
		_, err := l.Run(context.Background())
		if err == nil || !strings.HasPrefix(err.Error(), "e2e: ") || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: Run error = %v, want e2e: …%s…", name, err, wantErr)
		}
	}
	f("no URL", func(l *Loader) { l.URL = "" }, "URL")
	f("no job", func(l *Loader) { l.Job = "" }, "Job")
	f("no writers", func(l *Loader) { l.Writers = 0 }, "have 0, 1, 1")
	f("no start", func(l *Loader) { l.Start = time.Time{} }, "Start")
}

func TestLoaderBody(t *testing.T) {
	l := &Loader{Job: "j1", BatchSize: 3, Start: time.UnixMilli(1000)}
	got := string(l.Body(2, 1))
	want := `{"metric":{"__name__":"e2e_sample","job":"j1","writer":"2"},"values":[3,4,5],"timestamps":[1003,1004,1005]}` + "\n"
	if got != want {
		t.Errorf("Body = %s, want %s", got, want)
	}
	// The import line is the export line: it parses back to the samples.
	s, err := ParseExport(strings.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	key := `__name__="e2e_sample",job="j1",writer="2"`
	if want := []Sample{{1003, 3}, {1004, 4}, {1005, 5}}; !slices.Equal(s.Series[key], want) {
		t.Errorf("parsed %v, want %v under %s", s.Series, want, key)
	}
}

func TestLoaderFinalOn429(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Batch 2 of every writer is throttled, once with a Retry-After and
		// the other times without: the loader drops it either way.
		store := &fakeStore{answer: func(body []byte, _ int) (int, http.Header) {
			if bytes.Contains(body, []byte(`"values":[20,`)) {
				if bytes.Contains(body, []byte(`"writer":"0"`)) {
					return http.StatusTooManyRequests, http.Header{"Retry-After": {"2"}}
				}
				return http.StatusTooManyRequests, nil
			}
			return http.StatusNoContent, nil
		}}
		l := testLoader(store)
		l.FinalOn429 = true
		res, err := l.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		wantDropped := int64(l.Writers * l.BatchSize)
		if res.DroppedSamples != wantDropped || res.AckedSamples != l.Samples()-wantDropped {
			t.Errorf("dropped %d acked %d, want %d and %d", res.DroppedSamples, res.AckedSamples, wantDropped, l.Samples()-wantDropped)
		}
		if res.Status[http.StatusTooManyRequests] != int64(l.Writers) || res.Attempts != int64(l.Writers*l.Batches) {
			t.Errorf("answers %v in %d attempts, want one 429 per writer and no retry", res.Status, res.Attempts)
		}
		if got := res.WithRetryAfter[http.StatusTooManyRequests]; got != 1 {
			t.Errorf("429s with a Retry-After: %d, want 1 (all: %v)", got, res.WithRetryAfter)
		}
		if c := l.Check(res, store.export(t)); !c.Exact() {
			t.Errorf("store check: %v", c)
		}
	})
}

func TestLoaderInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The first batch of each writer is answered after 3s: its next
		// batch starts at once, the ones after it an Interval apart.
		store := &fakeStore{}
		l := testLoader(store)
		l.Interval = time.Second
		l.Client = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, err
			}
			if bytes.Contains(b, []byte(`"values":[0,`)) {
				time.Sleep(3 * time.Second)
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
			return store.RoundTrip(r)
		})}
		res, err := l.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.AckedSamples != l.Samples() {
			t.Fatalf("acked %d of %d", res.AckedSamples, l.Samples())
		}
		// 3s for batch 0, then batches 1 to 4 at 3s, 4s, 5s, 6s.
		if res.Elapsed != 6*time.Second {
			t.Errorf("Elapsed = %v, want 6s", res.Elapsed)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
