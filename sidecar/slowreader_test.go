package sidecar

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/internal/pipenet"
)

// dial connects a loader to ln, failing the test if it cannot.
func dial(t *testing.T, ln *pipenet.Listener) net.Conn {
	t.Helper()
	c, err := ln.Dial(context.Background(), "tcp", "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newPipeListener is a listener for the proxy's server whose connections
// are in-memory, so that a test of how net/http treats a loader's
// connection runs under testing/synctest.
func newPipeListener() *pipenet.Listener {
	return pipenet.Listen(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080})
}

// serveProxy serves s's proxy, as net/http serves loaders' connections,
// on in-memory ones until the test ends.
func serveProxy(t *testing.T, s *Server) *pipenet.Listener {
	return servePipe(t, &http.Server{Handler: s.proxy.Handler(), ConnState: s.proxy.ConnState})
}

// servePipe serves srv on in-memory connections until the test ends.
func servePipe(t *testing.T, srv *http.Server) *pipenet.Listener {
	ln := newPipeListener()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ln.Close()
		_ = srv.Close()
		<-served
	})
	return ln
}

// loaderConn starts a sidecar configured by env whose attempts go
// through tr, serves its proxy on in-memory connections, and returns it
// and a loader's connection to it.
func loaderConn(t *testing.T, tr http.RoundTripper, env ...string) (*Server, net.Conn) {
	t.Helper()
	s := newStoreServer(t, tr, nil, env...)
	c := dial(t, serveProxy(t, s))
	t.Cleanup(func() { c.Close() })
	return s, c
}

// putOne sends a loader's one-byte write on c.
func putOne(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "PUT /doc/1 HTTP/1.1\r\nHost: s\r\nContent-Length: 1\r\n\r\nx"); err != nil {
		t.Fatal(err)
	}
}

// A loader that reads the head of its answer and then stops reading (stuck
// in its own pipeline, or a client that never drains bodies) while its
// connection stays open: the answer's copy to it blocks once its socket is
// full. Each part of the answer's copy is bounded by
// SLUICE_UPSTREAM_TIMEOUT, so its send slot comes back within it; otherwise four such
// loaders hold every slot of the initial concurrency limit for good, and
// every other job's writes queue until they are pushed back.
func TestLoaderThatStopsReadingFreesItsSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		big := strings.Repeat("x", 1<<20)
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, big)
		})
		s := newTestServer(t, store, "UPSTREAM_TIMEOUT=2s")
		ln := serveProxy(t, s)

		c := dial(t, ln)
		putOne(t, c)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want the store's 200", resp.StatusCode)
		}
		// The loader reads no more of it, and keeps its connection.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := s.lim.Snapshot().InFlight; n != 0 {
			t.Errorf("in flight %d, 10s after the answer began to a loader that stopped reading it (SLUICE_UPSTREAM_TIMEOUT=2s), want 0", n)
		}

		c.Close()

		// The deadline of an answer is its own: a loader's next write on
		// the same connection, answered past it, gets its answer.
		c = dial(t, ln)
		defer c.Close()
		br := bufio.NewReader(c)
		for i := range 2 {
			putOne(t, c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("write %d on a kept-alive connection: %v", i+1, err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatalf("write %d on a kept-alive connection: reading its answer: %v", i+1, err)
			}
			resp.Body.Close()
			time.Sleep(5 * time.Second)
		}
	})
}

// The store takes a write and answers it late in the attempt, and sluice
// has the whole answer at once (the test's transport hands it over in
// memory, as net/http's does an answer its buffers hold); the loader reads
// it a little behind (1 KiB every 20 ms over an unbuffered connection),
// past the attempt's deadline. The loader's write deadline, reset as each
// part is taken, does not cut what sluice has read and counted: the loader
// would send again a write the store took.
func TestWriteDeadlineKeepsAnAnswerRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		answer := strings.Repeat("y", 30<<10)
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			time.Sleep(1900 * time.Millisecond)
			_, _ = io.WriteString(w, answer)
		})
		s := newTestServer(t, store, "UPSTREAM_TIMEOUT=2s")
		ln := serveProxy(t, s)

		c := dial(t, ln)
		defer c.Close()
		putOne(t, c)
		resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, buf := 0, make([]byte, 1024)
		for {
			n, err := resp.Body.Read(buf)
			got += n
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("status %d: the loader read %d of the %d bytes of an answer the store gave whole, then %v", resp.StatusCode, got, len(answer), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp.StatusCode != http.StatusOK || got != len(answer) {
			t.Errorf("status %d, %d bytes; want the store's 200 and its %d bytes", resp.StatusCode, got, len(answer))
		}
	})
}

// serveStore serves store on in-memory connections until the test ends,
// and returns a transport that reaches it, so that an answer streams to
// sluice part by part as a real store's does.
func serveStore(t *testing.T, store http.Handler) *http.Transport {
	ln := servePipe(t, &http.Server{Handler: store})
	tr := &http.Transport{DialContext: ln.Dial}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// S3 answers CompleteMultipartUpload with its 200 at once, then sends a
// space every few seconds until the object is put together, then the
// result (or an error inside the 200, which the s3 profile finds as the
// answer goes to the loader). Only its wait for the answer to
// begin is bounded by SLUICE_UPSTREAM_TIMEOUT as a whole.
func TestS3CompleteMultipartUploadOutlivesTheAttemptDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const result = `<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag></CompleteMultipartUploadResult>`
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusOK)
			for range 5 {
				_, _ = io.WriteString(w, " ")
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done(): // cut
					return
				case <-time.After(time.Second):
				}
			}
			_, _ = io.WriteString(w, result)
		})
		_, c := loaderConn(t, serveStore(t, store), "UPSTREAM_TIMEOUT=2s", "PROFILE=s3")
		body := "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag></Part></CompleteMultipartUpload>"
		if _, err := io.WriteString(c, "POST /b/k?uploadId=u1 HTTP/1.1\r\nHost: s\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || !strings.HasSuffix(string(got), result) {
			t.Fatalf("status %d, %d bytes, %v; want the store's 200 and its result after 5s of spaces", resp.StatusCode, len(got), err)
		}
	})
}

// The store took the write and streams a long answer steadily (a bulk
// write's per-item results), finishing after SLUICE_UPSTREAM_TIMEOUT. The
// attempt's deadline bounds the wait for the answer to begin; after that,
// each part of it has the timeout, so an answer that keeps coming is not
// cut: a loader handed a broken answer to a write the store took sends it
// again. A store that stops sending mid-answer is still cut within the
// timeout.
func TestStreamedAnswerOutlivesTheAttemptDeadline(t *testing.T) {
	const parts, part = 40, 32 << 10
	for _, stall := range []bool{false, true} {
		name := map[bool]string{false: "steady", true: "stalls"}[stall]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				chunk := strings.Repeat("z", part)
				store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Length", strconv.Itoa(parts*part))
					w.WriteHeader(http.StatusOK)
					for i := range parts {
						if stall && i == parts/2 {
							<-r.Context().Done()
							return
						}
						if _, err := io.WriteString(w, chunk); err != nil {
							return
						}
						w.(http.Flusher).Flush()
						if i == parts-1 {
							break
						}
						select {
						case <-r.Context().Done(): // cut
							return
						case <-time.After(100 * time.Millisecond):
						}
					}
				})
				s, c := loaderConn(t, serveStore(t, store), "UPSTREAM_TIMEOUT=2s")
				start := time.Now()
				putOne(t, c)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				took := time.Since(start)
				resp.Body.Close()
				if !stall {
					if err != nil || n != parts*part {
						t.Fatalf("the loader read %d of the %d bytes the store sent in %v, then %v", n, parts*part, took, err)
					}
					return
				}
				// Half the answer came (20 parts, 100 ms apart, the last at
				// 1.9 s); the rest never does. The cut comes the timeout
				// after the last part, not after the attempt began (which
				// would cut at 2 s).
				if took != 3900*time.Millisecond {
					t.Errorf("the last part came at 1.9s and the answer was cut at %v (%d bytes read), want 3.9s: the 2s timeout after it", took, n)
				}
				synctest.Wait()
				if got := s.lim.Snapshot().InFlight; got != 0 {
					t.Errorf("in flight %d after the cut answer, want 0", got)
				}
			})
		})
	}
}

// A store that sends its answer a byte just within each timeout keeps
// every part on time; the whole answer still ends at
// SLUICE_ANSWER_TIMEOUT, and the write's send slot with it. (The answer
// has a length, so the loader's connection holds it in its buffer until it
// is whole: the loader's write deadline never trips, and the loader has
// nothing meanwhile.)
func TestTrickledAnswerEndsAtTheAnswerTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 200
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			trickle(w, r, http.StatusOK, size, 1500*time.Millisecond)
		})
		s, c := loaderConn(t, serveStore(t, store), "UPSTREAM_TIMEOUT=2s", "ANSWER_TIMEOUT=10s")
		start := time.Now()
		putOne(t, c)
		br := bufio.NewReader(c)
		n, err := 0, error(nil)
		if resp, rerr := http.ReadResponse(br, nil); rerr != nil {
			err = rerr
		} else {
			var m int64
			m, err = io.Copy(io.Discard, resp.Body)
			n = int(m)
			resp.Body.Close()
		}
		took := time.Since(start)
		if err == nil && n == size {
			t.Fatalf("the whole trickled answer reached the loader after %v, past SLUICE_ANSWER_TIMEOUT=10s", took)
		}
		if took > 12*time.Second {
			t.Errorf("the answer was cut after %v, want by SLUICE_ANSWER_TIMEOUT=10s", took)
		}
		synctest.Wait()
		if got := s.lim.Snapshot().InFlight; got != 0 {
			t.Errorf("in flight %d after the answer was cut, want 0", got)
		}
	})
}
