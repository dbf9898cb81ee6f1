package storesim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/internal/ctxtime"
)

// StatsPath serves the store's Stats as JSON (GET).
const StatsPath = "/_storesim/stats"

// maxBulkBytes mirrors Elasticsearch's default http.max_content_length.
const maxBulkBytes = 100 << 20

// Server is an http.Handler that serves a simulated store. Every request is
// a write except:
//   - GET StatsPath, which returns Stats as JSON;
//   - admin calls, never throttled and unaffected by outages, counted in
//     Stats.Admin and answered with success: GET and HEAD (reads), DELETE,
//     and paths containing "/_tasks/", "/_delete_by_query" or
//     "/api/v1/admin/" (the stores' cancel and cleanup APIs).
//
// It embeds the Store, so SetSchedule, SetCapacity, SetOutage and Stats are
// available on it; the Server variants without a time argument read
// Config.Now. A Server is safe for concurrent use. Close releases requests
// held by a Hang outage.
type Server struct {
	*Store

	now       func() time.Time
	observe   func(Event)
	sem       chan struct{} // nil without a concurrency cap
	closed    chan struct{}
	closeOnce sync.Once
	seq       atomic.Int64
}

// NewServer returns a Server whose schedule starts now (Config.Now).
func NewServer(cfg Config) (*Server, error) {
	cfg.setDefaults()
	st, err := NewStore(cfg, cfg.Now())
	if err != nil {
		return nil, err
	}
	s := &Server{Store: st, now: cfg.Now, observe: cfg.Observe, closed: make(chan struct{})}
	if cfg.MaxConcurrency > 0 {
		s.sem = make(chan struct{}, cfg.MaxConcurrency)
	}
	return s, nil
}

// Close makes requests held by a Hang outage return. It is idempotent; the
// Server keeps serving other requests.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// SetCapacityNow makes the capacity c Unit/s from now on.
func (s *Server) SetCapacityNow(c float64) { s.Store.SetCapacity(s.now(), c) }

// SetScheduleNow restarts the capacity schedule from now.
func (s *Server) SetScheduleNow(sched Schedule) { s.Store.SetSchedule(s.now(), sched) }

// StatsNow returns the counters at the current time.
func (s *Server) StatsNow() Stats { return s.Store.Stats(s.now()) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil {
		r.Body = http.NoBody
	}
	defer r.Body.Close()
	if r.URL.Path == StatsPath {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "storesim: stats wants GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.StatsNow())
		return
	}
	cfg := &s.Store.cfg // immutable after NewStore, except via methods that lock
	if isAdmin(r) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.CountAdmin()
		s.writeAdmin(w, cfg.Style)
		return
	}
	s.serveWrite(w, r, cfg)
}

func isAdmin(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete:
		return true
	}
	p := r.URL.Path
	return strings.Contains(p, "/_tasks/") || strings.Contains(p, "/_delete_by_query") || strings.Contains(p, "/api/v1/admin/")
}

func (s *Server) writeAdmin(w http.ResponseWriter, style Style) {
	switch style {
	case StyleS3:
		w.WriteHeader(http.StatusNoContent)
	case StyleDynamoDB:
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		_, _ = io.WriteString(w, "{}")
	default:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"acknowledged":true}`)
	}
}

func (s *Server) serveWrite(w http.ResponseWriter, r *http.Request, cfg *Config) {
	ctx := r.Context()
	seq := s.seq.Add(1)
	reqID := fmt.Sprintf("%016X", seq)
	client := r.Header.Get(ClientHeader)

	s.addInFlight(1)
	defer s.addInFlight(-1)

	// Read the write, counting what the Unit needs.
	var (
		actions   []bulkAction
		items     = 1
		bodyBytes int64
	)
	if cfg.Style == StyleElasticsearch {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBulkBytes+1))
		if err != nil {
			return // the client went away mid-body
		}
		if len(body) > maxBulkBytes {
			http.Error(w, "storesim: bulk body over 100mb", http.StatusRequestEntityTooLarge)
			return
		}
		bodyBytes = int64(len(body))
		actions = parseBulk(body, indexFromPath(r.URL.Path))
		items = max(len(actions), 1)
	} else {
		c := &lineCounter{countLines: cfg.Unit == Items}
		if _, err := io.Copy(c, r.Body); err != nil {
			return
		}
		c.finish()
		bodyBytes = c.bytes
		if c.countLines {
			items = max(c.lines, 1)
		}
	}
	req := Request{Items: items}
	switch cfg.Unit {
	case Requests:
		req.Cost = 1
	case Bytes:
		req.Cost = float64(bodyBytes)
	case Items:
		req.Cost = float64(items)
	}

	if !ctxtime.SleepOr(ctx, s.closed, s.networkDelay()) {
		return
	}

	// Concurrency cap, VictoriaMetrics style: wait up to MaxQueueDuration.
	if s.sem != nil {
		if !s.acquireSlot(ctx, cfg.MaxQueueDuration) {
			if ctx.Err() != nil {
				return
			}
			d := s.RejectConcurrency(s.now(), req)
			s.emit(Event{Time: s.now(), Client: client, Cost: req.Cost, Items: items, Throttled: true, Capacity: d.Capacity})
			s.write(w, cfg.Style.answer(cfg, verdictWhole, d, items, actions, reqID, seq, bodyBytes))
			return
		}
		defer func() { <-s.sem }()
	}

	now := s.now()
	outage := s.Outage()
	d := s.Admit(now, req)
	ev := Event{Time: now, Client: client, Cost: req.Cost, Items: items,
		AcceptedItems: d.AcceptedItems, AcceptedCost: d.AcceptedCost, Capacity: d.Capacity}
	v := verdictServed
	switch outage {
	case Hang:
		ev.Failed = true
		s.emit(ev)
		select {
		case <-ctx.Done():
		case <-s.closed:
			http.Error(w, "storesim: closed", http.StatusServiceUnavailable)
		}
		return
	case Fail:
		ev.Failed = true
		v = verdictFailed
	case Refuse:
		ev.Throttled = true
		v = verdictWhole
	default:
		ev.Throttled = d.Throttled(items)
	}
	s.emit(ev)
	resp := cfg.Style.answer(cfg, v, d, items, actions, reqID, seq, bodyBytes)
	if !ctxtime.SleepOr(ctx, s.closed, d.Latency) {
		return
	}
	s.write(w, resp)
}

func (s *Server) emit(ev Event) {
	if s.observe != nil {
		s.observe(ev)
	}
}

func (s *Server) write(w http.ResponseWriter, resp response) {
	h := w.Header()
	for k, vs := range resp.header {
		h[k] = vs
	}
	w.WriteHeader(resp.status)
	if len(resp.body) > 0 {
		_, _ = w.Write(resp.body)
	}
}

// acquireSlot takes a concurrency slot, waiting at most wait.
func (s *Server) acquireSlot(ctx context.Context, wait time.Duration) bool {
	select {
	case s.sem <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.sem <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// indexFromPath returns the index of /{index}/_bulk, or "" for /_bulk.
func indexFromPath(p string) string {
	p = strings.Trim(p, "/")
	if i := strings.Index(p, "/"); i > 0 && !strings.HasPrefix(p, "_") {
		return p[:i]
	}
	return "storesim"
}

// lineCounter counts bytes and, optionally, non-empty lines.
type lineCounter struct {
	countLines bool
	bytes      int64
	lines      int
	inLine     bool // current line has a non-space byte
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.bytes += int64(len(p))
	if !c.countLines {
		return len(p), nil
	}
	for _, b := range p {
		switch b {
		case '\n':
			if c.inLine {
				c.lines++
			}
			c.inLine = false
		case ' ', '\t', '\r':
		default:
			c.inLine = true
		}
	}
	return len(p), nil
}

// finish counts a last line that has no trailing newline.
func (c *lineCounter) finish() {
	if c.inLine {
		c.lines++
		c.inLine = false
	}
}

// Transport returns an http.RoundTripper that serves requests in-process,
// without sockets: it calls ServeHTTP on the caller's goroutine and returns
// the recorded response. Under testing/synctest this runs the store on
// virtual time; it honours the request's context like a real transport.
func (s *Server) Transport() http.RoundTripper { return transport{s} }

type transport struct{ h http.Handler }

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	rec := &recorder{header: http.Header{}}
	sreq := req.Clone(ctx)
	sreq.Body = req.Body
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "127.0.0.1:0"
	if sreq.Host == "" {
		sreq.Host = req.URL.Host
	}
	t.h.ServeHTTP(rec, sreq)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", rec.status, http.StatusText(rec.status)),
		StatusCode:    rec.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rec.header,
		Body:          io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		ContentLength: int64(rec.body.Len()),
		Request:       req,
	}, nil
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}
