package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// The errors of an attempt that no store answered are one kind,
// unreachable, each with its reason; a connection that breaks after the
// store's status line is a broken answer, and no answer in time a timeout.
func TestClassifyErrorUnreachable(t *testing.T) {
	p := &Proxy{}
	dial := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	read := func(errno syscall.Errno) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
	}
	f := func(name string, err error, answered bool, kind classify.Kind, reason string) {
		t.Helper()
		got := p.classifyError(context.Background(), err, answered)
		if got.Kind != kind || got.Reason != reason {
			t.Errorf("%s: %v %q, want %v %q", name, got.Kind, got.Reason, kind, reason)
		}
	}
	f("refused", dial(syscall.ECONNREFUSED), false, classify.Unreachable, reasonConnectionRefused)
	f("reset before the answer", read(syscall.ECONNRESET), false, classify.Unreachable, reasonConnectionReset)
	f("broken pipe while sending", fmt.Errorf("write: %w", syscall.EPIPE), false, classify.Unreachable, reasonConnectionReset)
	f("closed before the answer", io.EOF, false, classify.Unreachable, reasonConnectionReset)
	f("closed under the write", fmt.Errorf("readfrom: %w", net.ErrClosed), false, classify.Unreachable, reasonConnectionReset)
	f("no such host", &net.DNSError{Err: "no such host", Name: "store.invalid", IsNotFound: true}, false, classify.Unreachable, reasonDNS)
	f("resolver timed out", &net.DNSError{Err: "i/o timeout", Name: "store", IsTimeout: true}, false, classify.Unreachable, reasonDNS)
	f("reset in the answer", read(syscall.ECONNRESET), true, classify.ServerError, reasonTransportError)
	f("cut short in the answer", io.ErrUnexpectedEOF, true, classify.ServerError, reasonTransportError)
	f("no answer in time", context.DeadlineExceeded, false, classify.Timeout, reasonTimeout)
	f("something else", errors.New("malformed HTTP response"), false, classify.ServerError, reasonTransportError)

	gone, leave := context.WithCancel(context.Background())
	leave()
	if got := p.classifyError(gone, dial(syscall.ECONNREFUSED), false); got.Reason != reasonCancelled {
		t.Errorf("refused after the loader left: %q, want %q: nothing is learned", got.Reason, reasonCancelled)
	}
}

// A write that stops on an unreachable store (retries spent, a body that
// streamed, the budget spent) is pushed back with the limiter's wait, and
// counted as such; its cause is the attempt's reason.
func TestUnreachableIsPushedBack(t *testing.T) {
	lim, err := limiter.New(limiter.Config{InitialRate: 10, MinRate: 1, MaxRate: 100, MaxConcurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	permit, err := lim.TryAcquire(1)
	if err != nil {
		t.Fatal(err)
	}
	permit.Done(limiter.Sample{Outcome: limiter.Unreachable, Reason: reasonConnectionRefused})
	budget, err := limiter.NewRetryBudget(limiter.RetryBudgetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{retryMax: 1, lim: lim, retryBudget: budget, m: newMetrics(prometheus.NewRegistry())}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	last := classify.Result{Kind: classify.Unreachable, Reason: reasonConnectionRefused, Items: -1}
	f := func(name string, ex exchange) {
		t.Helper()
		ex.loader, ex.cost, ex.last = context.Background(), 1, last
		retry, _, stop := p.retryPolicy(context.Background(), &ex, nil, refused)
		var pb *pushbackError
		if retry || !errors.As(stop, &pb) || pb.reason != reasonUnreachable || pb.cause != reasonConnectionRefused {
			t.Fatalf("%s: retry %v, stop %v, want a pushback for an unreachable store", name, retry, stop)
		}
		if pb.wait < limiter.DefaultProbeMin || pb.wait > time.Second {
			t.Errorf("%s: wait %v, want until the next probe, within [%v, 1s]", name, pb.wait, limiter.DefaultProbeMin)
		}
	}
	f("retries spent", exchange{retryable: true, attempts: 2})
	f("streamed once", exchange{attempts: 1})
	if got := testutil.ToFloat64(p.m.rejected.WithLabelValues(reasonUnreachable)); got != 2 {
		t.Errorf("sluice_proxy_backpressure_total{reason=unreachable} = %v, want 2", got)
	}
	// While retries are left, the write is sent again: its attempt waits
	// for the limiter's probe.
	ex := exchange{retryable: true, attempts: 1, loader: context.Background(), cost: 1, last: last}
	if retry, _, stop := p.retryPolicy(context.Background(), &ex, nil, refused); !retry || stop != nil {
		t.Errorf("a retry left: retry %v, stop %v; want a retry", retry, stop)
	}
}
