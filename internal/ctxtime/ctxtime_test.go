package ctxtime

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !Sleep(t.Context(), time.Second) || time.Since(start) != time.Second {
			t.Errorf("Sleep(1s) = false or waited %v", time.Since(start))
		}
		if !Sleep(t.Context(), 0) || !Sleep(t.Context(), -time.Second) {
			t.Error("Sleep(<= 0) with a live context = false")
		}
		if time.Since(start) != time.Second {
			t.Errorf("Sleep(<= 0) waited")
		}

		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		start = time.Now()
		if Sleep(ctx, time.Hour) || time.Since(start) != 300*time.Millisecond {
			t.Errorf("Sleep past the context's end = true or waited %v", time.Since(start))
		}
		if Sleep(ctx, 0) {
			t.Error("Sleep(0) with an ended context = true")
		}
	})
}

func TestSleepOr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stop := make(chan struct{})
		go func() {
			time.Sleep(200 * time.Millisecond)
			close(stop)
		}()
		start := time.Now()
		if SleepOr(t.Context(), stop, time.Hour) || time.Since(start) != 200*time.Millisecond {
			t.Errorf("SleepOr past stop = true or waited %v", time.Since(start))
		}
		if !SleepOr(t.Context(), nil, time.Second) {
			t.Error("SleepOr with a nil stop = false")
		}
	})
}
