package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// pacedSpec is the latency phase of one body size, run by one load
// generator process (-role=paced) against every target in turn.
//
// Why one process and many short blocks: on a shared 2-core machine a
// collection or a scheduler stall of any process (the store, a proxy, the
// generator itself, someone else's job) moves a p99 by milliseconds, and
// it lands in whatever is being measured at that moment. Pooling seconds
// of each target and subtracting one p99 from another lets one such
// stall decide the result. Here the targets alternate in blocks of a
// fraction of a second (the order rotating every cycle), each block gets
// its own p50/p99, and the harness compares each target's block with the
// bare proxy's block of the same cycle: a stall spoils one pair, and the
// median over many pairs does not follow it.
type pacedSpec struct {
	Targets []string      // URLs; Targets[0] is the bare proxy
	Writers int           // connections per target, and the writes in flight at most
	Size    int           // body bytes
	Rate    float64       // writes/s offered, the same for every target
	Block   time.Duration // one target's measured block
	Cycles  int           // each cycle measures every target once
	Warmup  time.Duration // per target, before the first cycle
}

// pacedBlock is one target's block of one cycle.
type pacedBlock struct {
	Target   int     `json:"target"` // index in pacedSpec.Targets
	Cycle    int     `json:"cycle"`
	Writes   int64   `json:"writes"` // answered 2xx
	Errors   int64   `json:"errors"`
	LatNS    []int64 `json:"lat_ns"` // each answered write's, from its scheduled send to the end of its answer
	LagNS    []int64 `json:"lag_ns"` // each write's, from its scheduled send to when the pacer released it to the writers
	FirstErr string  `json:"first_err,omitempty"`
}

// runPaced measures spec's blocks and prints them, one JSON line each.
//
// The load is open loop: writes are scheduled at exact times, Rate apart,
// whatever the answers do, and a write's latency runs from its scheduled
// time, not from when a writer got to it. A closed or catch-up-free pacer
// sends less while a proxy stalls and so never measures the writes the
// stall delayed (coordinated omission); here they queue for a writer, and
// the wait counts. Writes still under way when a block's schedule ends
// are waited for, and counted in it, before the next block starts, so
// that no block carries another target's tail.
func runPaced(spec pacedSpec) error {
	payload := bytes.Repeat([]byte(`{"field":"value"}`+"\n"), spec.Size/18+1)[:spec.Size]
	clients := make([]*http.Client, len(spec.Targets))
	for i := range clients {
		clients[i] = &http.Client{Transport: &http.Transport{
			MaxIdleConns: spec.Writers, MaxIdleConnsPerHost: spec.Writers, MaxConnsPerHost: spec.Writers,
			DisableCompression: true,
		}}
	}
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	// Warm-up: every target's connections opened and its process's
	// buffers and pools grown before anything is measured.
	for i := range spec.Targets {
		pacedBlockRun(clients[i], spec, i, payload, spec.Warmup)
	}
	for c := range spec.Cycles {
		for k := range spec.Targets {
			i := (k + c) % len(spec.Targets)
			b := pacedBlockRun(clients[i], spec, i, payload, spec.Block)
			b.Cycle = c
			if err := enc.Encode(&b); err != nil {
				return err
			}
		}
	}
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	return out.Flush()
}

// pacedBlockRun offers spec.Rate writes/s to target i for d and returns
// the block once every write of it is answered.
func pacedBlockRun(client *http.Client, spec pacedSpec, i int, payload []byte, d time.Duration) pacedBlock {
	every := time.Duration(float64(time.Second) / spec.Rate)
	n := max(1, int(d/every))
	sends := make(chan time.Time, n)
	b := pacedBlock{Target: i, LatNS: make([]int64, 0, n), LagNS: make([]int64, 0, n)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ls := loadSpec{Target: spec.Targets[i], Size: spec.Size}
	for range spec.Writers {
		wg.Go(func() {
			for at := range sends {
				err := write(client, ls, payload)
				lat := time.Since(at)
				mu.Lock()
				if err != nil {
					b.Errors++
					if b.FirstErr == "" {
						b.FirstErr = err.Error()
					}
				} else {
					b.Writes++
					b.LatNS = append(b.LatNS, int64(lat))
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for k := range n {
		at := start.Add(time.Duration(k) * every)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		// The lag is taken here, not when a writer takes the write: a
		// write waiting for a writer waits on the target's answers to
		// the writes before it, which its latency counts, and the lag
		// is the generator's own lateness, which it does not.
		b.LagNS = append(b.LagNS, int64(time.Since(at)))
		sends <- at // never blocks: room for the whole block
	}
	close(sends)
	wg.Wait()
	return b
}

// readPaced reads the blocks a paced load generator printed.
func readPaced(sc *bufio.Scanner) ([]pacedBlock, error) {
	var bs []pacedBlock
	for sc.Scan() {
		var b pacedBlock
		if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
			return nil, fmt.Errorf("paced load generator's block: %w", err)
		}
		bs = append(bs, b)
	}
	return bs, sc.Err()
}

// quantile is the q-th quantile of xs, which it sorts; 0 if empty. It is
// the nearest rank, the smallest sample with a share q of them at or below
// it: indexing at q·n instead takes one rank higher whenever q·n is whole,
// the largest of 100 samples for a p99 and the upper middle for a p50.
func quantile(xs []int64, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return time.Duration(xs[max(0, min(len(xs)-1, i))])
}
