package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// outcome is what one loader request got.
type outcome struct {
	id         string
	status     int    // 0: no response at all
	code       string // sluice's JSON error code, if it answered itself
	reason     string // its details.reason, if any
	retryAfter string // the Retry-After header, if any
	body       []byte
	err        error // Do or body read error: a broken response
	duration   time.Duration
}

func (o outcome) clean2xx() bool { return o.err == nil && o.status >= 200 && o.status < 300 }

func (o outcome) String() string {
	return fmt.Sprintf("%s: status %d code %q err %v after %v", o.id, o.status, o.code, o.err, o.duration.Round(time.Millisecond))
}

// loader sends writes to a proxy and records what each one got.
type loader struct {
	url    string
	client *http.Client
	seq    atomic.Int64
	prefix string
}

func newLoader(proxyURL, prefix string, timeout time.Duration) *loader {
	return &loader{
		url:    proxyURL,
		prefix: prefix,
		client: &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}},
	}
}

func (l *loader) close() { l.client.CloseIdleConnections() }

// write sends one write with a fresh request id.
func (l *loader) write(method, path, job string, body []byte) outcome {
	return l.writeID(l.prefix+"-"+strconv.FormatInt(l.seq.Add(1), 10), method, path, job, body)
}

// writeID sends one write with request id id: a loader that sends a write
// again uses its id again.
func (l *loader) writeID(id, method, path, job string, body []byte) outcome {
	req, err := http.NewRequest(method, l.url+path, bytes.NewReader(body))
	if err != nil {
		return outcome{id: id, err: err}
	}
	req.Header.Set(HeaderRequestID, id)
	req.Header.Set("Content-Type", "application/json")
	if job != "" {
		req.Header.Set("X-Sluice-Job", job)
	}
	start := time.Now()
	resp, err := l.client.Do(req)
	o := outcome{id: id}
	if err != nil {
		o.err, o.duration = err, time.Since(start)
		return o
	}
	o.status, o.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	o.body, o.err = io.ReadAll(resp.Body)
	resp.Body.Close()
	o.duration = time.Since(start)
	if resp.Header.Get("Content-Type") == "application/json" && o.status >= 400 {
		var e struct {
			Error   string
			Details struct{ Reason string }
		}
		if json.Unmarshal(o.body, &e) == nil {
			o.code, o.reason = e.Error, e.Details.Reason
		}
	}
	return o
}

// run sends n writes from each of workers goroutines and returns every outcome.
func (l *loader) run(workers, n int, method, path, job string, body []byte) []outcome {
	var (
		mu  sync.Mutex
		out []outcome
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range n {
				o := l.write(method, path, job, body)
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}
