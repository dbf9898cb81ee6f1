package storesim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	return s
}

// do sends one request through the server's in-process transport.
func do(t *testing.T, s *Server, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://store.test"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.Transport().RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestThrottleResponses(t *testing.T) {
	const s3Prefix = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>`
	for _, tc := range []struct {
		style      Style
		path, body string
		status     int
		header     map[string]string
		bodyPrefix string
		bodyExact  string
	}{
		{style: StyleGeneric, path: "/write", body: "x", status: 429,
			header: map[string]string{"Retry-After": "1"}, bodyExact: "rate limit exceeded, retry later\n"},
		{style: StyleS3, path: "/bucket/key", body: "x", status: 503,
			header: map[string]string{"Content-Type": "application/xml"}, bodyPrefix: s3Prefix},
		{style: StyleDynamoDB, path: "/", body: `{"TableName":"t"}`, status: 400,
			header:    map[string]string{"Content-Type": "application/x-amz-json-1.0"},
			bodyExact: `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}`},
		{style: StyleVictoriaMetrics, path: "/api/v1/import", body: "{}\n", status: 503,
			header:    map[string]string{"Content-Type": "text/plain; charset=utf-8"},
			bodyExact: "cannot process insert request for 1.000 seconds because 16 concurrent insert requests are executed. Possible solutions: to reduce workload; to increase compute resources at the server; to increase -insert.maxQueueDuration; to increase -maxConcurrentInserts\n"},
		{style: StyleElasticsearch, path: "/_bulk", body: `{"index":{"_index":"i"}}` + "\n{}\n", status: 429,
			header:     map[string]string{"Content-Type": "application/json"},
			bodyPrefix: `{"error":{"root_cause":[{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation [`},
	} {
		t.Run(tc.style.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newServer(t, Config{Style: tc.style, Schedule: Constant(1000)})
				if resp, _ := do(t, s, http.MethodPost, tc.path, tc.body); resp.StatusCode/100 != 2 {
					t.Fatalf("healthy write: status %d, want 2xx", resp.StatusCode)
				}
				s.SetOutage(Refuse)
				resp, body := do(t, s, http.MethodPost, tc.path, tc.body)
				if resp.StatusCode != tc.status {
					t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
				}
				for k, v := range tc.header {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("header %s = %q, want %q", k, got, v)
					}
				}
				if tc.bodyExact != "" && body != tc.bodyExact {
					t.Errorf("body\n%q\nwant\n%q", body, tc.bodyExact)
				}
				if !strings.HasPrefix(body, tc.bodyPrefix) {
					t.Errorf("body\n%q\nwant prefix\n%q", body, tc.bodyPrefix)
				}
				st := s.StatsNow()
				if st.Attempts != 2 || st.Accepted != 1 || st.Throttled != 1 {
					t.Errorf("Stats = %+v, want 2 attempts, 1 accepted, 1 throttled", st)
				}
			})
		})
	}
}

type esBulkResponse struct {
	Errors bool `json:"errors"`
	Items  []map[string]struct {
		Index  string `json:"_index"`
		ID     string `json:"_id"`
		Status int    `json:"status"`
		Error  *struct {
			Type string `json:"type"`
		} `json:"error"`
	} `json:"items"`
}

func TestElasticsearchPartialBulk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 100 items/s with a 100ms burst: a full bucket holds 10 items.
		s := newServer(t, Config{Style: StyleElasticsearch, Unit: Items, Schedule: Constant(100), RejectCost: -1})
		var b strings.Builder
		for i := range 12 {
			if i == 3 {
				b.WriteString(`{"delete":{"_index":"logs","_id":"d3"}}` + "\n")
				continue
			}
			b.WriteString(`{"create":{"_index":"logs"}}` + "\n" + `{"msg":"hello"}` + "\n")
		}
		resp, body := do(t, s, http.MethodPost, "/logs/_bulk", b.String())
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		var r esBulkResponse
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("bulk response is not JSON: %v\n%s", err, body)
		}
		if !r.Errors || len(r.Items) != 12 {
			t.Fatalf("errors=%v with %d items, want errors=true with 12 items", r.Errors, len(r.Items))
		}
		for i, it := range r.Items {
			op := "create"
			if i == 3 {
				op = "delete"
			}
			res, ok := it[op]
			if !ok {
				t.Fatalf("item %d: %v, want op %q", i, it, op)
			}
			want := 201
			if i == 3 {
				want = 200
			}
			if i >= 10 {
				want = 429
				if res.Error == nil || res.Error.Type != ESRejectedType {
					t.Errorf("item %d: error %+v, want %s", i, res.Error, ESRejectedType)
				}
			}
			if res.Status != want || res.Index != "logs" || res.ID == "" {
				t.Errorf("item %d: %+v, want status %d in index logs with an id", i, res, want)
			}
		}
		st := s.StatsNow()
		if st.Partial != 1 || st.AcceptedItems != 10 || st.RejectedItems != 2 {
			t.Errorf("Stats = %+v, want 1 partial, 10 accepted items, 2 rejected", st)
		}
	})
}

func TestServerLatencyIsVirtual(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, Config{Schedule: Constant(100), BaseLatency: 40 * time.Millisecond})
		start := time.Now()
		do(t, s, http.MethodPost, "/w", "x")
		if got := time.Since(start); got != 40*time.Millisecond {
			t.Errorf("idle write took %v, want the 40ms base latency", got)
		}
	})
}

func TestConcurrencyLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, Config{
			Style: StyleVictoriaMetrics, Schedule: Constant(1e6), BaseLatency: 3 * time.Second,
			MaxConcurrency: 2, MaxQueueDuration: 500 * time.Millisecond,
		})
		type result struct {
			status int
			body   string
			took   time.Duration
		}
		results := make(chan result, 3)
		for range 3 {
			go func() {
				start := time.Now()
				resp, body := do(t, s, http.MethodPost, "/api/v1/import", "m 1\n")
				results <- result{resp.StatusCode, body, time.Since(start)}
			}()
		}
		var got []result
		for range 3 {
			got = append(got, <-results)
		}
		// The third write waits 500ms for a slot, then gets the VictoriaMetrics 503.
		r := got[0]
		if r.status != 503 || r.took != 500*time.Millisecond ||
			r.body != VictoriaMetricsBody(500*time.Millisecond, 2)+"\n" ||
			!strings.HasPrefix(r.body, "cannot process insert request for 0.500 seconds because 2 concurrent") {
			t.Errorf("first answer %+v, want a 503 after 500ms with the VictoriaMetrics text", r)
		}
		for _, r := range got[1:] {
			if r.status != 204 {
				t.Errorf("answer %+v, want 204", r)
			}
		}
		if st := s.StatsNow(); st.ConcurrencyLimited != 1 || st.Accepted != 2 || st.InFlight != 0 {
			t.Errorf("Stats = %+v", st)
		}
	})
}

func TestHangOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, Config{Schedule: Constant(100)})
		s.SetOutage(Hang)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://store.test/w", strings.NewReader("x"))
		start := time.Now()
		_, err := s.Transport().RoundTrip(req)
		if err == nil || time.Since(start) != 2*time.Second {
			t.Errorf("hung write returned %v after %v, want the context's error after 2s", err, time.Since(start))
		}
		// Close releases a hung write.
		var wg sync.WaitGroup
		wg.Go(func() {
			resp, _ := do(t, s, http.MethodPost, "/w", "x")
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("after Close: status %d, want 503", resp.StatusCode)
			}
		})
		synctest.Wait()
		s.Close()
		wg.Wait()
		if st := s.StatsNow(); st.Failed != 2 || st.InFlight != 0 {
			t.Errorf("Stats = %+v, want 2 failed", st)
		}
	})
}

func TestAdminAndStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var events []Event
		var mu sync.Mutex
		s := newServer(t, Config{Style: StyleElasticsearch, Unit: Items, Schedule: Constant(50),
			Observe: func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }})
		s.SetOutage(Refuse)
		// Cleanup calls go through whatever the outage.
		for _, c := range []struct{ method, path string }{
			{http.MethodPost, "/_tasks/n1:42/_cancel"},
			{http.MethodPost, "/logs/_delete_by_query"},
			{http.MethodDelete, "/logs"},
			{http.MethodGet, "/logs/_doc/1"},
		} {
			if resp, _ := do(t, s, c.method, c.path, ""); resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s: status %d, want 200", c.method, c.path, resp.StatusCode)
			}
		}
		do(t, s, http.MethodPost, "/_bulk", `{"index":{}}`+"\n{}\n", ClientHeader, "c7")
		resp, body := do(t, s, http.MethodGet, StatsPath, "")
		var st Stats
		if err := json.Unmarshal([]byte(body), &st); err != nil || resp.StatusCode != 200 {
			t.Fatalf("stats: %d %v %s", resp.StatusCode, err, body)
		}
		if st.Admin != 4 || st.Attempts != 1 || st.Throttled != 1 || st.Capacity != 50 || st.Unit != "items" || st.Outage != "refuse" {
			t.Errorf("Stats = %+v", st)
		}
		if len(events) != 1 || events[0].Client != "c7" || !events[0].Throttled || events[0].Items != 1 {
			t.Errorf("events = %+v, want one throttled write from c7", events)
		}
	})
}

func TestServeOverLoopback(t *testing.T) {
	s := newServer(t, Config{Style: StyleS3, Schedule: Constant(1000), BaseLatency: time.Millisecond})
	ts := httptest.NewServer(s)
	defer ts.Close()
	resp, err := ts.Client().Post(ts.URL+"/b/k", "application/octet-stream", strings.NewReader("data"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
		t.Errorf("PUT over loopback: %d %v, want 200 with an ETag", resp.StatusCode, resp.Header)
	}
	s.SetCapacityNow(0)
	resp, err = ts.Client().Post(ts.URL+"/b/k2", "application/octet-stream", strings.NewReader("data"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("at capacity 0: status %d, want 503", resp.StatusCode)
	}
}

func TestParseStyle(t *testing.T) {
	for i, n := range styleNames {
		if s, err := ParseStyle(strings.ToUpper(n)); err != nil || s != Style(i) {
			t.Errorf("ParseStyle(%q) = %v, %v", n, s, err)
		}
	}
	if _, err := ParseStyle("mongo"); err == nil {
		t.Error("ParseStyle(mongo) succeeded")
	}
}

func FuzzParseBulk(f *testing.F) {
	f.Add([]byte(`{"index":{"_index":"a","_id":"1"}}` + "\n{}\n" + `{"delete":{"_id":"2"}}` + "\n"))
	f.Add([]byte("not json\n\n{}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		actions := parseBulk(body, "d")
		if len(actions) > countLines(body) {
			t.Fatalf("%d actions from %d lines", len(actions), countLines(body))
		}
		for _, a := range actions {
			if a.op == "" || a.index == "" {
				t.Fatalf("action %+v has no op or index", a)
			}
		}
		// The bulk answer for any parse must be valid JSON.
		b := esBulkBody(Decision{AcceptedItems: len(actions) / 2}, actions, 1)
		if !json.Valid(b) {
			t.Fatalf("invalid bulk response %s", b)
		}
	})
}

func TestNetworkDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, Config{Schedule: Constant(1e6), BaseLatency: 10 * time.Millisecond, NetworkDelay: 5 * time.Millisecond, Seed: 3})
		seen := map[time.Duration]bool{}
		for range 50 {
			start := time.Now()
			do(t, s, http.MethodPost, "/w", "x")
			took := time.Since(start)
			if took < 10*time.Millisecond || took >= 15*time.Millisecond {
				t.Fatalf("write took %v, want base 10ms plus a delay in [0, 5ms)", took)
			}
			seen[took] = true
		}
		if len(seen) < 10 {
			t.Errorf("only %d distinct delays in 50 writes, want them spread", len(seen))
		}
	})
}
