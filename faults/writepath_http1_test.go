package faults

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWritePathReplayAfterDrop: an HTTP/1.1 store drops a kept-alive
// connection before answering a write that carries Idempotency-Key, which
// makes net/http consider it replayable and send it again by itself through
// Request.GetBody. A streamed body cannot be sent again: the loader must
// get sluice's pushback (no store answered: connection_reset, a 429 with
// Retry-After that it sends again), never a 2xx for a store that took an
// empty or truncated replay. A buffered body may go again, whole.
func TestWritePathReplayAfterDrop(t *testing.T) {
	t.Parallel()
	store := newH1Store(t, h1Options{})
	sl := startWritePath(t, store.URL())
	c := newWritePathClient()
	defer c.CloseIdleConnections()
	streamed := writeRule{streamed: true, also: []int{429}}
	for i, tc := range []struct {
		name    string
		mode    string
		method  string
		size    int
		chunked bool
		rule    writeRule
	}{
		{"buffered PUT, dropped after the body", "drop-after-body", http.MethodPut, smallBody, false, writeRule{retryable: true, also: []int{429}}},
		{"streamed PUT, dropped after the body", "drop-after-body", http.MethodPut, largeBody, false, streamed},
		{"streamed PUT chunked, dropped after the body", "drop-after-body", http.MethodPut, largeBody, true, streamed},
		{"streamed POST chunked, dropped after the body", "drop-after-body", http.MethodPost, largeBody, true, streamed},
		{"streamed PUT, reset mid-body", "drop-mid-body", http.MethodPut, largeBody, false, streamed},
		{"streamed PUT chunked, reset mid-body", "drop-mid-body", http.MethodPut, largeBody, true, streamed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// net/http replays only on a reused connection: a normal
			// write first leaves one in sluice's pool.
			if o := normalWriter(c, sl.proxy, fmt.Sprintf("drop-warm-%d", i))(0); !o.clean2xx() {
				t.Fatalf("warm-up write: %v", o)
			}
			id := fmt.Sprintf("drop-%d", i)
			u := upload{id: id, method: tc.method, body: payload(id, tc.size), chunked: tc.chunked,
				header: map[string]string{"Idempotency-Key": id, HeaderFaultMode: tc.mode}}
			o := sendUpload(c, sl.proxy, u)
			store.settle()
			checkWrite(t, u, o, store.got.of(id), tc.rule)
			t.Logf("loader got %d %q; the store received %v", o.status, o.code, store.got.of(id))
		})
	}
	sl.checkReleased(t, 2, normalWriter(c, sl.proxy, "drop"))
	c.CloseIdleConnections()
	store.Close()
	sl.checkNoLeak(t)
}

// rawWrite sends u to addr on a connection of its own, written by hand
// (extra is more header lines, each ending in CRLF), and reads the answer.
// With expect it sends Expect: 100-continue and holds the body back until
// a 100 Continue comes, or for 1 s (as curl does); a final answer first
// means the body is never sent. It returns what the loader got and the
// interim (1xx) statuses before it; a 101 is final.
func rawWrite(addr string, u upload, extra string, expect bool) (o outcome, interim []int) {
	o.id = u.id
	start := time.Now()
	defer func() { o.duration = time.Since(start) }()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		o.err = err
		return o, nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if u.method == "" {
		u.method = http.MethodPut
	}
	var head strings.Builder
	fmt.Fprintf(&head, "%s /write HTTP/1.1\r\nHost: sluice\r\n%s: %s\r\nContent-Type: application/x-ndjson\r\n", u.method, HeaderRequestID, u.id)
	for k, v := range u.header {
		fmt.Fprintf(&head, "%s: %s\r\n", k, v)
	}
	if u.chunked {
		head.WriteString("Transfer-Encoding: chunked\r\n")
	} else {
		fmt.Fprintf(&head, "Content-Length: %d\r\n", len(u.body))
	}
	if expect {
		head.WriteString("Expect: 100-continue\r\n")
	}
	head.WriteString(extra + "\r\n")
	if _, err := io.WriteString(c, head.String()); err != nil {
		o.err = err
		return o, nil
	}
	sendBody := func() error {
		if !u.chunked {
			_, err := c.Write(u.body)
			return err
		}
		bw := bufio.NewWriter(c)
		for b := u.body; len(b) > 0; {
			n := min(len(b), 8<<10)
			fmt.Fprintf(bw, "%x\r\n%s\r\n", n, b[:n])
			b = b[n:]
		}
		io.WriteString(bw, "0\r\n\r\n")
		return bw.Flush()
	}
	br := bufio.NewReader(c)
	sent := !expect
	if !expect {
		if err := sendBody(); err != nil {
			o.err = err
			return o, nil
		}
	} else {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := br.Peek(1); err != nil {
			// No answer within 1 s: send the body anyway.
			if err := sendBody(); err != nil {
				o.err = err
				return o, nil
			}
			sent = true
		}
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	}
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			o.err = err
			return o, interim
		}
		if resp.StatusCode/100 == 1 && resp.StatusCode != http.StatusSwitchingProtocols {
			interim = append(interim, resp.StatusCode)
			if resp.StatusCode == http.StatusContinue && !sent {
				if err := sendBody(); err != nil {
					o.err = err
					return o, interim
				}
				sent = true
			}
			continue
		}
		o.status = resp.StatusCode
		if resp.StatusCode != http.StatusSwitchingProtocols {
			o.body, o.err = io.ReadAll(resp.Body)
		}
		resp.Body.Close()
		o.code = errorCode(resp.Header, o.status, o.body)
		return o, interim
	}
}

// TestWritePathInterimAnswers: a store that sends 103 Early Hints, or a
// 100 Continue nobody asked for, before its final answer. Both are
// informational: the write goes through and the loader gets the store's
// final answer.
func TestWritePathInterimAnswers(t *testing.T) {
	t.Parallel()
	store := newH1Store(t, h1Options{})
	sl := startWritePath(t, store.URL())
	c := newWritePathClient()
	defer c.CloseIdleConnections()
	for i, tc := range []struct {
		name, mode string
		size       int
		chunked    bool
		rule       writeRule
	}{
		{"103 Early Hints, buffered", "early-hints", smallBody, false, writeRule{retryable: true}},
		{"103 Early Hints, streamed chunked", "early-hints", largeBody, true, writeRule{streamed: true}},
		{"unasked 100 Continue, buffered", "continue", smallBody, false, writeRule{retryable: true}},
		{"unasked 100 Continue, streamed", "continue", largeBody, false, writeRule{streamed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("interim-%d", i)
			u := upload{id: id, body: payload(id, tc.size), chunked: tc.chunked, header: map[string]string{HeaderFaultMode: tc.mode}}
			o := sendUpload(c, sl.proxy, u)
			store.settle()
			checkWrite(t, u, o, store.got.of(id), tc.rule)
			if o.clean2xx() && string(o.body) != storeAnswer {
				t.Errorf("%v: body %q, want the store's final answer %q", u, o.body, storeAnswer)
			}
		})
	}
	sl.checkReleased(t, 2, normalWriter(c, sl.proxy, "interim"))
	c.CloseIdleConnections()
	store.Close()
	sl.checkNoLeak(t)
}

// TestWritePathSwitchingProtocols: 101 Switching Protocols on the write
// path, each case with a sluice of its own with two send slots.
//
// A store that answers 101 to a plain write: the loader gets 502 with
// sluice's JSON error, sluice closes that connection and frees the send
// slot, so two such answers do not block a third, normal write.
//
// A loader that asks to upgrade (Connection: Upgrade, Upgrade: h2c,
// HTTP2-Settings, as Java's HttpClient does on http:// URLs) to a store
// that would accept: sluice does not pass the upgrade on; the store sees a
// plain HTTP/1.1 write and the loader gets the store's normal answer.
func TestWritePathSwitchingProtocols(t *testing.T) {
	t.Parallel()
	t.Run("store switches a plain write", func(t *testing.T) {
		t.Parallel()
		store := newH1Store(t, h1Options{})
		sl := startWritePath(t, store.URL())
		c := newWritePathClient()
		defer c.CloseIdleConnections()
		outs := make([]outcome, 2)
		ups := make([]upload, 2)
		done := make(chan int)
		for i := range ups {
			id := fmt.Sprintf("switch-%d", i)
			ups[i] = upload{id: id, body: payload(id, 100), header: map[string]string{HeaderFaultMode: "switch"}}
			go func() {
				outs[i] = sendUpload(c, sl.proxy, ups[i])
				done <- i
			}()
		}
		for range ups {
			<-done
		}
		store.settle()
		for i, u := range ups {
			checkWrite(t, u, outs[i], store.got.of(u.id), writeRule{retryable: true, also: []int{502}})
		}
		if o := normalWriter(c, sl.proxy, "switch-third")(0); !o.clean2xx() {
			st := status(t, sl.admin)
			t.Errorf("a third, normal write after two 101 answers with 2 send slots: %v, body %.200q (in flight %d)", o, o.body, st.Limiter.InFlight)
		}
		if !eventually(3*time.Second, func() bool { return store.switchClosed.Load() == store.switched.Load() }) {
			t.Errorf("sluice kept %d of the %d connections the store switched open", store.switched.Load()-store.switchClosed.Load(), store.switched.Load())
		}
		sl.checkReleased(t, 2, normalWriter(c, sl.proxy, "switch"))
		c.CloseIdleConnections()
		store.Close()
		sl.checkNoLeak(t)
	})
	t.Run("loader asks for h2c", func(t *testing.T) {
		t.Parallel()
		store := newH1Store(t, h1Options{})
		sl := startWritePath(t, store.URL())
		c := newWritePathClient()
		defer c.CloseIdleConnections()
		const upgrade = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
		for i := range 2 {
			id := fmt.Sprintf("h2c-%d", i)
			u := upload{id: id, body: payload(id, 100)}
			o, _ := rawWrite(hostPort(sl.proxy), u, upgrade, false)
			store.settle()
			checkWrite(t, u, o, store.got.of(id), writeRule{retryable: true})
			if n := store.upgradesSeen(id); n > 0 {
				t.Errorf("%v: the store saw the loader's upgrade request (Upgrade, HTTP2-Settings or Connection: Upgrade) %d times", u, n)
			}
		}
		sl.checkReleased(t, 2, normalWriter(c, sl.proxy, "h2c"))
		c.CloseIdleConnections()
		store.Close()
		sl.checkNoLeak(t)
	})
}

// TestWritePathExpectContinue: a loader that sends Expect: 100-continue.
// Against a store that answers 100 and then 2xx, the write is stored
// whole; against one that answers 429 or 413 at once without reading the
// body, the loader gets that answer (a 429 may be sluice's own, after its
// retries) and nothing is stored. Either way nothing leaks.
func TestWritePathExpectContinue(t *testing.T) {
	t.Parallel()
	store := newH1Store(t, h1Options{})
	sl := startWritePath(t, store.URL())
	c := newWritePathClient()
	defer c.CloseIdleConnections()
	for i, tc := range []struct {
		name, mode string
		size       int
		chunked    bool
		rule       writeRule
	}{
		{"100 then 200, buffered", "", smallBody, false, writeRule{retryable: true}},
		{"100 then 200, streamed", "", largeBody, false, writeRule{streamed: true}},
		{"100 then 200, streamed chunked", "", largeBody, true, writeRule{streamed: true}},
		{"429 unread, buffered", "refuse-429", smallBody, false, writeRule{retryable: true, also: []int{429}}},
		{"413 unread, buffered", "refuse-413", smallBody, false, writeRule{retryable: true, also: []int{413}}},
		{"413 unread, streamed", "refuse-413", largeBody, false, writeRule{streamed: true, also: []int{413}}},
		{"429 unread, streamed chunked", "refuse-429", largeBody, true, writeRule{streamed: true, also: []int{429}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("expect-%d", i)
			u := upload{id: id, body: payload(id, tc.size), chunked: tc.chunked}
			if tc.mode != "" {
				u.header = map[string]string{HeaderFaultMode: tc.mode}
			}
			o, interim := rawWrite(hostPort(sl.proxy), u, "", true)
			store.settle()
			checkWrite(t, u, o, store.got.of(id), tc.rule)
			if o.status == http.StatusRequestEntityTooLarge && string(o.body) != storeRefusal(o.status) {
				t.Errorf("%v: the loader got a 413 that is not the store's: %.200q", u, o.body)
			}
			t.Logf("loader got %v after interim %v; the store received %v", o.status, interim, store.got.of(id))
		})
	}
	sl.checkReleased(t, 2, normalWriter(c, sl.proxy, "expect"))
	c.CloseIdleConnections()
	store.Close()
	sl.checkNoLeak(t)
}
