package sidecar

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"
)

// BenchmarkProxy compares a write through sluice (limits wide open) with a
// bare httputil.ReverseProxy over loopback, side by side:
//
//	go test -run - -bench Proxy -benchtime 5s ./sidecar
//
// bench/proxycost prints the same comparison with p50/p99 and peak memory.
func BenchmarkProxy(b *testing.B) {
	body := strings.Repeat(`{"index":{}}`+"\n"+`{"field":"value"}`+"\n", 8)
	benchProxies(b, 8, func() io.Reader { return strings.NewReader(body) })
}

// BenchmarkProxyStreamed is BenchmarkProxy for a 4 MiB body, above
// SLUICE_RETRY_BODY_MAX, so that sluice streams it: what its streamed path
// allocates per write, which grows with the body's reads unless the path
// is careful.
func BenchmarkProxyStreamed(b *testing.B) {
	body := bytes.Repeat([]byte(`{"field":"value"}`+"\n"), 4<<20/18)
	benchProxies(b, 1, func() io.Reader { return bytes.NewReader(body) })
}

// benchProxies runs, as sub-benchmarks bare and sluice, writes of the
// bodies newBody returns, parallelism × GOMAXPROCS at a time.
func benchProxies(b *testing.B, parallelism int, newBody func() io.Reader) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"result":"created"}`)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	bare := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport: &http.Transport{MaxIdleConnsPerHost: 256},
	}
	cfg, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=" + up.URL,
		"SLUICE_INITIAL_RATE=1000000000", "SLUICE_MAX_RATE=1000000000", "SLUICE_RETRY_BODY_MAX=1MiB",
		"SLUICE_INITIAL_CONCURRENCY=1024", "SLUICE_MAX_CONCURRENCY=1024", "SLUICE_QUEUE_MAX=100000"})
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewServer(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	stop := s.StartLoops()
	defer stop()
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"sluice", s.ProxyHandler()}} {
		b.Run(tc.name, func(b *testing.B) {
			front := httptest.NewServer(tc.h)
			defer front.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.SetParallelism(parallelism)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPut, front.URL+"/index/_doc", newBody())
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkCapacityGoodput runs TestCapacityGoodput's scenario on real
// loopback sockets and real time (15 s, after a 5 s warm-up) and reports
// goodput as a share of the store's capacity and the store's throttle
// ratio, through sluice and with the same writers straight at the store:
//
//	go test -run - -bench CapacityGoodput -benchtime 1x ./sidecar
func BenchmarkCapacityGoodput(b *testing.B) {
	const capacity = 300.0
	const warmup, measure = 5 * time.Second, 15 * time.Second
	for _, via := range []string{"sluice", "direct"} {
		b.Run(via, func(b *testing.B) {
			for range b.N {
				store := newQuotaStore(capacity)
				up := httptest.NewServer(store)
				target := up.URL
				var stop func()
				if via == "sluice" {
					cfg, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=" + up.URL, "SLUICE_INITIAL_RATE=20",
						"SLUICE_ADMIN_ADDR=127.0.0.1:0", "SLUICE_LISTEN_ADDR=127.0.0.1:0"})
					if err != nil {
						b.Fatal(err)
					}
					s, err := NewServer(cfg, Options{})
					if err != nil {
						b.Fatal(err)
					}
					stop = s.StartLoops()
					front := httptest.NewServer(s.ProxyHandler())
					target = front.URL
					defer front.Close()
				}
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					req, _ := http.NewRequest(r.Method, target+r.URL.Path, r.Body)
					req.Header = r.Header
					resp, err := client.Do(req)
					if err != nil {
						w.WriteHeader(http.StatusBadGateway)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					w.WriteHeader(resp.StatusCode)
				})
				var a0, t0 int
				start := time.Now()
				warm := make(chan struct{})
				time.AfterFunc(warmup, func() { a0, t0, _ = store.counts(start); close(warm) })
				greedyLoad(h, 64, warmup+measure)
				<-warm
				a1, t1, _ := store.counts(start)
				b.ReportMetric(float64(a1-a0)/(capacity*measure.Seconds()), "goodput/capacity")
				b.ReportMetric(float64(t1-t0)/float64(a1-a0+t1-t0), "throttled/attempts")
				client.CloseIdleConnections()
				if stop != nil {
					stop()
				}
				up.Close()
			}
		})
	}
}
