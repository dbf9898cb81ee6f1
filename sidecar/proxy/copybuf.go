package proxy

import "sync"

// copyBufferSize is the buffer the ReverseProxy copies an answer to the
// loader with: the size it would make itself.
const copyBufferSize = 32 << 10

// copyBuffers lends the ReverseProxy the buffer it copies each answer to
// the loader with (an httputil.BufferPool). Without a pool it makes one per
// answer, 32 KiB zeroed for a 204 as for a bulk answer: most of the bytes a
// small write allocates, and so most of the collector's work. The buffers
// held are those of the answers being copied, and idle ones until the
// collector takes them back.
type copyBuffers struct{ pool sync.Pool }

func (c *copyBuffers) Get() []byte {
	if b, ok := c.pool.Get().(*[copyBufferSize]byte); ok {
		return b[:]
	}
	return new([copyBufferSize]byte)[:]
}

func (c *copyBuffers) Put(b []byte) {
	if len(b) == copyBufferSize { // always: the ReverseProxy gives back what Get lent
		c.pool.Put((*[copyBufferSize]byte)(b))
	}
}
