package state

import (
	"io"
	"math"
	"net/http"
	"strings"
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
