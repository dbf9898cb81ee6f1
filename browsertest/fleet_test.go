package browsertest

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluice-dev/sluice/internal/redistest"
)

// TestStatusPageFleet: a sluice in fleet mode on a real redis-server shows
// its Fleet section (hidden without fleet mode): leased, the configured
// budget, and itself in the member list; when Redis stops answering the
// section says the sidecar is degraded and off its lease; when it answers
// again, leased again. Skipped without a browser or redis-server (failed
// without redis-server under .ci/browser.sh, which sets SLUICE_REQUIRE_REDIS).
func TestStatusPageFleet(t *testing.T) {
	path := chromium(t)
	rs := redistest.Start(t)
	storeSrv := httptest.NewServer(&store{})
	t.Cleanup(storeSrv.Close)
	_, adminAddr := serveSluice(t,
		"SLUICE_UPSTREAM_URL="+storeSrv.URL,
		"SLUICE_FLEET_REDIS_URL="+rs.URL(),
		"SLUICE_FLEET_RESOURCE=s3:bucket/prefix",
		"SLUICE_FLEET_CAPACITY=900",
	)
	t.Cleanup(rs.Resume) // before sluice stops: a stopped Redis must not hold up its leave

	ctx := browser(t, path)
	var cons console
	cons.listen(ctx)
	do(t, ctx, "loading the page", chromedp.Navigate("http://"+adminAddr+"/"))
	const (
		mode    = `document.getElementById('fleet-mode').textContent`
		members = `document.querySelectorAll('#fleet-table tbody tr')`
	)
	waitFor(t, ctx, "the Fleet section, leased", `!document.getElementById('fleet').hidden && `+mode+` === 'leased'`, 10*time.Second)
	if b := eval[string](t, ctx, `document.getElementById('fleet-budget').textContent`); !strings.Contains(b, "900") || !strings.Contains(b, "configured") {
		t.Errorf("budget reads %q, want the configured 900", b)
	}
	// The member list comes with a refresh after the status was read.
	waitFor(t, ctx, "the member list", members+`.length === 1`, 10*time.Second)
	if m := eval[string](t, ctx, members+`[0].textContent`); !strings.Contains(m, "(this sidecar)") {
		t.Errorf("the member row reads %q, want this sidecar marked", m)
	}
	screenshot(t, ctx, "sluice-status-page-fleet.png")

	rs.Pause() // SIGSTOP: calls time out
	waitFor(t, ctx, "degraded", mode+`.includes('degraded')`, 10*time.Second)
	waitFor(t, ctx, "off the lease", mode+`.startsWith('safe_share')`, 10*time.Second)
	screenshot(t, ctx, "sluice-status-page-fleet-degraded.png")
	rs.Resume()
	waitFor(t, ctx, "leased again", mode+` === 'leased'`, 10*time.Second)
	if errs := cons.errors(nil); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}
