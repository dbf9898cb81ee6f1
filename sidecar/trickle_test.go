package sidecar

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// trickle answers r with status and a body of size bytes, sent a byte every
// interval, as a store does that holds each write's answer back.
func trickle(w http.ResponseWriter, r *http.Request, status, size int, every time.Duration) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(status)
	for range size {
		if _, err := io.WriteString(w, " "); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(every):
		}
	}
}

// An answer that sluice reads for itself before the loader gets anything
// (the profile's look at an error answer's head, the drain of an answer it
// sends the write again after) has the attempt's deadline as a whole: only
// an answer handed to the loader, whose write deadline bounds it, has the
// timeout per part. A store that sends an error's status line at once and
// then its body a byte per (timeout - ε) must not hold the write, and its
// send slot, for minutes while the loader has nothing.
func TestTrickledAnswerSluiceReadsItselfKeepsTheAttemptDeadline(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    []string
		status int
		want   int // what the loader gets
	}{
		// The elasticsearch profile reads a 429's body to classify it.
		{"profile reads the head", []string{"PROFILE=elasticsearch", "RETRY_MAX=0"}, http.StatusTooManyRequests, http.StatusGatewayTimeout},
		// A 503 is sent again: the answer not passed on is drained first.
		{"drain before a retry", []string{"RETRY_MAX=1"}, http.StatusServiceUnavailable, http.StatusOK},
		{"drain before a held re-send", []string{"RETRY_MAX=1", "HOLD_MAX=5s"}, http.StatusServiceUnavailable, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const size = 60
				var calls atomic.Int32
				store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if calls.Add(1) > 1 {
						_, _ = io.Copy(io.Discard, r.Body)
						return // sent again: taken (200)
					}
					trickle(w, r, tc.status, size, 1500*time.Millisecond)
				})
				_, c := loaderConn(t, serveStore(t, store), append([]string{"UPSTREAM_TIMEOUT=2s"}, tc.env...)...)
				start := time.Now()
				putOne(t, c)
				// Whatever the answer (504 for the head cut, or the
				// 200 of the write sent again), it comes within two
				// attempts' 2s and a backoff, not after the trickle.
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				took := time.Since(start)
				status := 0
				if err == nil {
					status = resp.StatusCode
					resp.Body.Close()
				}
				if took > 10*time.Second {
					t.Errorf("the loader got its answer (status %d, %v) after %v; the store's %d body trickles for %v", status, err, took, tc.status, size*1500*time.Millisecond)
				}
				if err != nil || status != tc.want {
					t.Errorf("the loader got status %d, %v; want %d", status, err, tc.want)
				}
			})
		})
	}
}

// The store's headers come as the attempt's deadline passes (the clock
// has fired when the attempt looks at it): reading the answer then fails,
// and that is still the attempt's timeout, a 504 and not sent again (the
// write may have landed), not a broken answer retried.
func TestAnswerAtTheDeadlineIsATimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			calls.Add(1)
			if r.Body != nil {
				_, _ = io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
			<-r.Context().Done()
			h := http.Header{"Content-Type": {"application/json"}}
			// The body as HTTP/2's transport reads it once the attempt's
			// context ended: the context's own error (context.Canceled,
			// for one cancelled with a cause), not the cause.
			return &http.Response{StatusCode: http.StatusTooManyRequests, Header: h, Body: io.NopCloser(&stalledBody{ctx: r.Context()}), ContentLength: -1, Request: r, ProtoMajor: 2, Proto: "HTTP/2.0"}, nil
		})
		_, c := loaderConn(t, tr, "UPSTREAM_TIMEOUT=2s", "PROFILE=elasticsearch", "RETRY_MAX=1")
		putOne(t, c)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout || calls.Load() != 1 {
			t.Errorf("the loader got %d after %d attempts; want 504 after 1", resp.StatusCode, calls.Load())
		}
	})
}
