package browsertest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// gate holds the requests that reach it while it is shut, until it is
// opened again or their client gives up.
type gate struct {
	mu     sync.Mutex
	closed chan struct{} // nil while open
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == nil {
		g.closed = make(chan struct{})
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		close(g.closed)
		g.closed = nil
	}
}

func (g *gate) pass(ctx context.Context) bool {
	g.mu.Lock()
	ch := g.closed
	g.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// TestStatusPageAPIHangs: the page is read through a connection that
// stops answering its API reads (a port-forward to a pod that went away, a
// sidecar that does not answer) without refusing them. The page must say
// within seconds that it cannot read the API, rather than keep showing
// the last numbers as current, and recover by itself once answers come
// again.
func TestStatusPageAPIHangs(t *testing.T) {
	path := chromium(t)
	_, adminURL := sluiceOverStore(t)
	target, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	var g gate
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && !g.pass(r.Context()) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	t.Cleanup(g.open) // before the server closes: it waits for the requests held
	ctx := browser(t, path)

	const banner = `!document.getElementById('banner').hidden`
	do(t, ctx, "loading the page", chromedp.Navigate(front.URL+"/"))
	waitFor(t, ctx, "the controller's phase", `document.getElementById('phase').textContent !== '…'`, 10*time.Second)
	if eval[bool](t, ctx, banner) {
		t.Fatalf("the page says it cannot read the API before it hangs: %q", eval[string](t, ctx, `document.getElementById('banner').textContent`))
	}

	g.shut()
	waitFor(t, ctx, "the page to say that the API does not answer", banner, 20*time.Second)
	if msg := eval[string](t, ctx, `document.getElementById('banner').textContent`); !strings.Contains(msg, "did not answer") {
		t.Errorf("the banner reads %q, want it to say the API did not answer", msg)
	}

	g.open()
	waitFor(t, ctx, "the page to recover", `document.getElementById('banner').hidden`, 15*time.Second)
	before := eval[string](t, ctx, `document.getElementById('uptime').textContent`)
	waitFor(t, ctx, "a refresh after the recovery", `document.getElementById('uptime').textContent !== `+jsString(before), 10*time.Second)
}
