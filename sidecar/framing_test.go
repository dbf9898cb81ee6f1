package sidecar

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A loader's request trailers (a checksum sent after a chunked body)
// reach the store with the body, whether sluice buffers the body or
// streams it: the store gets the trailer the loader sent, not a body
// without it, nor a "Trailer" header announcing a field that never comes.
func TestRequestTrailersForwarded(t *testing.T) {
	var (
		mu  sync.Mutex
		got = map[int]string{} // body length → the trailer the store read
	)
	store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		got[len(b)] = r.Trailer.Get("X-Checksum")
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	_, addr := realFront(t, store, "RETRY_BODY_MAX=1KiB", "BUFFER_BUDGET=1MiB")
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for _, size := range []int{100, 64 << 10} { // buffered, streamed
		// A reader of unknown length: the client sends it chunked,
		// its trailer after the last chunk.
		body := io.MultiReader(strings.NewReader(strings.Repeat("x", size)))
		req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/put", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Trailer = http.Header{"X-Checksum": {"sum-of-the-body"}}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%d-byte body: %v", size, err)
		}
		resp.Body.Close()
		mu.Lock()
		trailer, seen := got[size]
		mu.Unlock()
		if resp.StatusCode != http.StatusNoContent || !seen {
			t.Fatalf("%d-byte body: status %d, the store saw it: %v", size, resp.StatusCode, seen)
		}
		if trailer != "sum-of-the-body" {
			t.Errorf("%d-byte body: the store read the trailer X-Checksum as %q, want the loader's %q", size, trailer, "sum-of-the-body")
		}
	}
}

// An HTTP/1.0 loader gets no interim (1xx) answer: it cannot tell one
// from the final answer (RFC 9110 §15.2 forbids sending it one), and would
// take a store's 103 Early Hints, or an unasked 100 Continue, for the
// answer to its write, which the store then takes.
func TestNoInterimAnswerToHTTP10Loader(t *testing.T) {
	for _, code := range []int{http.StatusEarlyHints, http.StatusContinue} {
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(code)
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
		})
		_, addr := realFront(t, store)
		for _, body := range []string{"", "a small write"} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "PUT /put HTTP/1.0\r\nHost: s\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			// HTTP/1.0: the answer ends with the connection.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			answer, err := io.ReadAll(c)
			c.Close()
			if err != nil {
				t.Fatalf("store's %d, body %q: %v", code, body, err)
			}
			if line, _, _ := strings.Cut(string(answer), "\r\n"); line != "HTTP/1.0 201 Created" {
				t.Errorf("store's %d, body %q: an HTTP/1.0 loader read %q as its answer, want the store's final 201 (whole answer %q)", code, body, line, answer)
			}
		}
	}
}
