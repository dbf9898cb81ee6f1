package faults

import (
	"fmt"
	"testing"
	"time"
)

// TestWritePathChunkedBuffersWithinBudget: eight loaders send chunked
// (unknown length) writes at once to an HTTP/2 store that grants no
// flow-control credit until told to, so that sluice can send no more than
// 64 KiB of them and keeps what it buffered. (Over HTTP/1.1 the kernel's
// socket buffers take megabytes off sluice's hands, and how much varies.)
//
// What sluice holds must be what SLUICE_BUFFER_BUDGET counts: its heap in
// use (go_memstats_heap_inuse_bytes, the process run with GOGC=10 so that
// it tracks live memory) grows by at most 1.25 × the bytes the budget
// counts at that moment (/v1/status buffer_bytes, at most the budget) +
// 8 MiB. The factor covers the garbage GOGC=10 lets accumulate (up to 10 %
// of the live heap) and the allocator's rounding; the 8 MiB cover
// connection buffers and the runtime. A buffer that doubles as it grows
// holds up to twice what is counted, and does not fit.
//
// Bodies just over SLUICE_RETRY_BODY_MAX (4 MiB) stream once sluice has
// read their first 4 MiB + 1 byte; bodies just over half of it are
// buffered whole. Once the store lets them flow every write is stored
// whole, once.
func TestWritePathChunkedBuffersWithinBudget(t *testing.T) {
	t.Parallel()
	const (
		retryBodyMax = 4 << 20
		budget       = 32 << 20
		loaders      = 8
	)
	for _, tc := range []struct {
		name string
		size int
		rule writeRule
	}{
		{"over SLUICE_RETRY_BODY_MAX, streamed", retryBodyMax + 64<<10, writeRule{streamed: true}},
		{"over half of SLUICE_RETRY_BODY_MAX, buffered", retryBodyMax/2 + 64<<10, writeRule{retryable: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, caFile := newH2Store(t)
			sl := startWritePath(t, store.URL(), "SLUICE_UPSTREAM_CA_FILE="+caFile, "GOGC=10",
				fmt.Sprintf("SLUICE_RETRY_BODY_MAX=%d", retryBodyMax), fmt.Sprintf("SLUICE_BUFFER_BUDGET=%d", budget),
				fmt.Sprintf("SLUICE_INITIAL_CONCURRENCY=%d", loaders), fmt.Sprintf("SLUICE_MAX_CONCURRENCY=%d", loaders),
				"SLUICE_UPSTREAM_TIMEOUT=30s", "SLUICE_QUEUE_TIMEOUT=10s")
			c := newWritePathClient()
			defer c.CloseIdleConnections()
			store.begin("budget-warm", h2Healthy)
			if o := normalWriter(c, sl.proxy, "budget-warm")(0); !o.clean2xx() {
				t.Fatalf("warm-up write: %v", o)
			}
			heap := func() float64 { return metricValue(metricsText(t, sl.admin), "go_memstats_heap_inuse_bytes") }
			base := heap()

			store.begin("", h2Healthy) // streams named by their bodies
			store.holdWindows()
			ups := make([]upload, loaders)
			outs := make([]outcome, loaders)
			done := make(chan struct{})
			for i := range ups {
				id := fmt.Sprintf("budget-%d-%d", tc.size, i)
				ups[i] = upload{id: id, body: payload(id, tc.size), chunked: true}
				go func() {
					outs[i] = sendUpload(c, sl.proxy, ups[i])
					done <- struct{}{}
				}()
			}
			if !eventually(20*time.Second, func() bool { return store.openedWhileHolding() == loaders }) {
				t.Errorf("only %d of %d writes reached the store in 20 s", store.openedWhileHolding(), loaders)
			}
			// Every write has its stream open and can send no more: sluice
			// holds what it buffered. Take a few readings.
			var peak, counted float64
			tick := time.NewTicker(50 * time.Millisecond)
			for range 5 {
				<-tick.C
				peak = max(peak, heap())
				counted = max(counted, float64(status(t, sl.admin).BufferBytes))
			}
			tick.Stop()
			store.releaseWindows()
			for range loaders {
				<-done
			}
			growth := peak - base
			limit := 1.25*counted + 8<<20
			t.Logf("%d chunked writes of %.2f MiB held: the budget counts %.1f MiB (of %d MiB); sluice's heap in use %.1f → %.1f MiB (+%.1f MiB, limit %.1f MiB)",
				loaders, float64(tc.size)/(1<<20), counted/(1<<20), budget>>20, base/(1<<20), peak/(1<<20), growth/(1<<20), limit/(1<<20))
			if growth > limit {
				t.Errorf("sluice's heap grew by %.1f MiB while its buffer budget counted %.1f MiB: over 1.25 × that + 8 MiB = %.1f MiB; its buffers hold more than the budget counts",
					growth/(1<<20), counted/(1<<20), limit/(1<<20))
			}
			for i, u := range ups {
				checkWrite(t, u, outs[i], store.got.of(u.id), tc.rule)
			}
			store.begin("budget-normal", h2Healthy)
			sl.checkReleased(t, loaders, normalWriter(c, sl.proxy, "budget"))
			c.CloseIdleConnections()
			store.Close()
			sl.checkNoLeak(t)
		})
	}
}
