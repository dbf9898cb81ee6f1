package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// A store that answers 200 to a buffered write (one sluice holds in memory
// to retry) before it has read all of its body has not taken the write
// whole if the rest then never reaches it: it hangs up, or it said it
// would close and net/http gives the body up. The loader must not be told
// the write succeeded; sluice sends it again, and the store's second
// connection takes it whole. A store that answers early and reads on has
// taken it, and its 200 goes to the loader.
//
// The attempts go over real sockets through net/http's transport, wrapped
// only to tell the store when the transport has handed its answer over:
// the store hangs up then, so that the hang-up cannot overtake the answer
// (net/http would report the broken connection instead, and the test could
// not fail). The transport's socket buffer is small, so that a body the
// store stops reading is still being sent when it hangs up.
func TestEarlyAnswerToBufferedBody(t *testing.T) {
	for _, tc := range []struct {
		name   string
		expect bool  // the loader sends Expect: 100-continue
		first  int64 // body bytes the store reads before its 200
		hangUp bool  // the 200 says Connection: close, and the store hangs up
	}{
		{"expect, closes before the body", true, 0, true},
		{"closes before the body", false, 0, true},
		{"hangs up after part of the body", false, 2000, true},
		{"expect, reads on", true, 0, false},
		{"reads on", false, 2000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 1 << 20 // buffered: within RETRY_BODY_MAX, and far more than the sockets' buffers
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			handedOver := make(chan struct{}) // the transport returned its first answer
			var whole atomic.Int32            // connections on which the store read the whole body
			var noExpect atomic.Bool          // the loader's Expect did not reach the store
			var storeWG sync.WaitGroup
			defer storeWG.Wait()
			defer ln.Close()
			storeWG.Go(func() {
				for conn := 0; ; conn++ {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					storeWG.Go(func() {
						defer c.Close()
						br := bufio.NewReader(c)
						req, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						if tc.expect && req.Header.Get("Expect") == "" {
							noExpect.Store(true)
						}
						if conn > 0 {
							// The write sent again: taken whole.
							if req.Header.Get("Expect") != "" {
								_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
							}
							if n, _ := io.Copy(io.Discard, req.Body); n == size {
								whole.Add(1)
							}
							_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
							return
						}
						n, _ := io.CopyN(io.Discard, req.Body, tc.first)
						if tc.hangUp {
							_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
							<-handedOver
							return // hangs up, the rest of the body unread
						}
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						m, _ := io.Copy(io.Discard, req.Body)
						if n+m == size {
							whole.Add(1)
						}
					})
				}
			})

			tr := &http.Transport{
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					if tcp, ok := c.(*net.TCPConn); ok {
						_ = tcp.SetWriteBuffer(4 << 10)
					}
					return c, err
				},
				// Long: what the store answers decides whether the body
				// goes, never this timer.
				ExpectContinueTimeout: time.Minute,
				DisableCompression:    true,
			}
			defer tr.CloseIdleConnections()
			var once sync.Once
			rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				resp, err := tr.RoundTrip(req)
				once.Do(func() { close(handedOver) })
				return resp, err
			})
			s, err := NewServer(testConfig(t, "UPSTREAM_URL=http://"+ln.Addr().String(), "RETRY_BODY_MAX=2MiB", "BUFFER_BUDGET=16MiB"),
				Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}, Transport: rt})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.StartLoops())
			front := httptest.NewServer(s.ProxyHandler())
			defer front.Close()

			req, err := http.NewRequest(http.MethodPut, front.URL+"/put", strings.NewReader(strings.Repeat("a", size)))
			if err != nil {
				t.Fatal(err)
			}
			if tc.expect {
				req.Header.Set("Expect", "100-continue")
			}
			ltr := &http.Transport{ExpectContinueTimeout: time.Minute}
			defer ltr.CloseIdleConnections()
			resp, err := ltr.RoundTrip(req)
			if err != nil {
				t.Fatalf("the loader got no answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			front.Close() // waits for the exchange to end
			ln.Close()
			storeWG.Wait()
			if noExpect.Load() {
				t.Fatal("the loader's Expect: 100-continue did not reach the store")
			}
			got := fmt.Sprintf("%d %s (attempts %s)", resp.StatusCode, strings.TrimSpace(string(body)), resp.Header.Get("X-Sluice-Attempts"))
			switch {
			case resp.StatusCode < 300 && whole.Load() == 0:
				t.Errorf("the loader got %s, and the store never read the whole %d-byte body", got, size)
			case resp.StatusCode != http.StatusOK:
				t.Errorf("the loader got %s, want the store's 200 (the write can be sent again)", got)
			case !tc.hangUp && resp.Header.Get("X-Sluice-Attempts") != "1":
				t.Errorf("the store read the whole body after its early 200: the loader got %s, want it at the first attempt", got)
			}
		})
	}
}

// net/http may send a buffered body more than once within one attempt
// (GetBody, when a reused connection drops before the store took the
// request up): the store's answer is to the copy sent last, and only that
// copy's end says whether the store had the whole body. A copy given up
// earlier, or an earlier copy's end reported late, is not the body's.
func TestEarlyAnswerAfterReplay(t *testing.T) {
	const body = "0123456789"
	for _, tc := range []struct {
		name string
		send func(t *testing.T, req *http.Request) bool // sends req's body as a transport would; reports whether the last copy went whole
	}{
		{"first copy cut, replay whole", func(t *testing.T, req *http.Request) bool {
			first := req.Body
			_, _ = io.CopyN(io.Discard, first, 3)
			first.Close()
			again := replay(t, req)
			_, _ = io.Copy(io.Discard, again)
			again.Close()
			return true
		}},
		{"first copy whole, replay cut", func(t *testing.T, req *http.Request) bool {
			first := req.Body
			_, _ = io.Copy(io.Discard, first)
			first.Close()
			again := replay(t, req)
			_, _ = io.CopyN(io.Discard, again, 3)
			again.Close()
			return false
		}},
		{"replay whole, first copy closed late", func(t *testing.T, req *http.Request) bool {
			first := req.Body
			again := replay(t, req)
			_, _ = io.Copy(io.Discard, again)
			again.Close()
			first.Close()
			return true
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				attempts int
				wholeAt  []bool // per attempt: the last copy went whole
			)
			rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				attempts++
				ok := true
				if attempts == 1 {
					ok = tc.send(t, req)
				} else {
					_, _ = io.Copy(io.Discard, req.Body)
					req.Body.Close()
				}
				wholeAt = append(wholeAt, ok)
				return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, ContentLength: 2, Body: io.NopCloser(strings.NewReader("ok")), Request: req}, nil
			})
			s, err := NewServer(testConfig(t), Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}, Transport: rt})
			if err != nil {
				t.Fatal(err)
			}
			stop := s.StartLoops()
			rec := send(s.ProxyHandler(), t.Context(), http.MethodPut, "/put", body)
			stop()
			switch {
			case rec.Code != http.StatusOK:
				t.Errorf("the loader got %d %s, want the 200 of a store that took the write whole", rec.Code, rec.Body)
			case !wholeAt[len(wholeAt)-1]:
				t.Errorf("the loader got 200 at attempt %d, whose last copy of the body the store did not get whole", len(wholeAt))
			}
		})
	}
}

// replay is what net/http does to send req's body again.
func replay(t *testing.T, req *http.Request) io.ReadCloser {
	t.Helper()
	if req.GetBody == nil {
		t.Fatal("a buffered body without GetBody: net/http cannot send it again")
	}
	rc, err := req.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// A pipelined write (SLUICE_PIPELINE) is sent by sluice's own pipeline,
// not net/http's transport, and the same holds: a store that answers 200
// at its head and reads no more of its body has not taken it. The body is
// larger than the sockets can hold unread, so the pipeline is still
// writing it at the write's deadline; sluice then sends the write again,
// and the store's second connection takes it whole. An answer with no
// body (204) ends the pipeline's call, and its deadline, at once: the
// wait for the body's end is bounded by SLUICE_UPSTREAM_TIMEOUT all the
// same, not by the connection's idle close (30 s). (The write sent again
// may be put on that connection, whose writer is still on the first, and
// wait out one more timeout there before it goes on a new one.)
func TestEarlyAnswerToPipelinedWrite(t *testing.T) {
	for _, early := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204 No Content\r\n\r\n",
	} {
		status, _, _ := strings.Cut(early, "\r\n")
		t.Run(status, func(t *testing.T) { earlyAnswerToPipelinedWrite(t, early) })
	}
}

func earlyAnswerToPipelinedWrite(t *testing.T, early string) {
	// Linux's bound on a socket's send buffer: past it, a body the store
	// does not read cannot all be written.
	wmem, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	fields := strings.Fields(string(wmem))
	if err != nil || len(fields) != 3 {
		t.Skip("the bound of a socket's send buffer is not known here")
	}
	bound, err := strconv.Atoi(fields[2])
	if err != nil {
		t.Fatal(err)
	}
	size := bound + 4<<20
	release := make(chan struct{})
	defer close(release)
	var whole atomic.Int32
	var conns atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conn := conns.Add(1) - 1
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				if conn == 0 {
					_, _ = io.WriteString(c, early)
					<-release // reads nothing more until the test ends
					return
				}
				if n, _ := io.Copy(io.Discard, req.Body); n == int64(size) {
					whole.Add(1)
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	s := pipelinedServer(t, "http://"+ln.Addr().String(), "UPSTREAM_TIMEOUT=2s",
		"RETRY_BODY_MAX="+strconv.Itoa(2*size), "BUFFER_BUDGET="+strconv.Itoa(8*size))
	began := time.Now()
	rec := send(s.ProxyHandler(), t.Context(), http.MethodPut, "/put", strings.Repeat("a", size))
	took := time.Since(began)
	got := fmt.Sprintf("%d (attempts %s)", rec.Code, rec.Header().Get("X-Sluice-Attempts"))
	switch {
	case rec.Code < 300 && whole.Load() == 0:
		t.Errorf("the loader got %s, and the store never read the whole %d-byte body", got, size)
	case rec.Code != http.StatusOK:
		t.Errorf("the loader got %s %s, want the store's 200 (the write can be sent again)", got, rec.Body)
	}
	if took > 10*time.Second {
		// 2 s for the first attempt, 2 s more when the second waits
		// behind it, and the last one's write of the body; the idle
		// close would take 30 s.
		t.Errorf("answered after %v with SLUICE_UPSTREAM_TIMEOUT=2s", took.Round(time.Second))
	}
}
