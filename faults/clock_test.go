package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// TestClockBeforeEpoch: a host whose clock is wrong enough to read before
// 1970 (a dead RTC with a bad offset) must not make the job manager panic.
// A panic there is worse than it looks: it happens with the manager's lock
// held, so every later write and admin call would wait for ever. The
// manager is driven through its public API; a panic is recovered and
// reported instead of wedging the test.
func TestClockBeforeEpoch(t *testing.T) {
	for _, at := range []time.Time{
		time.Unix(0, 0), // the epoch itself
		time.Date(1969, 12, 31, 23, 59, 30, 0, time.UTC), // 30 s before
		time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		t.Run(at.Format(time.DateOnly), func(t *testing.T) {
			clk := at
			m, err := state.NewManager(state.Config{Now: func() time.Time { return clk }})
			if err != nil {
				t.Fatal(err)
			}
			step := func(name string, fn func()) (failed bool) {
				t.Helper()
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("%s at %v panicked (with the manager's lock held): %v", name, clk, r)
						failed = true
					}
				}()
				fn()
				return false
			}
			if step("admit and acknowledge a write", func() {
				_, release, err := m.Admit(context.Background(), "j")
				if err != nil {
					panic(fmt.Sprint("admit: ", err))
				}
				m.Observe("j", state.Observation{Kind: state.ObsOK, Bytes: 1, Items: -1})
				release()
			}) {
				return // the manager is wedged: do not touch it again
			}
			if step("report progress", func() {
				if _, err := m.ReportProgress("j", state.Progress{Records: 5}); err != nil {
					panic(fmt.Sprint("progress: ", err))
				}
			}) {
				return
			}
			if step("tick and list", func() {
				clk = clk.Add(time.Second)
				m.Tick(clk)
				_ = m.List()
			}) {
				return
			}
			if err := m.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}
