package sidecar

import (
	"compress/gzip"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar/proxy"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/state"
)

// TestPrivateCA: an https upstream signed by a private CA is trusted through
// SLUICE_UPSTREAM_CA_FILE, and not without it.
func TestPrivateCA(t *testing.T) {
	store := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	defer store.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: store.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	f := func(env []string, want int) {
		t.Helper()
		cfg := testConfig(t, append([]string{"UPSTREAM_URL=" + store.URL, "RETRY_MAX=0"}, env...)...)
		s, err := NewServer(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		stop := s.StartLoops()
		defer stop()
		if rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/x", "y"); rec.Code != want {
			t.Errorf("env %v: status %d, want %d: %s", env, rec.Code, want, rec.Body)
		}
	}
	f([]string{"UPSTREAM_CA_FILE=" + caFile}, http.StatusCreated)
	f(nil, http.StatusBadGateway)
}

func TestPreserveHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hosts := make(chan string, 1)
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hosts <- r.Host })
		s := newTestServer(t, store, "PRESERVE_HOST=true")
		req := httptest.NewRequest(http.MethodPut, "http://bucket.s3.example/key", strings.NewReader("x"))
		s.ProxyHandler().ServeHTTP(httptest.NewRecorder(), req)
		if h := <-hosts; h != "bucket.s3.example" {
			t.Errorf("upstream Host = %q, want the loader's", h)
		}
	})
}

// TestLargeBodyStreamsOnce: a body over SLUICE_RETRY_BODY_MAX is streamed,
// never buffered, and so never retried; a small one is retried.
func TestLargeBodyStreamsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		var got atomic.Int64
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			got.Store(n)
			if calls.Add(1)%2 == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
		})
		s := newTestServer(t, store, "RETRY_BODY_MAX=1KiB", "RETRY_BACKOFF_MAX=200ms")
		big := strings.Repeat("x", 4096)
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/big", big)
		if rec.Code != http.StatusServiceUnavailable || calls.Load() != 1 || got.Load() != 4096 {
			t.Errorf("big body: status %d after %d attempts (%d bytes), want the store's 503 after 1 attempt", rec.Code, calls.Load(), got.Load())
		}
		calls.Store(0)
		rec = send(s.ProxyHandler(), context.Background(), http.MethodPut, "/small", "tiny")
		if rec.Code != http.StatusOK || calls.Load() != 2 {
			t.Errorf("small body: status %d after %d attempts, want 200 after 2", rec.Code, calls.Load())
		}
		if used := s.budget.InUse(); used != 0 {
			t.Errorf("buffer budget still holds %d bytes after the writes", used)
		}
	})
}

// TestBufferBudgetBounds: when the global budget is spent, further bodies
// stream once instead of being buffered.
func TestBufferBudgetBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			<-release
		})
		s := newTestServer(t, store, "RETRY_BODY_MAX=1KiB", "BUFFER_BUDGET=2KiB", "INITIAL_CONCURRENCY=8", "INITIAL_RATE=1000")
		body := strings.Repeat("x", 1000)
		for range 5 {
			go send(s.ProxyHandler(), context.Background(), http.MethodPut, "/w", body)
		}
		synctest.Wait()
		if used := s.budget.InUse(); used > 2048 || used < 2000 {
			t.Errorf("budget in use %d, want the 2 bodies that fit (2000 bytes)", used)
		}
		buffered := metricValue(t, s, "sluice_proxy_bodies_buffered_total")
		streamed := metricValue(t, s, "sluice_proxy_bodies_streamed_total")
		close(release)
		synctest.Wait()
		if buffered != 2 || streamed != 3 {
			t.Errorf("buffered %v, streamed %v; want 2 and 3", buffered, streamed)
		}
	})
}

// TestMetricsLint: every sluice metric passes Prometheus' linter.
func TestMetricsLint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, newQuotaStore(100))
		send(s.ProxyHandler(), context.Background(), http.MethodPut, "/w", "x", proxy.HeaderJob, "lint")
		problems, err := testutil.GatherAndLint(s.reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "sluice_") {
				t.Errorf("%s: %s", p.Metric, p.Text)
			}
		}
	})
}

// TestElasticsearchPartialBulk: a 200 _bulk answer whose items carry 429s
// reaches the loader byte for byte, cuts the limiter as a partial throttle,
// and its accepted items count as the job's progress.
func TestElasticsearchPartialBulk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b strings.Builder
		b.WriteString(`{"took":30,"errors":true,"items":[`)
		for i := range 10 {
			if i > 0 {
				b.WriteString(",")
			}
			status := 201
			if i%5 == 0 {
				status = 429
			}
			b.WriteString(`{"index":{"_index":"logs","_id":"` + strings.Repeat("a", i) + `","status":` + strconv.Itoa(status) + `}}`)
		}
		b.WriteString(`]}`)
		body := b.String()
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ae := r.Header.Get("Accept-Encoding"); ae != "" {
				t.Errorf("Accept-Encoding %q forwarded on _bulk: the answer could not be scanned", ae)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, body)
		})
		s := newTestServer(t, store, "PROFILE=elasticsearch")
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/logs/_bulk", "{}\n{}\n", proxy.HeaderJob, "es", "Accept-Encoding", "gzip")
		if rec.Code != http.StatusOK || rec.Body.String() != body {
			t.Fatalf("loader got %d %q, want the store's body unchanged", rec.Code, rec.Body)
		}
		if snap := s.lim.Snapshot(); snap.LastReason != "es_bulk_item_429" {
			t.Errorf("limiter's last signal %q, want es_bulk_item_429", snap.LastReason)
		}
		j, err := s.jobs.Get("es")
		if err != nil {
			t.Fatal(err)
		}
		if j.Totals.Items != 8 || j.Totals.Throttled != 1 {
			t.Errorf("job totals %+v, want 8 acknowledged items and one throttle", j.Totals)
		}
	})
}

// TestDynamoDBPartialBatch: a 200 BatchWriteItem answer that hands writes
// back under UnprocessedItems reaches the loader byte for byte (the loader's
// SDK sends them again), cuts the limiter as a partial throttle, and the
// writes the store took count as the job's progress, with their share of
// the bytes: whether sluice buffered the body (its length known or not) or
// streamed it.
func TestDynamoDBPartialBatch(t *testing.T) {
	const request = `{"RequestItems":{"Forum":[` +
		`{"PutRequest":{"Item":{"Name":{"S":"a"}}}},{"PutRequest":{"Item":{"Name":{"S":"b"}}}},{"PutRequest":{"Item":{"Name":{"S":"c"}}}}],` +
		`"Thread":[{"DeleteRequest":{"Key":{"Subject":{"S":"d"}}}},{"PutRequest":{"Item":{"Subject":{"S":"e"}}}}]}}`
	const partial = `{"UnprocessedItems":{"Forum":[{"PutRequest":{"Item":{"Name":{"S":"c"}}}}],` +
		`"Thread":[{"PutRequest":{"Item":{"Subject":{"S":"e"}}}}]},"ConsumedCapacity":[]}`
	for _, tc := range []struct {
		name    string
		env     []string
		chunked bool // no Content-Length
	}{
		{"buffered", nil, false},
		{"buffered, length unknown", nil, true},
		{"streamed", []string{"RETRY_BODY_MAX=64"}, false},
		{"streamed, length unknown", []string{"RETRY_BODY_MAX=64"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				answer := partial
				store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if got, _ := io.ReadAll(r.Body); string(got) != request {
						t.Errorf("store got %q", got)
					}
					w.Header().Set("Content-Type", "application/x-amz-json-1.0")
					_, _ = io.WriteString(w, answer)
				})
				s := newTestServer(t, store, append([]string{"PROFILE=dynamodb", "RETRY_POST=true"}, tc.env...)...)
				batch := func() *httptest.ResponseRecorder {
					req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(request))
					if tc.chunked {
						req.Body, req.ContentLength = io.NopCloser(strings.NewReader(request)), -1
					}
					req.Header.Set(proxy.HeaderJob, "ddb")
					req.Header.Set("X-Amz-Target", "DynamoDB_20120810.BatchWriteItem")
					req.Header.Set("Content-Type", "application/x-amz-json-1.0")
					rec := httptest.NewRecorder()
					s.ProxyHandler().ServeHTTP(rec, req)
					return rec
				}
				if rec := batch(); rec.Code != http.StatusOK || rec.Body.String() != partial {
					t.Fatalf("loader got %d %q, want the store's answer unchanged", rec.Code, rec.Body)
				}
				if got := lastSignal(s); got != "dynamodb_unprocessed_items" {
					t.Errorf("limiter's last signal %q, want dynamodb_unprocessed_items", got)
				}
				answer = `{"UnprocessedItems":{}}`
				if rec := batch(); rec.Code != http.StatusOK {
					t.Fatalf("loader got %d %q", rec.Code, rec.Body)
				}
				j, err := s.jobs.Get("ddb")
				if err != nil {
					t.Fatal(err)
				}
				n := int64(len(request))
				if j.Totals.Items != 3+5 || j.Totals.Throttled != 1 || j.Totals.Bytes != n*3/5+n {
					t.Errorf("job totals %+v, want 3+5 acknowledged writes of %d+%d bytes and one throttle", j.Totals, n*3/5, n)
				}
			})
		})
	}
}

// TestS3ErrorIn200: S3 answers CompleteMultipartUpload 200 at once, keeps
// the connection open with spaces, and may then send an error. The loader
// gets the answer byte for byte (its SDK retries), and the job does not
// count it as progress; the success after it is.
func TestS3ErrorIn200(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const failed = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
			`<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>`
		const done = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
			`<CompleteMultipartUploadResult><Bucket>ingest</Bucket><Key>k</Key><ETag>"e-2"</ETag></CompleteMultipartUploadResult>`
		answer := failed
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.URL.Query().Get("uploadId") != "u1" {
				t.Errorf("store got %s %s", r.Method, r.URL)
			}
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusOK)
			for range 3 {
				_, _ = io.WriteString(w, "  ")
				w.(http.Flusher).Flush()
				time.Sleep(time.Second) // S3 is still assembling the parts
			}
			_, _ = io.WriteString(w, answer)
		})
		s := newTestServer(t, store, "PROFILE=s3", "RETRY_POST=true")
		const parts = `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"a"</ETag></Part></CompleteMultipartUpload>`
		complete := func() *httptest.ResponseRecorder {
			return send(s.ProxyHandler(), context.Background(), http.MethodPost, "/ingest/k?uploadId=u1", parts, proxy.HeaderJob, "mpu")
		}
		if rec := complete(); rec.Code != http.StatusOK || rec.Body.String() != "      "+failed {
			t.Fatalf("loader got %d %q, want the store's answer unchanged", rec.Code, rec.Body)
		}
		j, err := s.jobs.Get("mpu")
		if err != nil {
			t.Fatal(err)
		}
		if j.Totals.Requests != 0 || j.Totals.Bytes != 0 || j.Totals.Errors != 1 {
			t.Errorf("after the error in a 200: job totals %+v, want no progress and one error", j.Totals)
		}
		answer = done
		if rec := complete(); rec.Code != http.StatusOK {
			t.Fatalf("loader got %d %q", rec.Code, rec.Body)
		}
		if j, _ = s.jobs.Get("mpu"); j.Totals.Requests != 1 || j.Totals.Bytes != int64(len(parts)) {
			t.Errorf("after the success: job totals %+v, want one acknowledged request of %d bytes", j.Totals, len(parts))
		}
	})
}

// TestS3PutObjectErrorIn200: PutObject answers 200 with no body, and that
// is progress; a 200 carrying an <Error> document is not (SlowDown in it
// is throttling), and the loader still gets it byte for byte.
func TestS3PutObjectErrorIn200(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		answer := ""
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("ETag", `"9b2cf535f27731c974343645a3985328"`)
			_, _ = io.WriteString(w, answer)
		})
		s := newTestServer(t, store, "PROFILE=s3")
		put := func() {
			t.Helper()
			if rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/ingest/k", "data", proxy.HeaderJob, "put"); rec.Code != http.StatusOK || rec.Body.String() != answer {
				t.Fatalf("loader got %d %q, want 200 and the store's answer unchanged", rec.Code, rec.Body)
			}
		}
		put()
		answer = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`
		put()
		j, err := s.jobs.Get("put")
		if err != nil {
			t.Fatal(err)
		}
		if j.Totals.Requests != 1 || j.Totals.Bytes != 4 || j.Totals.Throttled != 1 {
			t.Errorf("job totals %+v, want one acknowledged write of 4 bytes and one throttle", j.Totals)
		}
		if got := lastSignal(s); got != "s3_slowdown" {
			t.Errorf("limiter's last signal %q, want s3_slowdown", got)
		}
	})
}

// TestScannedAnswerBreaksOff: when the body that decides an answer (S3's
// CompleteMultipartUpload here) breaks off, the attempt is what broke it,
// not the store's error: the attempt's deadline is a timeout, the loader
// leaving, or its connection breaking while the answer is copied to it,
// is nothing at all.
func TestScannedAnswerBreaksOff(t *testing.T) {
	for _, tc := range []struct {
		name      string
		leaveAt   time.Duration // the loader gives up then; 0: never
		broken    bool          // the loader's connection fails on write
		want      state.Totals
		wantLimit string // the limiter's last signal
	}{
		{"attempt deadline", 0, false, state.Totals{Timeouts: 1}, "timeout"},
		{"loader leaves", time.Second, false, state.Totals{}, ""},
		{"loader's connection breaks", 0, true, state.Totals{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// S3 has answered 200 and sends keep-alive spaces, then
				// nothing more.
				rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
					_, _ = io.Copy(io.Discard, req.Body) // the store took the request whole
					req.Body.Close()
					return &http.Response{
						StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/xml"}},
						Body: io.NopCloser(&stalledBody{ctx: req.Context(), head: `<?xml version="1.0" encoding="UTF-8"?>` + "\n   "}), Request: req,
					}, nil
				})
				s, err := NewServer(testConfig(t, "PROFILE=s3", "UPSTREAM_TIMEOUT=3s"), Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}, Transport: rt})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(s.StartLoops())
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tc.leaveAt > 0 {
					time.AfterFunc(tc.leaveAt, cancel)
				}
				req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/ingest/k?uploadId=u1", strings.NewReader("<CompleteMultipartUpload/>"))
				req.Header.Set(proxy.HeaderJob, "mpu")
				var w http.ResponseWriter = httptest.NewRecorder()
				if tc.broken {
					w = brokenLoader{}
				}
				s.ProxyHandler().ServeHTTP(w, req)
				j, err := s.jobs.Get("mpu")
				if err != nil {
					t.Fatal(err)
				}
				if j.Totals != tc.want {
					t.Errorf("job totals %+v, want %+v", j.Totals, tc.want)
				}
				if snap := s.lim.Snapshot(); snap.LastReason != tc.wantLimit {
					t.Errorf("limiter's last signal %q, want %q", snap.LastReason, tc.wantLimit)
				}
			})
		})
	}
}

// brokenLoader is a loader's connection that fails every write.
type brokenLoader struct{}

func (brokenLoader) Header() http.Header       { return http.Header{} }
func (brokenLoader) WriteHeader(int)           {}
func (brokenLoader) Write([]byte) (int, error) { return 0, syscall.EPIPE }

// stalledBody yields head, then blocks until ctx ends.
type stalledBody struct {
	ctx  context.Context
	head string
}

func (b *stalledBody) Read(p []byte) (int, error) {
	if b.head != "" {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

// TestLoaderLeavesAsTheAnswerComes: the loader goes away just as the
// store's answer arrives. The attempt still ends: its permit is returned
// (before, the answer was dropped unclosed and the slot stayed taken for
// good), and the write the store acknowledged is progress.
func TestLoaderLeavesAsTheAnswerComes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, leave := context.WithCancel(context.Background())
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			_, _ = io.Copy(io.Discard, req.Body) // the store took the write whole
			req.Body.Close()
			leave()
			return &http.Response{StatusCode: http.StatusNoContent, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
		})
		s, err := NewServer(testConfig(t), Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}, Transport: rt})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.StartLoops())
		send(s.ProxyHandler(), ctx, http.MethodPut, "/k", "ok", proxy.HeaderJob, "gone")
		synctest.Wait()
		if n := s.lim.Snapshot().InFlight; n != 0 {
			t.Errorf("%d attempts still in flight, want 0", n)
		}
		if j, err := s.jobs.Get("gone"); err != nil || j.Totals.Requests != 1 {
			t.Errorf("job totals %+v (%v), want the acknowledged write", j.Totals, err)
		}
	})
}

// TestServeReturnsWhenAListenerFails: a listener that dies stops sluice with
// its error instead of leaving Serve waiting for ever.
func TestServeReturnsWhenAListenerFails(t *testing.T) {
	for _, broken := range []string{"proxy", "admin"} {
		s, err := NewServer(testConfig(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		proxyLn, _ := net.Listen("tcp", "127.0.0.1:0")
		adminLn, _ := net.Listen("tcp", "127.0.0.1:0")
		if broken == "proxy" {
			proxyLn.Close()
		} else {
			adminLn.Close()
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(context.Background(), proxyLn, adminLn) }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s listener closed: Serve returned nil, want its error", broken)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s listener closed: Serve did not return", broken)
		}
	}
}

// TestVictoriaMetricsInsertLimit: VictoriaMetrics with one insert slot
// (-maxConcurrentInserts=1) refuses a write that waited 10ms for it with a
// plain-text 503 (here the second write, behind a cold store's slow first
// insert). With the victoriametrics profile sluice reads that as the store
// capping concurrency, not rate: /v1/status says so, and the rate, still in
// startup, doubles per success, out of the one slot's way. Without the
// profile the same 503 is only an overload: the rate climbs in rounds of 8
// successes.
func TestVictoriaMetricsInsertLimit(t *testing.T) {
	const body = "cannot process insert request for 0.010 seconds because 1 concurrent insert requests are executed. " +
		"Possible solutions: to reduce workload; to increase compute resources at the server; " +
		"to increase -insert.maxQueueDuration; to increase -maxConcurrentInserts"
	for _, tc := range []struct {
		profile  string
		wantCaps bool
	}{
		{"victoriametrics", true},
		{"generic", false},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				slot := make(chan struct{}, 1)
				var refused, inserts atomic.Int64
				store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					select {
					case slot <- struct{}{}:
					case <-time.After(10 * time.Millisecond):
						refused.Add(1)
						http.Error(w, body, http.StatusServiceUnavailable)
						return
					}
					defer func() { <-slot }()
					_, _ = io.Copy(io.Discard, r.Body)
					insert := 2 * time.Millisecond
					if inserts.Add(1) == 1 {
						insert = 15 * time.Millisecond // a cold store's first
					}
					time.Sleep(insert)
					w.WriteHeader(http.StatusNoContent)
				})
				s := newTestServer(t, store, "PROFILE="+tc.profile, "RETRY_POST=true", "INITIAL_RATE=50")
				const writes = 24
				done := make(chan int, writes)
				for range writes {
					go func() {
						done <- send(s.ProxyHandler(), context.Background(), http.MethodPost, "/api/v1/import", "{}\n").Code
					}()
				}
				for range writes {
					if code := <-done; code != http.StatusNoContent {
						t.Errorf("loader got %d, want 204", code)
					}
				}
				if refused.Load() == 0 {
					t.Fatal("the store refused nothing: the test shows nothing")
				}
				snap := s.lim.Snapshot()
				if st := s.admin.Status().Limiter; st.CapsConcurrency != tc.wantCaps || snap.CapsConcurrency != tc.wantCaps {
					t.Errorf("status store_caps_concurrency %v (snapshot %v), want %v", st.CapsConcurrency, snap.CapsConcurrency, tc.wantCaps)
				}
				// Rounds of one success take the rate past 8× the initial
				// 50/s within the first writes; rounds of 8 cannot in 24.
				t.Logf("after %d writes (%d refused): rate %.0f/s, concurrency %d", writes, refused.Load(), snap.Rate, snap.Concurrency)
				if grown := snap.Rate >= 400; grown != tc.wantCaps || snap.LastMaxRate != 0 {
					t.Errorf("after %d writes (%d refusals): %+v, want the rate past 400/s: %v, never cut", writes, refused.Load(), snap, tc.wantCaps)
				}
			})
		})
	}
}

// TestAcceptEncodingWhereAnswersAreScanned: the loader's Accept-Encoding
// is not forwarded on the requests whose answers sluice scans for
// throttling (a gzipped answer could not be read), unless the loader
// signed it (AWS SigV4, as the SDKs do for DynamoDB: removing it would void
// the signature), and is forwarded on all others. A scanned kind of answer
// that comes back gzipped is counted as unread.
func TestAcceptEncodingWhereAnswersAreScanned(t *testing.T) {
	const (
		batch     = "DynamoDB_20120810.BatchWriteItem"
		sigv4     = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/dynamodb/aws4_request, SignedHeaders=%s, Signature=0123abcd"
		withAE    = "accept-encoding;content-length;content-type;host;x-amz-date;x-amz-target"
		withoutAE = "content-length;content-type;host;x-amz-date;x-amz-target"
		// What happens to the loader's "Accept-Encoding: gzip".
		dropped = "dropped"
		kept    = "kept"
		unread  = "kept, so the answer is not read"
	)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sluiceSigns := []string{"UPSTREAM_AUTH=bearer-file", "TOKEN_FILE=" + tokenFile}
	for _, tc := range []struct {
		profile, method, path string
		header                []string
		want                  string
		env                   []string
	}{
		{"elasticsearch", http.MethodPost, "/logs/_bulk", nil, dropped, nil},
		{"elasticsearch", http.MethodPut, "/_bulk/", nil, dropped, nil},
		{"elasticsearch", http.MethodPost, "/logs/_doc", nil, kept, nil},
		{"dynamodb", http.MethodPost, "/", []string{"X-Amz-Target", batch}, dropped, nil},
		{"dynamodb", http.MethodPost, "/", []string{"X-Amz-Target", "DynamoDB_20120810.PutItem"}, kept, nil},
		{"dynamodb", http.MethodPost, "/", []string{"X-Amz-Target", batch, "Authorization", fmt.Sprintf(sigv4, withAE)}, unread, nil},
		{"dynamodb", http.MethodPost, "/", []string{"X-Amz-Target", batch, "Authorization", fmt.Sprintf(sigv4, withoutAE)}, dropped, nil},
		// sluice's own credentials replace the loader's signature, unless
		// told to forward a loader's own.
		{"dynamodb", http.MethodPost, "/", []string{"X-Amz-Target", batch, "Authorization", fmt.Sprintf(sigv4, withAE)}, dropped, sluiceSigns},
		{"dynamodb", http.MethodPost, "/", []string{"X-Amz-Target", batch, "Authorization", fmt.Sprintf(sigv4, withAE)}, unread,
			append([]string{"AUTH_OVERRIDE=false"}, sluiceSigns...)},
		{"s3", http.MethodPost, "/bucket/key?uploadId=2", nil, dropped, nil},
		{"s3", http.MethodPost, "/bucket/key?uploadId=2&X-Amz-SignedHeaders=accept-encoding%3Bhost", nil, unread, nil},
		{"s3", http.MethodPut, "/bucket/key", []string{"X-Amz-Copy-Source", "/bucket/src"}, dropped, nil},
		{"s3", http.MethodPut, "/bucket/key", nil, dropped, nil}, // PutObject: an <Error> may come in its 200
		{"s3", http.MethodGet, "/bucket/key", nil, kept, nil},
		{"generic", http.MethodPost, "/logs/_bulk", nil, kept, nil},
	} {
		name := fmt.Sprintf("%s %s %s %v", tc.profile, tc.method, tc.path, tc.header)
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var got atomic.Value
				store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ae := r.Header.Get("Accept-Encoding")
					got.Store(ae)
					if ae == "gzip" { // a store that compresses when asked
						w.Header().Set("Content-Encoding", "gzip")
						zw := gzip.NewWriter(w)
						_, _ = io.WriteString(zw, "{}")
						_ = zw.Close()
						return
					}
					_, _ = io.WriteString(w, "{}")
				})
				s := newTestServer(t, store, append([]string{"PROFILE=" + tc.profile}, tc.env...)...)
				synctest.Wait() // sluice's own credential, if any, has been read
				rec := send(s.ProxyHandler(), context.Background(), tc.method, tc.path, "{}", append([]string{"Accept-Encoding", "gzip"}, tc.header...)...)
				wantAE := "gzip"
				if tc.want == dropped {
					wantAE = ""
				}
				if ae, reached := got.Load().(string); !reached || rec.Code != http.StatusOK {
					t.Errorf("%s: loader got %d %s; the store was reached: %v", name, rec.Code, rec.Body, reached)
				} else if ae != wantAE {
					t.Errorf("%s: store got Accept-Encoding %q, want %q (%s)", name, ae, wantAE, tc.want)
				}
				wantUnread := 0.0
				if tc.want == unread {
					wantUnread = 1
				}
				if n := metricValue(t, s, "sluice_upstream_answers_unscanned_total"); n != wantUnread {
					t.Errorf("%s: %v answers counted unread, want %v (%s)", name, n, wantUnread, tc.want)
				}
			})
		})
	}
}

// TestElasticsearchErrorsOnlyBulk: a _bulk sent with
// filter_path=items.*.error is answered with its failed items only, without
// their status. sluice counts the request's actions (buffered or as it
// streams), so one item rejected of ten is a partial throttle of a tenth,
// and the other nine are the job's progress.
func TestElasticsearchErrorsOnlyBulk(t *testing.T) {
	var req strings.Builder
	for i := range 10 {
		req.WriteString(`{"index":{"_index":"logs","_id":"` + strconv.Itoa(i) + "\"}}\n{\"msg\":\"hello\"}\n")
	}
	const answer = `{"items":[{"index":{"_index":"logs","_id":"3","error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}}]}`
	for _, env := range [][]string{{}, {"RETRY_BODY_MAX=64"}} {
		synctest.Test(t, func(t *testing.T) {
			store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, answer)
			})
			s := newTestServer(t, store, append([]string{"PROFILE=elasticsearch"}, env...)...)
			rec := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/logs/_bulk?filter_path=items.*.error", req.String(), proxy.HeaderJob, "es")
			if rec.Code != http.StatusOK || rec.Body.String() != answer {
				t.Fatalf("%v: loader got %d %q, want the store's body unchanged", env, rec.Code, rec.Body)
			}
			if snap := s.lim.Snapshot(); snap.LastReason != "es_bulk_item_429" {
				t.Errorf("%v: limiter's last signal %q, want es_bulk_item_429", env, snap.LastReason)
			}
			j, err := s.jobs.Get("es")
			if err != nil {
				t.Fatal(err)
			}
			if j.Totals.Items != 9 || j.Totals.Throttled != 1 {
				t.Errorf("%v: job totals %+v, want 9 acknowledged items and one throttle", env, j.Totals)
			}
		})
	}
}

// TestElasticsearchBulkWithoutItems: a _bulk whose filter_path drops the
// items (filter_path=took,errors, or took alone) is answered without an
// "items" array. A 200 that says no item failed (or says nothing) is the
// write taken, its items uncounted: progress for the job and acknowledged
// goodput, not the empty bulk a `"items":[]` would be. Counted as
// nothing, a load sent that way would stall, and with one throttle in the
// window be cancelled and cleaned up while the store took every write.
func TestElasticsearchBulkWithoutItems(t *testing.T) {
	const req = `{"index":{"_index":"logs","_id":"1"}}` + "\n" + `{"msg":"hello"}` + "\n"
	for _, tc := range []struct{ query, answer string }{
		{"filter_path=took,errors", `{"took":3,"errors":false}`},
		{"filter_path=took", `{"took":3}`},
	} {
		synctest.Test(t, func(t *testing.T) {
			store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, tc.answer)
			})
			s := newTestServer(t, store, "PROFILE=elasticsearch")
			rec := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/logs/_bulk?"+tc.query, req, proxy.HeaderJob, "es")
			if rec.Code != http.StatusOK || rec.Body.String() != tc.answer {
				t.Fatalf("%s: loader got %d %q, want the store's answer", tc.query, rec.Code, rec.Body)
			}
			j, err := s.jobs.Get("es")
			if err != nil {
				t.Fatal(err)
			}
			if j.Totals.Requests != 1 || j.Totals.Bytes != int64(len(req)) {
				t.Errorf("%s: job totals %+v, want the write acknowledged (1 request, %d bytes)", tc.query, j.Totals, len(req))
			}
			if got := metricValue(t, s, "sluice_upstream_acknowledged_requests_total"); got != 1 {
				t.Errorf("%s: sluice_upstream_acknowledged_requests_total = %v, want 1", tc.query, got)
			}
		})
	}
}

// TestRedirectedWriteIsNotAcknowledged: a store that redirects a write
// (S3's 301 PermanentRedirect from a bucket in another region, a 307)
// took nothing. The loader gets the redirect as it came, and the write is
// neither progress for its job nor acknowledged goodput: a job whose
// writes all go to the wrong endpoint must not look as if it progressed.
func TestRedirectedWriteIsNotAcknowledged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusMovedPermanently)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message><Endpoint>ingest.s3.eu-west-1.amazonaws.com</Endpoint></Error>`)
		})
		s := newTestServer(t, store, "PROFILE=s3")
		for range 3 {
			if rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/ingest/k", "data", proxy.HeaderJob, "moved"); rec.Code != http.StatusMovedPermanently {
				t.Fatalf("loader got %d, want the store's 301", rec.Code)
			}
		}
		j, err := s.jobs.Get("moved")
		if err != nil {
			t.Fatal(err)
		}
		if j.Totals.Requests != 0 || j.Totals.Bytes != 0 || j.Totals.Errors != 3 {
			t.Errorf("job totals %+v, want no progress and 3 errors", j.Totals)
		}
		if got := metricValue(t, s, "sluice_upstream_acknowledged_requests_total"); got != 0 {
			t.Errorf("sluice_upstream_acknowledged_requests_total = %v, want 0", got)
		}
	})
}
