package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/state"
)

// TestPageServed: GET / is the page, its files come with their types and
// the strict policy, and unknown files are the API's JSON 404.
func TestPageServed(t *testing.T) {
	api := New(Config{}, Deps{})
	mux := http.NewServeMux()
	api.pageRoutes(mux)
	get := func(target string, header ...string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest("GET", target, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec
	}
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `<script src="ui/app.js" defer></script>`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "v1/history"},
		{"/ui/style.css", "text/css; charset=utf-8", ".throttle-band"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	} {
		rec := get(tc.path)
		h := rec.Header()
		if rec.Code != 200 || h.Get("Content-Type") != tc.ctype || !strings.Contains(rec.Body.String(), tc.contains) {
			t.Errorf("GET %s: %d %q, want 200 %q containing %q", tc.path, rec.Code, h.Get("Content-Type"), tc.ctype, tc.contains)
		}
		if h.Get("Content-Security-Policy") != pageCSP || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("ETag") == "" {
			t.Errorf("GET %s: headers %v, want the page's policy, nosniff and an ETag", tc.path, h)
		}
		if again := get(tc.path, "If-None-Match", h.Get("ETag")); again.Code != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", tc.path, again.Code)
		}
	}
	if rec := get("/ui/nope.js"); rec.Code != 404 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Errorf("GET /ui/nope.js: %d %q, want a JSON 404", rec.Code, rec.Header().Get("Content-Type"))
	}
	if rec := get("/ui/index.html"); rec.Code != 404 {
		t.Errorf("GET /ui/index.html: %d, want 404 (the page has one address)", rec.Code)
	}
	// A Range is ignored: one that does not fit got net/http's plain-text
	// 416, where every admin error is JSON.
	for _, r := range []string{"bytes=999999-", "bytes=0-9"} {
		if rec := get("/", "Range", r); rec.Code != 200 || !strings.Contains(rec.Body.String(), "<script") {
			t.Errorf("GET / with Range: %s: %d %q, want the whole page", r, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
}

// TestPageKeepsItsPolicy: the strict policy holds only while the page has
// no inline script, style or handler, and pulls nothing from elsewhere.
func TestPageKeepsItsPolicy(t *testing.T) {
	html := string(pageAssets["index.html"].body)
	for _, tag := range regexp.MustCompile(`<script[^>]*>[^<]*`).FindAllString(html, -1) {
		if !regexp.MustCompile(`^<script src="ui/[a-z]+\.js" defer>$`).MatchString(tag) {
			t.Errorf("index.html has %q: scripts are files from ui/, never inline", tag)
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`(?:src|href)="(?:https?:)?//`),
	} {
		if m := bad.FindString(html); m != "" {
			t.Errorf("index.html has %q, which the page's policy refuses or which reaches off the sidecar", m)
		}
	}
	for _, ref := range regexp.MustCompile(`(?:src|href)="ui/([^"]+)"`).FindAllStringSubmatch(html, -1) {
		if _, ok := pageAssets[ref[1]]; !ok {
			t.Errorf("index.html refers to ui/%s, which is not embedded", ref[1])
		}
	}
	js := strings.ReplaceAll(string(pageAssets["app.js"].body), `"http://www.w3.org/2000/svg"`, "SVGNS")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write", `setAttribute("style"`, "http://", "https://"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s: values go in as text, and the policy refuses eval, inline style and other origins", bad)
		}
	}
	total := 0
	for _, a := range pageAssets {
		total += len(a.body)
	}
	if total > 64<<10 {
		t.Errorf("the page's files weigh %d bytes; keep them small", total)
	}
}

// TestPageInfo: the page offers an action exactly when its route exists,
// and knows whether actions need the token or a loopback caller.
func TestPageInfo(t *testing.T) {
	f := func(token, remote string, routes []string, want PageInfo) {
		t.Helper()
		mux := http.NewServeMux()
		for _, r := range routes {
			mux.HandleFunc(r, func(http.ResponseWriter, *http.Request) {})
		}
		mux.HandleFunc("/", func(http.ResponseWriter, *http.Request) {})
		api := New(Config{Token: token}, Deps{})
		api.pageRoutes(mux)
		req := httptest.NewRequest("GET", "/ui/page.json", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		var got PageInfo
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
		}
		if got.TokenRequired != want.TokenRequired || got.Loopback != want.Loopback || len(got.Actions) != len(want.Actions) {
			t.Fatalf("page.json = %+v, want %+v", got, want)
		}
		for a, ok := range want.Actions {
			if got.Actions[a] != ok {
				t.Errorf("action %s offered = %v, want %v", a, got.Actions[a], ok)
			}
		}
	}
	f("", "127.0.0.1:5000", []string{"POST /v1/jobs/{id}/cancel", "POST /v1/jobs/{id}/complete", "GET /v1/jobs/{id}"},
		PageInfo{Actions: map[string]bool{"cancel": true, "complete": true, "reopen": false}, Loopback: true})
	f("tok", "10.0.0.8:5000", []string{"POST /v1/jobs/{id}/cancel", "POST /v1/jobs/{id}/reopen"},
		PageInfo{Actions: map[string]bool{"cancel": true, "complete": false, "reopen": true}, TokenRequired: true})
}

// TestPageKnowsTheStates: the page offers reopen outside the states a job
// writes in and cancel and complete outside the terminal ones, from two
// lists of its own; they must name the job manager's states exactly, or a
// button is offered that the API can only refuse.
func TestPageKnowsTheStates(t *testing.T) {
	js := string(pageAssets["app.js"].body)
	set := func(name string) map[string]bool {
		m := regexp.MustCompile(`const ` + name + ` = new Set\(\[([^\]]*)\]\)`).FindStringSubmatch(js)
		if m == nil {
			t.Fatalf("app.js has no %s set", name)
		}
		out := map[string]bool{}
		for _, q := range regexp.MustCompile(`"([a-z_]+)"`).FindAllStringSubmatch(m[1], -1) {
			out[q[1]] = true
		}
		return out
	}
	live, terminal := set("LIVE"), set("TERMINAL")
	for _, st := range state.States() {
		if got, want := live[st.String()], st.Accepting() || st == state.Cancelling || st == state.Cleaning; got != want {
			t.Errorf("app.js LIVE has %s: %v, want %v", st, got, want)
		}
		if got, want := terminal[st.String()], st.Terminal(); got != want {
			t.Errorf("app.js TERMINAL has %s: %v, want %v", st, got, want)
		}
	}
}
