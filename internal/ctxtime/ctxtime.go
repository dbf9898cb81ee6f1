// Package ctxtime is the one way sluice's servers, simulators and load
// loops wait a duration: giving up as soon as their context ends, so that
// a cancelled load or a closing server never waits out a timer.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx is done, whichever comes first. It reports
// whether the whole of d passed with ctx still live, so that a loop can
// write `if !ctxtime.Sleep(ctx, d) { return }`. A d <= 0 does not wait and
// reports whether ctx is still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	return SleepOr(ctx, nil, d)
}

// SleepOr is Sleep that also gives up when stop is closed: for a server
// whose Close must release the requests it holds, without deriving a
// context per request. A nil stop never fires.
func SleepOr(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}
