package proxy

import "sync/atomic"

// Budget bounds the bytes held in memory for retryable request bodies
// (and for payload hashing) across all requests. A request whose body does
// not fit streams once, with no sidecar retry, so memory is bounded by the
// budget and never by the size or number of uploads.
//
// The zero value has no room. It is safe for concurrent use.
type Budget struct {
	max  int64
	used atomic.Int64
}

// reserve takes n bytes from the budget if they fit, reporting whether they did.
func (b *Budget) reserve(n int64) bool {
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
func (b *Budget) release(n int64) { b.used.Add(-n) }

// InUse reports the bytes currently reserved.
func (b *Budget) InUse() int64 { return b.used.Load() }

// Reserve reserves n bytes and returns the func that gives them back, once
// (the form the auth package takes).
func (b *Budget) Reserve(n int64) (release func(), ok bool) {
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

// NewBudget returns a Budget of max bytes.
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Max is the budget's size in bytes.
func (b *Budget) Max() int64 { return b.max }
