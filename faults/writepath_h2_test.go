package faults

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"hash"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// newTestCA makes a certificate authority for one test, writes its
// certificate to a PEM file (for SLUICE_UPSTREAM_CA_FILE) and returns that
// file and a server certificate it issued for 127.0.0.1.
func newTestCA(t *testing.T) (caFile string, leaf tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice faults test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// h2Fault is how an h2Store treats the next stream that carries a body.
type h2Fault int

const (
	// h2Healthy reads every stream to its end and answers 200.
	h2Healthy h2Fault = iota
	// h2Refuse resets the stream with REFUSED_STREAM once it has carried
	// 8 KiB (or all) of its body: the server says it did not process it.
	h2Refuse
	// h2GoAway sends GOAWAY naming the stream before it as the last one
	// processed once the stream has carried 8 KiB (or all) of its body,
	// then closes the connection gracefully.
	h2GoAway
)

func (f h2Fault) String() string {
	return [...]string{"healthy", "REFUSED_STREAM", "GOAWAY"}[f]
}

// HTTP/2 frame types and flags (RFC 9113 §6) the h2Store uses.
const (
	h2Data         = 0x0
	h2Headers      = 0x1
	h2RstStream    = 0x3
	h2Settings     = 0x4
	h2Ping         = 0x6
	h2GoAwayFrame  = 0x7
	h2WindowUpdate = 0x8

	h2FlagEndStream  = 0x1
	h2FlagAck        = 0x1
	h2FlagEndHeaders = 0x4

	h2RefusedStream = 0x7
	h2FaultAfter    = 8 << 10
)

// h2Store is a store double that speaks HTTP/2 over TLS frame by frame,
// so that it can refuse a stream or go away part-way through a body, which
// net/http's server never does on purpose, and hold a client to its
// flow-control windows. It does not decode request headers (HPACK):
// streams are attributed to the write named by the last begin, so a test
// sends its writes one at a time, or, after begin(""), to the write named
// by the body's first line (see payload). It answers every finished stream
// ":status 200" (static table entry 8) with no body.
type h2Store struct {
	*conns
	got received

	mu      sync.Mutex
	id      string  // the write the streams now opening belong to
	fault   h2Fault // armed: hits the next stream that carries a body, once
	holding bool    // no WINDOW_UPDATE: each connection gets its first 64 KiB only
	opened  int     // streams opened while holding
	writers map[*h2Conn]struct{}
}

// newH2Store starts an h2Store on 127.0.0.1 with a certificate of a fresh
// test CA and returns it with the CA's PEM file.
func newH2Store(t *testing.T) (s *h2Store, caFile string) {
	t.Helper()
	caFile, cert := newTestCA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	s = &h2Store{writers: map[*h2Conn]struct{}{}}
	s.conns = newConns(ln)
	s.start(func(c net.Conn) { s.serve(c.(*tls.Conn)) })
	t.Cleanup(s.Close)
	return s, caFile
}

func (s *h2Store) URL() string { return "https://" + s.Addr() }

// begin attributes the streams opened from now on to write id and arms f.
func (s *h2Store) begin(id string, f h2Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id, s.fault = id, f
}

// holdWindows stops granting flow-control credit: a client can send no
// more than the initial 64 KiB window of each connection.
func (s *h2Store) holdWindows() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holding, s.opened = true, 0
}

// openedWhileHolding reports how many streams opened since holdWindows.
func (s *h2Store) openedWhileHolding() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

// releaseWindows grants the credit held back and lets streams flow again.
func (s *h2Store) releaseWindows() {
	type grant struct {
		w      *h2Conn
		stream uint32
		n      uint32
	}
	var grants []grant
	s.mu.Lock()
	s.holding = false
	for w := range s.writers {
		if w.owedConn > 0 {
			grants = append(grants, grant{w, 0, w.owedConn})
			w.owedConn = 0
		}
		for sid, n := range w.owed {
			grants = append(grants, grant{w, sid, n})
		}
		clear(w.owed)
	}
	s.mu.Unlock()
	for _, g := range grants {
		g.w.frame(h2WindowUpdate, 0, g.stream, u32(g.n))
	}
}

// h2Stream is one request stream as the store reads it.
type h2Stream struct {
	id   string // the write it belongs to; "": the one its body names
	n    int64
	h    hash.Hash
	head []byte // the body's first bytes
}

// write records a DATA frame's payload.
func (st *h2Stream) write(p []byte) {
	st.n += int64(len(p))
	st.h.Write(p)
	if len(st.head) < 128 {
		st.head = append(st.head, p[:min(len(p), 128-len(st.head))]...)
	}
}

// record adds the stream's copy to got and returns the write's id and
// the copy's index.
func (st *h2Stream) record(got *received, whole bool) (id string, i int) {
	c := bodyCopy{n: st.n, whole: whole}
	st.h.Sum(c.sum[:0])
	id = st.id
	if id == "" {
		id, _, _ = strings.Cut(string(st.head), " line ")
	}
	return id, got.add(id, c)
}

// h2Conn writes frames on one connection.
type h2Conn struct {
	c  *tls.Conn
	mu sync.Mutex

	// Flow-control credit held back (h2Store.holding), guarded by the
	// store's mu.
	owedConn uint32
	owed     map[uint32]uint32 // by stream
}

func (w *h2Conn) frame(typ, flags byte, stream uint32, payload []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := make([]byte, 9, 9+len(payload))
	h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], stream)
	_, _ = w.c.Write(append(h, payload...))
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func (s *h2Store) serve(c *tls.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	br := bufio.NewReader(c)
	if _, err := io.ReadFull(br, make([]byte, 24)); err != nil { // the client preface
		return
	}
	w := &h2Conn{c: c, owed: map[uint32]uint32{}}
	s.mu.Lock()
	s.writers[w] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.writers, w)
		s.mu.Unlock()
	}()
	w.frame(h2Settings, 0, 0, nil)
	streams := map[uint32]*h2Stream{}
	end := func(sid uint32) {
		delete(streams, sid)
		s.mu.Lock()
		delete(w.owed, sid)
		s.mu.Unlock()
	}
	answer := func(sid uint32, st *h2Stream) {
		id, i := st.record(&s.got, true)
		s.got.take(id, i)
		w.frame(h2Headers, h2FlagEndStream|h2FlagEndHeaders, sid, []byte{0x88}) // :status 200
		end(sid)
	}
	for {
		head := make([]byte, 9)
		if _, err := io.ReadFull(br, head); err != nil {
			return
		}
		n := int(head[0])<<16 | int(head[1])<<8 | int(head[2])
		typ, flags, sid := head[3], head[4], binary.BigEndian.Uint32(head[5:])&0x7fffffff
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return
		}
		switch typ {
		case h2Settings:
			if flags&h2FlagAck == 0 {
				w.frame(h2Settings, h2FlagAck, 0, nil)
			}
		case h2Ping:
			if flags&h2FlagAck == 0 {
				w.frame(h2Ping, h2FlagAck, 0, payload)
			}
		case h2GoAwayFrame:
			return
		case h2Headers:
			s.mu.Lock()
			st := &h2Stream{id: s.id, h: sha256.New()}
			if s.holding {
				s.opened++
			}
			s.mu.Unlock()
			streams[sid] = st
			if flags&h2FlagEndStream != 0 {
				answer(sid, st)
			}
		case h2Data:
			st := streams[sid]
			s.mu.Lock()
			hold := s.holding
			if hold {
				w.owedConn += uint32(n)
				if st != nil {
					w.owed[sid] += uint32(n)
				}
			}
			s.mu.Unlock()
			if n > 0 && !hold { // keep the windows open
				w.frame(h2WindowUpdate, 0, 0, u32(uint32(n)))
				if st != nil {
					w.frame(h2WindowUpdate, 0, sid, u32(uint32(n)))
				}
			}
			if st == nil {
				continue // a stream the store already refused
			}
			st.write(payload)
			last := flags&h2FlagEndStream != 0
			s.mu.Lock()
			f := s.fault
			if f != h2Healthy && (st.n >= h2FaultAfter || last) {
				s.fault = h2Healthy
			} else {
				f = h2Healthy
			}
			s.mu.Unlock()
			switch {
			case f == h2Refuse:
				st.record(&s.got, false)
				end(sid)
				w.frame(h2RstStream, 0, sid, u32(h2RefusedStream))
			case f == h2GoAway:
				st.record(&s.got, false)
				last := uint32(0)
				if sid > 2 {
					last = sid - 2
				}
				w.frame(h2GoAwayFrame, 0, 0, append(u32(last), u32(0)...)) // NO_ERROR
				// Close gracefully: close_notify, then read what is still
				// coming until the client closes, so that it reads the
				// GOAWAY rather than a reset.
				_ = c.CloseWrite()
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, _ = io.Copy(io.Discard, br)
				return
			case last:
				answer(sid, st)
			}
		}
	}
}

// TestWritePathH2StoreRefusesOrGoesAway: an HTTP/2 store (TLS, h2 by ALPN,
// trusted through SLUICE_UPSTREAM_CA_FILE) refuses a stream with
// REFUSED_STREAM, or sends GOAWAY that leaves it unprocessed, after part of
// its body. net/http sends such a request again by itself, through
// Request.GetBody. A body sluice buffered may go again, whole (the store
// then has it whole exactly once) or the loader gets an error; a body it
// streams (over SLUICE_RETRY_BODY_MAX, with a length or chunked) cannot be
// replayed, so the loader gets 502, never a 2xx for a store that received
// an empty or truncated replay.
func TestWritePathH2StoreRefusesOrGoesAway(t *testing.T) {
	t.Parallel()
	store, caFile := newH2Store(t)
	sl := startWritePath(t, store.URL(), "SLUICE_UPSTREAM_CA_FILE="+caFile)
	c := newWritePathClient()
	defer c.CloseIdleConnections()
	buffered := writeRule{retryable: true, also: []int{502}}
	bufferedPost := writeRule{also: []int{502}}
	streamed := writeRule{streamed: true, also: []int{502}}
	for _, f := range []h2Fault{h2Refuse, h2GoAway} {
		for _, tc := range []struct {
			name    string
			method  string
			size    int
			chunked bool
			rule    writeRule
		}{
			{"buffered PUT", http.MethodPut, smallBody, false, buffered},
			{"buffered PUT chunked", http.MethodPut, smallBody, true, buffered},
			{"buffered POST", http.MethodPost, smallBody, false, bufferedPost},
			{"streamed PUT", http.MethodPut, largeBody, false, streamed},
			{"streamed PUT chunked", http.MethodPut, largeBody, true, streamed},
			{"streamed POST chunked", http.MethodPost, largeBody, true, streamed},
		} {
			t.Run(fmt.Sprintf("%v/%s", f, tc.name), func(t *testing.T) {
				id := fmt.Sprintf("h2-%d-%s-%d-%v", f, tc.method, tc.size, tc.chunked)
				u := upload{id: id, method: tc.method, body: payload(id, tc.size), chunked: tc.chunked}
				store.begin(id, f)
				o := sendUpload(c, sl.proxy, u)
				checkWrite(t, u, o, store.got.of(id), tc.rule)
				t.Logf("loader got %d %q; the store received %v", o.status, o.code, store.got.of(id))
			})
		}
	}
	store.begin("h2-normal", h2Healthy)
	sl.checkReleased(t, 2, normalWriter(c, sl.proxy, "h2"))
	c.CloseIdleConnections()
	store.Close()
	sl.checkNoLeak(t)
}
