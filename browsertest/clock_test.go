package browsertest

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// skewClock makes the tab's clock (Date.now() and new Date()) read skew
// off the real one in every document it loads from now on, as a laptop's
// clock that is off the sidecar's does.
func skewClock(t *testing.T, ctx context.Context, skew time.Duration) {
	t.Helper()
	src := fmt.Sprintf(`(() => {
  const Real = Date, realNow = Real.now, skew = %d;
  globalThis.Date = class extends Real {
    constructor(...a) { if (a.length) super(...a); else super(realNow() + skew); }
    static now() { return realNow() + skew; }
  };
})();`, skew.Milliseconds())
	if _, err := chromedp.Call(ctx, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: src}); err != nil {
		t.Fatalf("skewing the tab's clock: %v", err)
	}
}

// TestStatusPageBrowserClockAhead: an operator's browser whose clock is
// an hour ahead of the sidecar's still sees a job registered seconds ago
// as seconds old, and the last minutes charted: ages and the chart's time
// axis count from the sidecar's clock, not the browser's.
func TestStatusPageBrowserClockAhead(t *testing.T) {
	path := chromium(t)
	_, adminURL := sluiceOverStore(t)
	register(t, adminURL, `{"id":"alpha"}`)
	ctx := browser(t, path)
	skewClock(t, ctx, time.Hour)

	do(t, ctx, "loading the page", chromedp.Navigate(adminURL+"/"))
	if skew := eval[float64](t, ctx, `Date.now() - performance.timeOrigin - performance.now()`); skew < 3500e3 {
		t.Fatalf("the tab's clock is %.0f ms off, want an hour ahead", skew)
	}
	const since = `document.querySelector('#jobs-table tr[data-job="alpha"]')?.children[2]?.textContent`
	waitFor(t, ctx, "the job", since+` !== undefined`, 10*time.Second)
	got := eval[string](t, ctx, since)
	if m := regexp.MustCompile(`^(\d+)s ago$`).FindStringSubmatch(got); m == nil {
		t.Errorf("a job registered seconds ago is shown since %q, want seconds ago", got)
	} else if n, _ := strconv.Atoi(m[1]); n > 30 {
		t.Errorf("a job registered seconds ago is shown since %q", got)
	}
	waitFor(t, ctx, "a few points", chartPoints+` >= 3`, 10*time.Second)
	// The points are drawn once the chart draws them after they came.
	waitFor(t, ctx, "the points charted", `document.querySelectorAll('#chart-writes path.line').length > 0`, 5*time.Second)
}
