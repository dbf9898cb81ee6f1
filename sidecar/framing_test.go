package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/state"
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

// A store that answers 200 to a streamed write after the first bytes of
// its body has not taken the write whole if the rest of the body then
// never reaches it: the loader must not be told the write succeeded (it
// gets 502, or sluice's pushback when net/http reports the broken
// connection rather than the answer). A store that answers early and goes
// on to read the whole body has taken it, and its 200 goes to the loader.
func TestEarlyAnswerToStreamedBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chunked bool
		hangUp  bool // the store closes its connection after its early 200
	}{
		{"hangs up, length", false, true},
		{"hangs up, chunked", true, true},
		{"reads on, length", false, false},
		{"reads on, chunked", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const (
				size  = 256 << 10 // streamed: over SLUICE_RETRY_BODY_MAX
				first = 2000      // sent before the store answers: over SLUICE_RETRY_BODY_MAX too, so that a chunked body streams from there
			)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			answered := make(chan struct{})
			storeDone := make(chan int64, 1) // body bytes the store read
			go func() {
				c, err := ln.Accept()
				if err != nil {
					storeDone <- -1
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					storeDone <- -1
					return
				}
				// What the loader sent before it waits for this answer:
				// read all of it, so that the hang-up is a clean close,
				// not a reset that could overtake the answer.
				n, _ := io.CopyN(io.Discard, req.Body, first)
				if tc.hangUp {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
					c.Close()
					close(answered)
					storeDone <- n
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				close(answered)
				m, _ := io.Copy(io.Discard, req.Body)
				storeDone <- n + m
			}()
			s, err := NewServer(testConfig(t, "UPSTREAM_URL=http://"+ln.Addr().String(), "RETRY_BODY_MAX=1KiB", "BUFFER_BUDGET=1MiB"), Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.StartLoops())
			front := httptest.NewServer(s.ProxyHandler())
			defer front.Close()

			c, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			part := func(b string) string {
				if tc.chunked {
					return fmt.Sprintf("%x\r\n%s\r\n", len(b), b)
				}
				return b
			}
			head := fmt.Sprintf("PUT /put HTTP/1.1\r\nHost: s\r\nContent-Length: %d\r\n\r\n", size)
			if tc.chunked {
				head = "PUT /put HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n"
			}
			if _, err := io.WriteString(c, head+part(strings.Repeat("a", first))); err != nil {
				t.Fatal(err)
			}
			<-answered
			// The rest of the body, once the store has answered.
			rest := part(strings.Repeat("b", size-first))
			if tc.chunked {
				rest += "0\r\n\r\n"
			}
			_, _ = io.WriteString(c, rest)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				t.Fatalf("the loader got no answer: %v", err)
			}
			read := <-storeDone
			got := strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(got, "HTTP/1.1 2") && read != size:
				t.Errorf("the loader got %q, and the store read only %d of the %d-byte body", got, read, size)
			case !tc.hangUp && got != "HTTP/1.1 200 OK":
				t.Errorf("the store read the whole body after its early 200: the loader got %q, want the store's 200", got)
			}
		})
	}
}

// The same as net/http does it, in memory: the store's 200 comes at the
// first bytes of a streamed body, and the transport then gives the rest
// of the body up (the store hung up) or sends it to its end.
func TestEarlyAnswerToStreamedBodyInMemory(t *testing.T) {
	for _, hangUp := range []bool{true, false} {
		var stored atomic.Int64 // body bytes the store read
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			n, _ := io.CopyN(io.Discard, req.Body, 100)
			if !hangUp {
				m, _ := io.Copy(io.Discard, req.Body)
				n += m
			}
			stored.Store(n)
			req.Body.Close()
			return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, ContentLength: 2, Body: io.NopCloser(strings.NewReader("ok")), Request: req}, nil
		})
		s, err := NewServer(testConfig(t, "RETRY_BODY_MAX=1KiB", "BUFFER_BUDGET=1MiB"), Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}, Transport: rt})
		if err != nil {
			t.Fatal(err)
		}
		stop := s.StartLoops()
		body := strings.Repeat("x", 64<<10) // streamed: over SLUICE_RETRY_BODY_MAX
		rec := send(s.ProxyHandler(), t.Context(), http.MethodPut, "/put", body)
		stop()
		switch {
		case rec.Code < 300 && stored.Load() != int64(len(body)):
			t.Errorf("hang-up %v: the loader got %d, and the store read %d of the %d-byte body", hangUp, rec.Code, stored.Load(), len(body))
		case !hangUp && rec.Code != http.StatusOK:
			t.Errorf("the store read the whole body after its early 200: the loader got %d %s, want the store's 200", rec.Code, rec.Body)
		}
	}
}
