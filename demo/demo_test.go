package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestDemo runs `sluice demo` for its shortest duration: real sockets on
// loopback, about ten seconds. The job must end cancelled, with the store's
// cancel and cleanup calls made.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for about ten seconds")
	}
	var out, errs bytes.Buffer
	code := Run(context.Background(), []string{"--duration", "5s", "--plain", "--admin-addr", "127.0.0.1:0"}, &out, &errs)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	for _, want := range []string{"job demo-load: cancelled", "action cancel ", "action cleanup ", "store cancel/cleanup calls received: 2", "/v1/status"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDemoBadFlags(t *testing.T) {
	var out, errs bytes.Buffer
	if code := Run(context.Background(), []string{"--duration", "1s"}, &out, &errs); code != 2 {
		t.Errorf("--duration 1s: exit %d, want 2", code)
	}
	if code := Run(context.Background(), []string{"--nope"}, &out, &errs); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
}
