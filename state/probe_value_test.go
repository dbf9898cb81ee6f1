package state

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestProbeNonFiniteValueRefused: a probe answering "NaN" or "Inf" (a
// numeric string strconv takes) is a failed probe. Kept as the job's
// probe value it made the job's record unencodable, and with it every
// batch of records it was flushed in: no other job's progress or state
// was written again.
func TestProbeNonFiniteValueRefused(t *testing.T) {
	for _, v := range []string{"NaN", "Inf", "-Infinity"} {
		if got, err := jsonPointerNumber([]byte(`{"n":"`+v+`"}`), "/n"); err == nil {
			t.Errorf("%s read as %v, want an error", v, got)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(`{"n":"NaN"}`)), Header: http.Header{}}, nil
		})
		store := &MemStore{}
		m := newTestManager(t, Config{Store: store, HTTPClient: &http.Client{Transport: rt}})
		defer m.Close()
		if _, err := m.Register("probed", Settings{ProbeURL: "http://store/status/${JOB}", ProbePointer: "/n"}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Register("other", Settings{}); err != nil {
			t.Fatal(err)
		}
		m.Tick(time.Now()) // starts the probe
		synctest.Wait()
		// The first write makes other running, a transition written at
		// once; the second only counts, and is written by the tick.
		m.Observe("other", Observation{Kind: ObsOK, Bytes: 10, Items: 1})
		m.Observe("other", Observation{Kind: ObsOK, Bytes: 10, Items: 1})
		m.Tick(time.Now())
		recs, err := store.Load()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if math.IsNaN(r.Loader.ProbeValue) || math.IsInf(r.Loader.ProbeValue, 0) {
				t.Errorf("%s: probe value %v", r.ID, r.Loader.ProbeValue)
			}
			if r.ID == "other" && r.Totals.Requests != 2 {
				t.Errorf("other's record not written: %+v", r.Totals)
			}
		}
	})
}

// TestProbeResultOfDeletedJobDropped: a progress probe's result came back
// to whatever job had its id by then. A job completed and deleted while
// its probe was out, and created again under the same id, took the old
// job's value as progress of its own, and its baseline. The result of a
// probe of an earlier job under the id is dropped.
func TestProbeResultOfDeletedJobDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Each probe request waits for its own answer, in the order sent.
		var mu sync.Mutex
		answers := []chan string{make(chan string), make(chan string)}
		sent := 0
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			if sent == len(answers) {
				mu.Unlock()
				return nil, fmt.Errorf("probe %d not expected", sent+1)
			}
			ch := answers[sent]
			sent++
			mu.Unlock()
			select {
			case body := <-ch:
				return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(body)), Header: http.Header{}}, nil
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
		})
		m := newTestManager(t, Config{HTTPClient: &http.Client{Transport: rt}})
		defer m.Close()
		probed := Settings{ProbeURL: "http://store/status/${JOB}", ProbePointer: "/n"}
		if _, err := m.Register("j", probed); err != nil {
			t.Fatal(err)
		}
		m.Tick(time.Now()) // the old job's probe goes out
		synctest.Wait()
		if _, err := m.Complete("j"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Delete("j"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Register("j", probed); err != nil {
			t.Fatal(err)
		}
		m.Tick(time.Now()) // the new job's first probe
		synctest.Wait()
		answers[1] <- `{"n":10}`
		synctest.Wait()
		// The old job's store counter was far ahead of the new one's.
		answers[0] <- `{"n":1000}`
		synctest.Wait()
		if v := mustGet(t, m, "j"); v.State != Pending || v.Loader.ProbeValue != 10 {
			t.Fatalf("new job %s (%s), probe value %v after the old job's probe answered, want pending, 10", v.State, v.Reason, v.Loader.ProbeValue)
		}
	})
}
