package proxy

import (
	"errors"
	"io"
	"testing"
)

func TestBodyClass(t *testing.T) {
	f := func(n, wantSize int64) {
		t.Helper()
		class, size := bodyClass(n)
		if size != wantSize || class < 0 || class >= numClasses {
			t.Errorf("bodyClass(%d) = class %d, size %d; want size %d, class in [0, %d)", n, class, size, wantSize, numClasses)
		}
	}
	f(pooledMin+1, 10<<10)
	f(10<<10, 10<<10)
	f(10<<10+1, 12<<10)
	f(16<<10, 16<<10)
	f(16<<10+1, 20<<10)
	f(64<<10, 64<<10)
	f(100_000, 112<<10)
	f(pooledMax-1, pooledMax)
	f(pooledMax, pooledMax)

	// Every size lands in a class of its own size, at most a quarter
	// over the body.
	sizes := map[int]int64{}
	for n := int64(pooledMin + 1); n <= pooledMax; n += 997 {
		class, size := bodyClass(n)
		if size < n || 4*size > 5*n {
			t.Fatalf("bodyClass(%d): size %d", n, size)
		}
		if s, ok := sizes[class]; ok && s != size {
			t.Fatalf("class %d holds %d and %d", class, s, size)
		}
		sizes[class] = size
	}
}

// A pooled buffer goes back to the pool only once its exchange and every
// reader of it have let go, and no reader reads it after its Close.
func TestBodyBufHeldUntilLastReader(t *testing.T) {
	pool := &bodyBuffers{idleMax: 1 << 20}
	const n = 64 << 10
	buf := pool.get(n)
	copy(buf.b, "first body")
	body := requestBody{buf: buf.b[:n], pooled: buf}

	attempt, err := body.reader()
	if err != nil {
		t.Fatal(err)
	}
	replay, err := body.replay() // net/http's GetBody
	if err != nil {
		t.Fatal(err)
	}
	buf.release() // the exchange ends
	if pool.idle.Load() != 0 {
		t.Fatal("back in the pool while two readers hold it")
	}
	if _, err := body.replay(); err != nil {
		t.Fatalf("replay while readers hold it: %v", err)
	}
	p := make([]byte, 5)
	if _, err := attempt.Read(p); err != nil || string(p) != "first" {
		t.Fatalf("Read = %q, %v", p, err)
	}
	attempt.Close()
	attempt.Close() // a second Close lets go of nothing more
	if _, err := attempt.Read(p); !errors.Is(err, errBodyGone) {
		t.Fatalf("Read after Close: %v, want errBodyGone", err)
	}
	if pool.idle.Load() != 0 {
		t.Fatal("back in the pool while a reader holds it")
	}
	replay.Close()
	// The third reader (the replay above) still holds it.
	if pool.idle.Load() != 0 {
		t.Fatal("back in the pool while the last reader holds it")
	}
}

func TestBodyBufReturnedAndReused(t *testing.T) {
	pool := &bodyBuffers{idleMax: 1 << 20}
	const n = 64 << 10
	buf := pool.get(n)
	body := requestBody{buf: buf.b[:n], pooled: buf}
	r, err := body.reader()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, r)
	r.Close()
	buf.release()
	if got := pool.idle.Load(); got != n {
		t.Fatalf("idle %d bytes, want %d", got, n)
	}
	if _, err := body.replay(); !errors.Is(err, errBodyGone) {
		t.Fatalf("replay after the exchange ended: %v, want errBodyGone", err)
	}
	if again := pool.get(n - 100); again != buf || again.refs.Load() != 1 {
		t.Fatalf("get did not reuse the idle buffer of its class")
	}
	if pool.idle.Load() != 0 {
		t.Fatalf("idle %d bytes after reuse", pool.idle.Load())
	}
}

// The pool keeps at most idleMax bytes idle; the rest is the collector's.
func TestBodyBuffersIdleMax(t *testing.T) {
	const n = 64 << 10
	pool := &bodyBuffers{idleMax: 2 * n}
	var held []*bodyBuf
	for range 5 {
		held = append(held, pool.get(n))
	}
	for _, b := range held {
		b.release()
	}
	if got := pool.idle.Load(); got != 2*n {
		t.Fatalf("idle %d bytes, want %d", got, 2*n)
	}
}
