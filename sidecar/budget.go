package sidecar

import "sync/atomic"

// bufferBudget bounds the bytes held in memory for retryable request bodies
// (and for payload hashing) across all requests. A request whose body does
// not fit streams once, with no sidecar retry, so memory is bounded by the
// budget and never by the size or number of uploads.
//
// The zero value has no room. It is safe for concurrent use.
type bufferBudget struct {
	max  int64
	used atomic.Int64
}

// reserve takes n bytes from the budget if they fit, reporting whether they did.
func (b *bufferBudget) reserve(n int64) bool {
	if n < 0 {
		return false
	}
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// release returns n bytes to the budget.
func (b *bufferBudget) release(n int64) { b.used.Add(-n) }

// inUse reports the bytes currently reserved.
func (b *bufferBudget) inUse() int64 { return b.used.Load() }

// Reserve is the func form handed to the auth package: it reserves n bytes
// and returns the func that gives them back.
func (b *bufferBudget) Reserve(n int64) (release func(), ok bool) {
	if !b.reserve(n) {
		return nil, false
	}
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			b.release(n)
		}
	}, true
}

// MemoryLimit is the Go soft memory limit sluice runs with unless GOMEMLIMIT
// is set: the buffer budget plus room for everything else. With the default
// GOGC alone, the heap may grow to twice the live buffers before a
// collection, so peak memory would follow the budget times two.
func MemoryLimit(cfg Config) int64 {
	return int64(cfg.BufferBudget) + 128<<20
}
