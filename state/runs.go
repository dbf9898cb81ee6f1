package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/limiter"
)

// Retry schedule between failed attempts of an action.
var actionBackoff = limiter.Backoff{Min: time.Second, Max: 30 * time.Second}

// runAction runs r's action with retries and feeds the outcome back to the
// job as events. When the Manager closes it abandons the action without an
// event: the job stays cancelling or cleaning and resumes at the next start.
func (m *Manager) runAction(r runReq) {
	name := r.act.String()
	if r.spec == nil {
		m.met.actions.WithLabelValues(name, ResultSkipped).Inc()
		m.deliver(r, Event{Type: EvActionSucceeded, Action: r.act, Skipped: true,
			Attempt: &Attempt{Action: name, At: m.now(), Result: ResultSkipped, Error: "skipped: no action configured"}}, true)
		return
	}
	for n := 1; ; n++ {
		a, ok := m.run.attempt(m.ctx, r.spec, r.id, name, n)
		if m.ctx.Err() != nil {
			m.deliver(r, Event{}, true) // abandoned
			return
		}
		m.met.actions.WithLabelValues(name, a.Result).Inc()
		if ok {
			m.deliver(r, Event{Type: EvActionSucceeded, Action: r.act, Attempt: &a}, true)
			return
		}
		final := n > r.retries
		m.log.Warn("job action attempt failed", "job", r.id, "action", name, "attempt", n, "final", final, "err", a.Error)
		m.deliver(r, Event{Type: EvActionFailed, Action: r.act, Final: final, Err: a.Error, Attempt: &a}, final)
		if final {
			return
		}
		t := time.NewTimer(actionBackoff.Delay(n-1, 0, m.rnd))
		select {
		case <-m.ctx.Done():
			t.Stop()
			m.deliver(r, Event{}, true)
			return
		case <-t.C:
		}
	}
}

// deliver steps the job with ev (none if ev.Type is 0); done marks the
// action goroutine finished first, so that an action the step asks for
// next can start.
func (m *Manager) deliver(r runReq, ev Event, done bool) {
	var fx effects
	m.mu.Lock()
	e := m.jobs[r.id]
	if e == nil {
		m.mu.Unlock()
		return
	}
	if done {
		e.running[r.act-ActRunCancel] = false
	}
	if ev.Type != 0 {
		if _, err := m.stepLocked(e, ev, m.now(), &fx); err != nil {
			m.log.Error("job action result rejected", "job", r.id, "err", err)
		}
	}
	closed := m.closed
	m.mu.Unlock()
	if closed {
		fx.runs = nil // resumed at the next start
	}
	m.finish(fx)
}

// runProbe reads the progress probe of job id, whose entry was e when the
// probe started, once; an increase of the value is progress.
//
// The result is dropped if id is no longer e: the job was deleted (or
// forgotten, or pruned) while the probe was out, and maybe created again
// under the same id. The old job's value is not the new one's: taken as
// its baseline, or compared with it, it would make progress of nothing or
// hide the new job's, and it would end the new job's own probe early.
func (m *Manager) runProbe(e *entry, id, rawURL, ptr string) {
	v, err := m.readProbe(id, rawURL, ptr)
	var fx effects
	m.mu.Lock()
	if m.jobs[id] != e {
		m.mu.Unlock()
		return
	}
	e.probeInflight = false
	if err != nil {
		m.mu.Unlock()
		m.errLog.Do(func() { m.log.Warn("progress probe failed", "job", id, "err", err) })
		return
	}
	now := m.now()
	if e.probeHave && v > e.loader.ProbeValue {
		e.lastProgress = now
		_, _ = m.stepLocked(e, Event{Type: EvProgress}, now, &fx)
	}
	if !e.probeHave || v != e.loader.ProbeValue {
		e.version++
	}
	e.probeHave, e.loader.ProbeValue = true, v
	m.mu.Unlock()
	m.finish(fx)
}

func (m *Manager) readProbe(id, rawURL, ptr string) (float64, error) {
	spec := ActionSpec{Kind: KindHTTP, URL: rawURL}
	u, err := spec.ExpandURL(id)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.ActionTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("state: probe %s: %w", redact.URL(u), redact.URLError(err))
	}
	resp, err := m.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("state: probe %s: %w", redact.URL(u), redact.URLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("state: probe %s: status %d", redact.URL(u), resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("state: probe %s: %w", redact.URL(u), err)
	}
	return jsonPointerNumber(body, ptr)
}

// jsonPointerNumber returns the number (or numeric string) at RFC 6901
// pointer ptr in doc.
func jsonPointerNumber(doc []byte, ptr string) (float64, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return 0, fmt.Errorf("state: probe body: %w", err)
	}
	if ptr != "" {
		if !strings.HasPrefix(ptr, "/") {
			return 0, fmt.Errorf("state: JSON pointer %q must start with /", ptr)
		}
		for _, tok := range strings.Split(ptr[1:], "/") {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			switch c := v.(type) {
			case map[string]any:
				var ok bool
				if v, ok = c[tok]; !ok {
					return 0, fmt.Errorf("state: JSON pointer %q: no member %q", ptr, tok)
				}
			case []any:
				i, err := strconv.Atoi(tok)
				if err != nil || i < 0 || i >= len(c) {
					return 0, fmt.Errorf("state: JSON pointer %q: bad index %q", ptr, tok)
				}
				v = c[i]
			default:
				return 0, fmt.Errorf("state: JSON pointer %q: %q is not inside an object or array", ptr, tok)
			}
		}
	}
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = x
	default:
		return 0, fmt.Errorf("state: JSON pointer %q: value %v is not a number", ptr, v)
	}
	f, err := strconv.ParseFloat(s, 64)
	// ParseFloat takes "NaN" and "Inf"; kept as the probe value, either
	// would make the job's record, and every batch it is written in,
	// impossible to encode.
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("state: JSON pointer %q: value %q is not a finite number", ptr, s)
	}
	return f, nil
}
