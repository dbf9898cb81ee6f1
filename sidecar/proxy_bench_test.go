package sidecar

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// BenchmarkProxy compares a write through sluice (limits wide open) with a
// bare httputil.ReverseProxy over loopback, side by side:
//
//	go test -run - -bench Proxy -benchtime 5s ./sidecar
//
// bench/proxycost prints the same comparison with p50/p99 and peak memory.
func BenchmarkProxy(b *testing.B) {
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
		"SLUICE_INITIAL_RATE=1000000000", "SLUICE_MAX_RATE=1000000000",
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
	body := strings.Repeat(`{"index":{}}`+"\n"+`{"field":"value"}`+"\n", 8)
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"sluice", s.ProxyHandler()}} {
		b.Run(tc.name, func(b *testing.B) {
			front := httptest.NewServer(tc.h)
			defer front.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.SetParallelism(8)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPut, front.URL+"/index/_doc", strings.NewReader(body))
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
