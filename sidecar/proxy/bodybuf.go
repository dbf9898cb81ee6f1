package proxy

import (
	"bytes"
	"errors"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Buffered bodies of pooledMin to pooledMax bytes take their memory from a
// pool: made fresh, each would be zeroed, then collected, and at thousands
// of writes a second of tens of KiB that is most of a write's cost. Smaller
// ones are cheap to make; larger ones are rarer, and an idle one would hold
// much memory.
const (
	pooledMin = 8 << 10 // exclusive
	pooledMax = 1 << 20
)

// The pool's size classes step by a quarter of a power of two (10, 12, 14,
// 16, 20, 24, … KiB up to pooledMax), so that a buffer holds at most a
// quarter more than its body; the budget counts the buffer, not the body.
const (
	classLow   = 13                  // log2(pooledMin)
	numClasses = 4 * (20 - classLow) // up to log2(pooledMax) = 20
)

// bodyClass is the class of a body of n bytes, pooledMin < n <= pooledMax,
// and the size of its buffers.
func bodyClass(n int64) (class int, size int64) {
	k := bits.Len64(uint64(n-1)) - 1 // 2^k < n <= 2^(k+1)
	step := int64(1) << (k - 2)
	q := (n - 1 - 1<<k) / step // 0..3
	return (k-classLow)*4 + int(q), 1<<k + (q+1)*step
}

// bodyBuffers keeps idle body buffers for the next writes, at most idleMax
// bytes of them (a small share of the buffer budget, which counts only the
// buffers in use: the idle ones are a fixed cost on top of it). It is safe
// for concurrent use.
type bodyBuffers struct {
	idleMax int64
	idle    atomic.Int64 // bytes in free lists
	classes [numClasses]struct {
		mu   sync.Mutex
		free []*bodyBuf
	}
}

// get returns a buffer for a body of n bytes, pooledMin < n <= pooledMax,
// held once (by its exchange; see bodyBuf). Its bytes are those of an
// earlier body: the caller overwrites the n it uses.
func (bb *bodyBuffers) get(n int64) *bodyBuf {
	class, size := bodyClass(n)
	c := &bb.classes[class]
	c.mu.Lock()
	var b *bodyBuf
	if k := len(c.free); k > 0 {
		b = c.free[k-1]
		c.free[k-1] = nil
		c.free = c.free[:k-1]
		bb.idle.Add(-size)
	}
	c.mu.Unlock()
	if b == nil {
		b = &bodyBuf{b: make([]byte, size), from: bb, class: class}
	}
	b.refs.Store(1)
	return b
}

// put takes back b, no longer held by anyone, or lets the collector have
// it if idleMax bytes are idle already.
func (bb *bodyBuffers) put(b *bodyBuf) {
	size := int64(len(b.b))
	if bb.idle.Add(size) > bb.idleMax {
		bb.idle.Add(-size)
		return
	}
	c := &bb.classes[b.class]
	c.mu.Lock()
	c.free = append(c.free, b)
	c.mu.Unlock()
}

// bodyBuf is a pooled buffer and who holds it: the exchange whose body it
// is, until the exchange ends, and each replayReader of it that was not
// closed. It goes back to the pool when the last lets go: a transport may
// still be reading a body after the exchange got its answer (a store that
// answers before it has read it all), and a body must never change under
// a reader.
type bodyBuf struct {
	b     []byte
	refs  atomic.Int32
	from  *bodyBuffers
	class int
}

// hold takes a hold on b for a reader, unless nobody holds it any more
// (then it may be another body's already).
func (b *bodyBuf) hold() bool {
	for {
		n := b.refs.Load()
		if n <= 0 {
			return false
		}
		if b.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release lets go of a hold on b.
func (b *bodyBuf) release() {
	if b.refs.Add(-1) == 0 {
		b.from.put(b)
	}
}

// errBodyGone is a read of a buffered body after its reader was closed, or
// a replay of it after its exchange ended.
var errBodyGone = errors.New("proxy: read of a request body after its reader was closed or its write ended")

// replayReader is a buffered body as one reader (an attempt, or a replay
// through GetBody) sends it, from its start. Once Close returns, no read of
// it is under way or will be: what it read from may be another body's.
type replayReader struct {
	mu     sync.Mutex
	r      bytes.Reader
	held   *bodyBuf // the pooled buffer r reads, nil when not pooled
	closed bool
}

func (r *replayReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errBodyGone
	}
	return r.r.Read(p)
}

func (r *replayReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		if r.held != nil {
			r.held.release()
		}
	}
	return nil
}
