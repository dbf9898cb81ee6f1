package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// listen opens a loopback listener and tells the harness its URL on the
// first line of stdout.
func listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fmt.Println("http://" + ln.Addr().String())
	return ln, nil
}

// runStore is the fast store: it reads each body to its end and answers
// 204, so that what the proxies spend is measured, not the store's work.
func runStore() error {
	ln, err := listen()
	if err != nil {
		return err
	}
	return (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})}).Serve(ln)
}

// runBare is the reference: httputil.ReverseProxy as its documentation
// shows it, with an idle pool large enough for the writers.
func runBare(upstream string) error {
	u, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 1024
	ln, err := listen()
	if err != nil {
		return err
	}
	return (&http.Server{Handler: &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport: tr,
	}}).Serve(ln)
}

// loadSpec is one measurement of the load generator.
type loadSpec struct {
	Target   string
	Writers  int
	Size     int
	Job      string        // X-Sluice-Job; none if empty
	Warmup   time.Duration // writes not counted, to open connections and let the limiter settle
	Duration time.Duration // the measured interval
}

// loadResult is what the load generator reports, as JSON on its last line.
type loadResult struct {
	Writes   int64   `json:"writes"` // answered 2xx within the measured interval
	Errors   int64   `json:"errors"` // any other answer or a transport error
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"seconds"`
	LatNS    []int64 `json:"lat_ns"` // each counted write's, from its send to the end of its answer
	FirstErr string  `json:"first_err,omitempty"`
}

// Phases of a load run: writes completed in measured are counted.
const (
	warming int32 = iota
	measured
	stopped
)

// runLoad drives spec.Target, every writer as fast as it can (the peak
// phase; the latency phase is runPaced's), and speaks to the harness on stdout: "start"
// when the measured interval begins, "stop" when it ends (the harness reads
// the proxy's CPU at each), then the loadResult.
func runLoad(spec loadSpec) error {
	payload := bytes.Repeat([]byte(`{"field":"value"}`+"\n"), spec.Size/18+1)[:spec.Size]
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: 2 * spec.Writers, MaxIdleConnsPerHost: 2 * spec.Writers, DisableCompression: true,
	}}
	var (
		phase    atomic.Int32
		mu       sync.Mutex
		res      loadResult
		wg       sync.WaitGroup
		firstErr atomic.Pointer[string]
	)
	for range spec.Writers {
		wg.Go(func() {
			var (
				writes, errs int64
				lat          = make([]int64, 0, 1024)
			)
			for phase.Load() != stopped {
				t0 := time.Now()
				err := write(client, spec, payload)
				if phase.Load() != measured {
					// Counted by when it ends: the writes under way at the
					// start, counted, balance those under way at the stop,
					// not counted, in the proxy's CPU.
					continue
				}
				if err != nil {
					errs++
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
					continue
				}
				writes++
				lat = append(lat, int64(time.Since(t0)))
			}
			mu.Lock()
			res.Writes += writes
			res.Errors += errs
			res.LatNS = append(res.LatNS, lat...)
			mu.Unlock()
		})
	}
	out := bufio.NewWriter(os.Stdout)
	time.Sleep(spec.Warmup)
	phase.Store(measured)
	t1 := time.Now()
	fmt.Fprintln(out, "start")
	out.Flush()
	time.Sleep(spec.Duration)
	phase.Store(stopped)
	res.Seconds = time.Since(t1).Seconds()
	fmt.Fprintln(out, "stop")
	out.Flush()
	wg.Wait()
	client.CloseIdleConnections()
	res.Bytes = res.Writes * int64(spec.Size)
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	if err := json.NewEncoder(out).Encode(&res); err != nil {
		return err
	}
	return out.Flush()
}

// write is one PUT of payload, its answer read to the end.
func write(client *http.Client, spec loadSpec, payload []byte) error {
	req, err := http.NewRequest(http.MethodPut, spec.Target+"/bench/_doc", bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if spec.Job != "" {
		req.Header.Set("X-Sluice-Job", spec.Job)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
