package tracelog

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestTimedFromStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b strings.Builder
		log := New(&b, time.Now())
		time.Sleep(1500 * time.Millisecond)
		log.Debug("limit changed", "limit", "rate")
		if got, want := b.String(), "t=1.5s level=DEBUG msg=\"limit changed\" limit=rate\n"; got != want {
			t.Errorf("logged %q, want %q", got, want)
		}
	})
}
