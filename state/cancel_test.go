package state

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
)

// TestCancelWaitsForInflight: the cancel action starts only once every
// in-flight write of the job has ended, since one already sent cannot be
// recalled and could land after the cancel. Another job's write does not
// hold it.
func TestCancelWaitsForInflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &storeAPI{}
		m := newTestManager(t, Config{HTTPClient: &http.Client{Transport: api}, Defaults: pegasusActions()})
		defer m.Close()
		var releases []func()
		for _, id := range []string{"j", "j", "other"} {
			_, release, err := m.Admit(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
		if _, err := m.Cancel("j", true, ""); err != nil {
			t.Fatal(err)
		}
		step := func(name string, release func(), wantCalls int, want State) {
			t.Helper()
			if release != nil {
				release()
			}
			synctest.Wait()
			if v := mustGet(t, m, "j"); len(api.Calls()) != wantCalls || v.State != want {
				t.Fatalf("%s: %s after calls %q, want %s after %d", name, v.State, api.Calls(), want, wantCalls)
			}
		}
		step("cancelled, two writes in flight", nil, 0, Cancelling)
		step("one write ended", releases[0], 0, Cancelling)
		step("the other job's write ended", releases[2], 0, Cancelling)
		step("the last write ended", releases[1], 2, Cancelled)
	})
}
