package proxy

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// readUpTo never holds more memory than its limit (bytes.Buffer doubles
// past it), and gives back every byte it read.
func TestReadUpToStaysWithinLimit(t *testing.T) {
	const limit = 100_000
	f := func(size int) {
		t.Helper()
		in := bytes.Repeat([]byte("0123456789"), size/10+1)[:size]
		buf, more, err := readUpTo(iotestHalfReader{bytes.NewReader(in)}, limit)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if cap(buf) > limit {
			t.Errorf("size %d: buffer capacity %d over the limit %d", size, cap(buf), limit)
		}
		if (more != nil) != (size > limit) {
			t.Errorf("size %d: more = %v", size, more)
		}
		if got := string(buf) + string(more); !strings.HasPrefix(string(in), got) || (more == nil && got != string(in)) {
			t.Errorf("size %d: got back %d bytes that are not the body's", size, len(got))
		}
	}
	for _, n := range []int{0, 1, 32 << 10, limit - 1, limit, limit + 1, 3 * limit} {
		f(n)
	}
}

// iotestHalfReader returns at most half of what is asked, as sockets do.
type iotestHalfReader struct{ r io.Reader }

func (h iotestHalfReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:len(p)/2]
	}
	return h.r.Read(p)
}
