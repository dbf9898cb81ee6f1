package sidecar

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/sidecar/proxy"

	"github.com/sluice-dev/sluice/state"
)

// fuzzServer builds a Server for a fuzz target: in-memory job store, loops
// running (stopped by the target's cleanup), and, when store is not nil, an
// in-memory upstream.
func fuzzServer(f *testing.F, store http.Handler, env ...string) *Server {
	f.Helper()
	environ := append([]string{"SLUICE_UPSTREAM_URL=http://store.test"}, env...)
	cfg, _, err := LoadConfig(environ)
	if err != nil {
		f.Fatal(err)
	}
	opts := Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}}
	if store != nil {
		opts.Transport = memTransport{store}
	}
	s, err := NewServer(cfg, opts)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.StartLoops())
	return s
}

// checkJSONError fails unless rec is sluice's JSON error body.
func checkJSONError(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	var e apierror.Body
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: %d with Content-Type %q, want a JSON error; body %q", what, rec.Code, ct, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" || e.Message == "" {
		t.Fatalf("%s: %d body %q is not sluice's JSON error: %v", what, rec.Code, rec.Body, err)
	}
}

// FuzzAdminJobsBody: whatever the body of POST /v1/jobs, the admin API
// never panics and never answers 5xx; it creates the job it was asked for
// (201, echoing the id) or refuses with a 4xx JSON error.
func FuzzAdminJobsBody(f *testing.F) {
	for _, s := range []string{
		`{"id":"a"}`,
		`{"id":"b","stall_after":"90s","cancel_grace":"1m","deadline":"1h","auto_cancel":false}`,
		`{"id":"c","cancel":{"url":"http://store/_tasks/${JOB}/_cancel","method":"POST","headers":{"X-A":"${JOB}"},"body":"{\"job\":\"${JOB}\"}"}}`,
		`{"id":"d","cleanup":{"command":["pegasus_shell","clear_bulk_load","${JOB}"]},"labels":{"team":"x"}}`,
		`{"id":"e","cancel":{"url":"http://${JOB}/x"}}`,
		`{"id":"f","cancel":{"url":"http://s/x","headers":{"X":"a\r\nB: c"}}}`,
		`{"id":"../x"}`, `{"id":"\u0000"}`, `{"id":1}`, `[]`, `null`, `{"id":"g"} trailing`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	s := fuzzServer(f, nil)
	h := s.AdminHandler()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(string(body)))
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusCreated:
			var in, out struct{ ID string }
			_ = json.Unmarshal(body, &in)
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.ID != in.ID || !state.ValidJobID(out.ID) {
				t.Fatalf("201 for %q: answer %q", body, rec.Body)
			}
		case rec.Code >= 400 && rec.Code < 500:
			checkJSONError(t, "POST /v1/jobs "+string(body), rec)
		default:
			t.Fatalf("POST /v1/jobs %q: %d %q", body, rec.Code, rec.Body)
		}
	})
}

// FuzzAdminRequest: any method, path and body on the admin API. No panic;
// every answer is 2xx, or 3xx only from … nothing: the admin API has no
// redirects, so a path is served or refused with a 4xx JSON error (405
// with Allow). Only /readyz and /healthz may say 503 (a server that is not
// serving is not ready), and only /metrics and the status page (/ and its
// files under /ui/) answer in anything but JSON.
func FuzzAdminRequest(f *testing.F) {
	for _, s := range []struct{ method, path, body string }{
		{"GET", "/v1/status", ""}, {"GET", "/v1/jobs", ""}, {"GET", "/v1/jobs/a", ""}, {"GET", "/metrics", ""},
		{"POST", "/v1/jobs/a/progress", `{"records":1,"checkpoint":{"x":1}}`},
		{"POST", "/v1/jobs/a/total", `{"records":1000}`},
		{"POST", "/v1/jobs/a/cancel", `{"force":true,"reason":"x"}`}, {"POST", "/v1/jobs/a/complete", ""},
		{"DELETE", "/v1/jobs", ""}, {"GET", "/nope", ""}, {"GET", "/v1/jobs/%00", ""}, {"PUT", "/v1/status", "x"},
		{"GET", "/", ""}, {"GET", "/ui/app.js", ""}, {"GET", "/v1/history?after=1", ""},
	} {
		f.Add(s.method, s.path, s.body)
	}
	s := fuzzServer(f, nil)
	h := s.AdminHandler()
	var mu sync.Mutex // /quitquitquit: the server's stop is idempotent, the handler stays usable
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !state.ValidMethod(method) || !strings.HasPrefix(path, "/") || strings.ContainsFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }) {
			return // not a request net/http would hand to a handler
		}
		u, err := url.ParseRequestURI(path)
		if err != nil || u.Host != "" {
			return
		}
		req := httptest.NewRequest(method, "http://sluice"+path, strings.NewReader(body))
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		mu.Lock()
		h.ServeHTTP(rec, req)
		mu.Unlock()
		what := method + " " + path
		switch p := req.URL.Path; {
		case rec.Code >= 200 && rec.Code < 300:
			page := p == "/" || strings.HasPrefix(p, "/ui/")
			if ct := rec.Header().Get("Content-Type"); p != "/metrics" && !page && ct != "application/json" {
				t.Fatalf("%s: %d with Content-Type %q", what, rec.Code, ct)
			}
		case rec.Code == http.StatusServiceUnavailable && (p == "/readyz" || p == "/healthz"):
		case rec.Code >= 400 && rec.Code < 500:
			checkJSONError(t, what, rec)
			if rec.Code == http.StatusMethodNotAllowed && rec.Header().Get("Allow") == "" {
				t.Fatalf("%s: 405 without Allow", what)
			}
		default:
			t.Fatalf("%s: %d %q (Location %q)", what, rec.Code, rec.Body, rec.Header().Get("Location"))
		}
	})
}

// FuzzProxyRequest: a loader request with any X-Sluice-Job, path, method
// and one extra header. No panic; an invalid job id is refused with 400
// JSON and never forwarded; what is forwarded never carries an X-Sluice-*
// header, goes to the upstream's host, and the loader gets the store's
// answer or one of sluice's own JSON refusals.
func FuzzProxyRequest(f *testing.F) {
	for _, s := range []struct{ job, method, path, hname, hval string }{
		{"load-1", "PUT", "/idx/_doc/1", "Content-Type", "application/json"},
		{"", "POST", "/_bulk", "X-Sluice-Secret", "x"},
		{"../../etc", "GET", "/", "Connection", "X-Sluice-Job"},
		{"a b", "PUT", "/x?y=z", "Host", "evil.example"},
		{"ok", "DELETE", "/%2e%2e/admin", "X-Forwarded-For", "1.2.3.4"},
		{"ok", "PUT", "/x", "Te", "trailers"},
	} {
		f.Add(s.job, s.method, s.path, s.hname, s.hval)
	}
	type forward struct {
		host   string
		header http.Header
	}
	var mu sync.Mutex
	var seen []forward
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		host := r.Host
		if host == "" {
			host = r.URL.Host
		}
		mu.Lock()
		seen = append(seen, forward{host, r.Header.Clone()})
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	s := fuzzServer(f, upstream, "SLUICE_MAX_JOBS=100000", "SLUICE_INITIAL_RATE=100000", "SLUICE_RETRY_MAX=0")
	h := s.ProxyHandler()
	f.Fuzz(func(t *testing.T, job, method, path, hname, hval string) {
		if !state.ValidMethod(method) || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\x00") {
			return
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return
		}
		req := httptest.NewRequest(method, "http://sluice"+path, strings.NewReader("row"))
		if job != "" {
			req.Header.Set(proxy.HeaderJob, job)
		}
		if hname != "" && validHeaderName(hname) && validHeaderValue(hval) {
			req.Header.Add(hname, hval)
		}
		mu.Lock()
		seen = seen[:0]
		mu.Unlock()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		mu.Lock()
		forwarded := append([]forward(nil), seen...)
		mu.Unlock()
		jobID := req.Header.Get(proxy.HeaderJob)
		if jobID != "" && !state.ValidJobID(jobID) {
			if rec.Code != http.StatusBadRequest || len(forwarded) != 0 {
				t.Fatalf("job %q: %d, forwarded %d times; want 400 and never forwarded", jobID, rec.Code, len(forwarded))
			}
			checkJSONError(t, "job "+jobID, rec)
			return
		}
		for _, fw := range forwarded {
			for k := range fw.header {
				if strings.HasPrefix(http.CanonicalHeaderKey(k), "X-Sluice-") {
					t.Fatalf("forwarded with %s (job %q, extra header %q)", k, jobID, hname)
				}
			}
			if fw.host != "store.test" {
				t.Fatalf("forwarded to host %q (extra header %q: %q)", fw.host, hname, hval)
			}
		}
		switch {
		case rec.Code == http.StatusOK && len(forwarded) > 0:
		case rec.Code >= 400:
			checkJSONError(t, method+" "+path+" job "+jobID, rec)
		default:
			t.Fatalf("%s %s job %q: %d after %d forwards", method, path, jobID, rec.Code, len(forwarded))
		}
	})
}

func validHeaderName(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

func validHeaderValue(s string) bool { return !strings.ContainsAny(s, "\r\n\x00") }

// FuzzParseArgv: a command variable never panics the parser; what it
// accepts has a program name, and the JSON form survives a round trip.
func FuzzParseArgv(f *testing.F) {
	for _, s := range []string{`["pegasus_shell","cancel_bulk_load","-f","${JOB}"]`, `rm -rf /x/${JOB}`, `[""]`, `[]`, `["a",1]`, " \t", `["a\u0000b"]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		argv, err := ParseArgv(s)
		if err != nil {
			return
		}
		if len(argv) == 0 || argv[0] == "" {
			t.Fatalf("ParseArgv(%q) = %q: no program", s, argv)
		}
		for _, a := range argv {
			if !utf8.ValidString(a) {
				return // JSON strings are UTF-8: no JSON form to compare with
			}
		}
		b, _ := json.Marshal(argv)
		back, err := ParseArgv(string(b))
		if err != nil || len(back) != len(argv) {
			t.Fatalf("ParseArgv(%q) = %q, but its JSON %s parses to %q, %v", s, argv, b, back, err)
		}
		for i := range argv {
			if back[i] != argv[i] {
				t.Fatalf("round trip of %q: %q", argv, back)
			}
		}
	})
}

// FuzzByteSize: sizes parse without panicking, are never negative, and
// print back to themselves.
func FuzzByteSize(f *testing.F) {
	for _, s := range []string{"8MiB", "512KiB", "1GB", "0", "1.5KiB", " 3 MiB ", "-1", "1e30", "4611686018427387904"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b ByteSize
		if b.UnmarshalText([]byte(s)) != nil {
			return
		}
		if b < 0 {
			t.Fatalf("%q parsed to %d", s, b)
		}
		var back ByteSize
		if err := back.UnmarshalText([]byte(b.String())); err != nil || back != b {
			t.Fatalf("%q → %d → %q → %d, %v", s, b, b.String(), back, err)
		}
	})
}

// FuzzEffectiveRedacts: whatever the admin token and the passwords in
// URL variables, `sluice check-config` (Config.Effective) and the
// configuration errors never print them.
func FuzzEffectiveRedacts(f *testing.F) {
	f.Add("tok", "pw", "http")
	f.Add("a=b", "p%40ss", "https")
	f.Fuzz(func(t *testing.T, token, password, scheme string) {
		const mark = "S3CR3T-4c1f9e7a2d"
		env := []string{
			"SLUICE_ADMIN_TOKEN=" + mark + token,
			"SLUICE_CANCEL_URL=" + scheme + "://ops:" + mark + password + "@store/_tasks/${JOB}/_cancel",
			"SLUICE_PROGRESS_PROBE_URL=" + scheme + "://ops:" + mark + password + "@store/p",
		}
		// An upstream URL with a password is refused (it would never be
		// sent), and its error redacts it; one without lets the others
		// reach Effective.
		for _, upstream := range []string{"http://u:" + mark + password + "@store:9200", "http://store:9200"} {
			cfg, _, err := LoadConfig(append([]string{"SLUICE_UPSTREAM_URL=" + upstream}, env...))
			var out strings.Builder
			if err != nil {
				out.WriteString(err.Error())
			} else {
				for _, kv := range cfg.Effective() {
					out.WriteString(kv[0] + "=" + kv[1] + "\n")
				}
			}
			if strings.Contains(out.String(), mark) {
				t.Fatalf("a secret was printed:\n%s", out.String())
			}
		}
	})
}
