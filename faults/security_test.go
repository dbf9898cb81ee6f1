package faults

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sidecar"
)

func secret(t *testing.T, name string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return name + "-" + hex.EncodeToString(b)
}

// adminAt serves sluice's admin handler for one request with a chosen
// remote address.
func adminAt(h http.Handler, method, path, remote, authz, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	req.Header.Set("X-Forwarded-For", "127.0.0.1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestAdminAuthorization: mutating admin endpoints take a valid bearer
// token when SLUICE_ADMIN_TOKEN is set (from anywhere), and only loopback
// callers when it is not; X-Forwarded-For is not trusted; every refusal is
// a JSON 401 (with WWW-Authenticate) or 403, and changes nothing.
// /quitquitquit is loopback only, token or not.
func TestAdminAuthorization(t *testing.T) {
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	token := secret(t, "admin")
	withToken := startInproc(t, "SLUICE_UPSTREAM_URL="+store.URL(), "SLUICE_ADMIN_TOKEN="+token)
	noToken := startInproc(t, "SLUICE_UPSTREAM_URL="+store.URL())
	const remote, local, local6 = "192.0.2.7:4000", "127.0.0.1:4000", "[::1]:4000"
	mutations := []struct{ method, path, body string }{
		{"POST", "/v1/jobs", `{"id":"j-%d"}`},
		{"POST", "/v1/jobs/seed/progress", `{"records":%d}`},
		{"POST", "/v1/jobs/seed/total", `{"items":%d}`},
		{"POST", "/v1/jobs/seed/complete", ``},
		{"POST", "/v1/jobs/seed/cancel", `{"reason":"r%d"}`},
	}
	for _, srv := range []*inproc{withToken, noToken} {
		if rec := adminAt(srv.srv.AdminHandler(), "POST", "/v1/jobs", local, "Bearer "+token, `{"id":"seed"}`); rec.Code != 201 {
			t.Fatalf("register seed: %d %s", rec.Code, rec.Body)
		}
	}
	n := 0
	f := func(name string, srv *inproc, remoteAddr, authz string, want int) {
		t.Helper()
		for _, m := range mutations {
			n++
			body := m.body
			if strings.Contains(body, "%d") {
				body = fmt.Sprintf(body, n)
			}
			before := status(t, srv.adminURL).Jobs
			rec := adminAt(srv.srv.AdminHandler(), m.method, m.path, remoteAddr, authz, body)
			if want >= 400 {
				var e apiErr
				if rec.Code != want || rec.Header().Get("Content-Type") != "application/json" || jsonErr(rec.Body.Bytes(), &e) != nil {
					t.Errorf("%s: %s %s: %d %q, want %d JSON", name, m.method, m.path, rec.Code, rec.Body, want)
				}
				if want == 401 && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: 401 without WWW-Authenticate: Bearer", name)
				}
				if after := status(t, srv.adminURL).Jobs; fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("%s: refused, yet jobs changed: %v → %v", name, before, after)
				}
			} else if rec.Code >= 400 && rec.Code != 409 {
				t.Errorf("%s: %s %s: %d %s, want it allowed", name, m.method, m.path, rec.Code, rec.Body)
			}
		}
	}
	f("token set, none given, loopback", withToken, local, "", 401)
	f("token set, none given, remote", withToken, remote, "", 401)
	f("token set, wrong token", withToken, local, "Bearer wrong", 401)
	f("token set, token as prefix", withToken, local, "Bearer "+token[:len(token)-1], 401)
	f("token set, token plus a byte", withToken, local, "Bearer "+token+"x", 401)
	f("token set, token with a space", withToken, local, "Bearer "+token+" ", 401)
	f("token set, Basic scheme", withToken, local, "Basic "+base64.StdEncoding.EncodeToString([]byte("u:"+token)), 401)
	f("token set, no scheme", withToken, local, token, 401)
	f("token set, valid token, remote", withToken, remote, "Bearer "+token, 201)
	f("token set, valid token, loopback v6", withToken, local6, "Bearer "+token, 201)
	f("no token, remote (X-Forwarded-For: 127.0.0.1 ignored)", noToken, remote, "", 403)
	f("no token, remote with a made-up token", noToken, remote, "Bearer "+token, 403)
	f("no token, loopback", noToken, local, "", 201)
	f("no token, loopback v6", noToken, local6, "", 201)

	// Reads stay open (the status carries no secret; see TestNoSecretsEmitted).
	for _, p := range []string{"/", "/v1/status", "/v1/jobs", "/v1/history", "/metrics", "/healthz", "/readyz"} {
		if rec := adminAt(withToken.srv.AdminHandler(), "GET", p, remote, "", ""); rec.Code != 200 {
			t.Errorf("GET %s from a remote caller: %d", p, rec.Code)
		}
	}

	// /quitquitquit: loopback only, even with the token.
	for _, tc := range []struct {
		remote, authz string
	}{{remote, "Bearer " + token}, {remote, ""}, {"[::ffff:192.0.2.7]:1", ""}, {"10.0.0.1:1", ""}} {
		rec := adminAt(withToken.srv.AdminHandler(), "POST", "/quitquitquit", tc.remote, tc.authz, "")
		if rec.Code != 403 || jsonErr(rec.Body.Bytes(), &apiErr{}) != nil {
			t.Errorf("/quitquitquit from %s (%q): %d %s, want 403 JSON", tc.remote, tc.authz, rec.Code, rec.Body)
		}
	}
	if code := getJSON(t, withToken.adminURL+"/readyz", nil); code != 200 {
		t.Fatalf("refused /quitquitquit calls stopped sluice: readyz %d", code)
	}
	// From loopback (a real connection): sluice stops.
	if code, body := call(t, "POST", noToken.adminURL+"/quitquitquit", ""); code != http.StatusAccepted {
		t.Errorf("/quitquitquit from loopback: %d %s", code, body)
	}
	if !eventually(5*time.Second, func() bool {
		_, err := net.DialTimeout("tcp", hostPort(noToken.proxyURL), 100*time.Millisecond)
		return err != nil
	}) {
		t.Errorf("the proxy still accepts connections after /quitquitquit")
	}
}

func jsonErr(b []byte, e *apiErr) error {
	if err := json.Unmarshal(b, e); err != nil {
		return err
	}
	if e.Error == "" {
		return fmt.Errorf("no error code in %q", b)
	}
	return nil
}

// nonLoopbackIP returns an address of this host that is not loopback.
func nonLoopbackIP() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP
		}
	}
	return nil
}

// TestNetworkRefusals repeats the refusals over real connections from a
// non-loopback address of this host, if it has one.
func TestNetworkRefusals(t *testing.T) {
	ip := nonLoopbackIP()
	if ip == nil {
		t.Skip("SKIPPED: this host has no non-loopback IPv4 address")
	}
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sl := startInprocAt(t, "127.0.0.1:0", net.JoinHostPort(ip.String(), "0"), "SLUICE_UPSTREAM_URL="+store.URL())
	for _, p := range []string{"/v1/jobs", "/quitquitquit"} {
		code, body := call(t, "POST", sl.adminURL+p, `{"id":"from-the-network"}`)
		if code != http.StatusForbidden {
			t.Errorf("POST %s from %s without a token: %d %s, want 403", p, ip, code, body)
		}
	}
	if code := getJSON(t, sl.adminURL+"/readyz", nil); code != 200 {
		t.Errorf("readyz: %d", code)
	}
}

// TestProxyBindsLoopback: the proxy's default address is loopback; binding
// it elsewhere logs a warning unless SLUICE_LISTEN_PUBLIC_OK acknowledges it.
func TestProxyBindsLoopback(t *testing.T) {
	cfg, _, err := sidecar.LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://store"})
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(cfg.ListenAddr)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("default SLUICE_LISTEN_ADDR %q is not loopback", cfg.ListenAddr)
	}
	ahost, _, _ := net.SplitHostPort(cfg.AdminAddr)
	if ip := net.ParseIP(ahost); ip == nil || !ip.IsLoopback() {
		t.Logf("note: the default SLUICE_ADMIN_ADDR %q listens on every interface (reads open, mutations need a token or loopback)", cfg.AdminAddr)
	}
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, tc := range []struct {
		addr string
		ok   string
		warn bool
	}{
		{"127.0.0.1:0", "false", false},
		{"[::1]:0", "false", false},
		{"0.0.0.0:0", "false", true},
		{"[::]:0", "false", true},
		{"0.0.0.0:0", "true", false},
	} {
		if strings.HasPrefix(tc.addr, "[::") {
			if ln, err := net.Listen("tcp", tc.addr); err != nil {
				t.Logf("skipping %s: %v", tc.addr, err)
				continue
			} else {
				ln.Close()
			}
		}
		sl := startInprocAt(t, tc.addr, "127.0.0.1:0", "SLUICE_UPSTREAM_URL="+store.URL(), "SLUICE_LISTEN_PUBLIC_OK="+tc.ok)
		warned := strings.Contains(sl.logs.String(), "listens beyond loopback")
		if warned != tc.warn {
			t.Errorf("proxy on %s with SLUICE_LISTEN_PUBLIC_OK=%s: warned %v, want %v; logs:\n%s", tc.addr, tc.ok, warned, tc.warn, sl.logs)
		}
		sl.stop()
	}
}

// secretStore is the upstream of TestNoSecretsEmitted: it wants the bearer
// token on writes, fails the first cancel with a body, throttles /throttle
// and fails /fail.
type secretStore struct {
	token    string
	mu       sync.Mutex
	authed   int
	cancels  int
	basicOK  int
	basicArg string
}

func (s *secretStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/cancel/"), strings.HasPrefix(r.URL.Path, "/cleanup/"):
		s.mu.Lock()
		s.cancels++
		first := s.cancels == 1
		if u, p, ok := r.BasicAuth(); ok && u+":"+p == s.basicArg {
			s.basicOK++
		}
		s.mu.Unlock()
		if first {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "cancel failed, try again")
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"bad token"}`)
		return
	}
	s.mu.Lock()
	s.authed++
	s.mu.Unlock()
	switch r.URL.Path {
	case "/throttle":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	case "/fail":
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		w.WriteHeader(http.StatusOK)
	}
}

// TestNoSecretsEmitted runs the sluice binary with an admin token, an
// upstream bearer token from a file, a password in the cancel URL and a
// secret header in a job's cancel action, works it (writes that succeed,
// are throttled, fail; admin calls with wrong tokens; cancels whose action
// fails; the CLI; check-config; SIGTERM), and greps everything sluice
// emitted for the secrets: debug logs, /v1/status, the job list and every
// job, /metrics, every error body, the CLI's and check-config's output.
func TestNoSecretsEmitted(t *testing.T) {
	adminToken, upstreamToken := secret(t, "admintok"), secret(t, "uptok")
	urlPassword, headerSecret := secret(t, "urlpw"), secret(t, "hdrsecret")
	secrets := map[string]string{
		"SLUICE_ADMIN_TOKEN":             adminToken,
		"upstream bearer token (file)":   upstreamToken,
		"password in SLUICE_CANCEL_URL":  urlPassword,
		"the same, base64 in Basic auth": base64.StdEncoding.EncodeToString([]byte("ops:" + urlPassword)),
		"secret header of a job action":  headerSecret,
	}
	upstream := &secretStore{token: upstreamToken, basicArg: "ops:" + urlPassword}
	srv := httptest.NewServer(upstream)
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(upstreamToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withPassword := strings.Replace(srv.URL, "http://", "http://ops:"+urlPassword+"@", 1)
	env := []string{
		"SLUICE_UPSTREAM_URL=" + srv.URL,
		"SLUICE_ADMIN_TOKEN=" + adminToken,
		"SLUICE_UPSTREAM_AUTH=bearer-file",
		"SLUICE_TOKEN_FILE=" + tokenFile,
		"SLUICE_CANCEL_URL=" + withPassword + "/cancel/${JOB}",
		"SLUICE_CLEANUP_URL=" + withPassword + "/cleanup/${JOB}",
		"SLUICE_ACTION_RETRIES=3",
		"SLUICE_RETRY_MAX=1",
		"SLUICE_STALL_AFTER=1h",
	}
	p := startProc(t, env...)
	var emitted strings.Builder
	record := func(what string, b []byte) { fmt.Fprintf(&emitted, "\n== %s\n%s", what, b) }

	l := newLoader(p.proxy, "sec", 10*time.Second)
	defer l.close()
	for _, path := range []string{"/put", "/put", "/throttle", "/fail"} {
		o := l.write("PUT", path, "secret-job", []byte("row"))
		record("write "+path, o.body)
	}
	o := l.write("PUT", "/put", "bad job id!", []byte("row"))
	record("write with a bad job id", o.body)
	bearer := "Bearer " + adminToken
	for _, c := range []struct{ method, path, body, authz string }{
		{"POST", "/v1/jobs", `{"id":"x"}`, "Bearer wrong"},
		{"POST", "/v1/jobs", `{"id":"x"}`, ""},
		{"POST", "/v1/jobs", `{"id":"sec-action","cancel":{"url":"` + srv.URL + `/cancel/${JOB}","headers":{"Authorization":"Bearer ` + headerSecret + `"}}}`, bearer},
		{"POST", "/v1/jobs", `{"id":"bad","cancel":{"url":"` + srv.URL + `/x","headers":{"X-Secret":"` + headerSecret + `\r\n"}}}`, bearer},
		{"POST", "/v1/jobs/secret-job/cancel", `{}`, bearer},
		{"POST", "/v1/jobs/sec-action/cancel", `{"force":true}`, bearer},
		{"POST", "/v1/jobs/nope/cancel", `{}`, bearer},
		{"GET", "/v1/nope", ``, ""},
	} {
		code, body := call(t, c.method, p.admin+c.path, c.body, "Authorization", c.authz)
		record(fmt.Sprintf("%s %s → %d", c.method, c.path, code), body)
	}
	if !eventually(15*time.Second, func() bool {
		var v jobView
		getJSON(t, p.admin+"/v1/jobs/secret-job", &v)
		return v.State == "cancelled"
	}) {
		t.Errorf("secret-job was not cancelled")
	}
	for _, path := range []string{"/v1/status", "/v1/jobs", "/v1/jobs/secret-job", "/v1/jobs/sec-action", "/metrics", "/healthz", "/readyz"} {
		code, body := call(t, "GET", p.admin+path, "")
		record(fmt.Sprintf("GET %s → %d", path, code), body)
	}
	cliEnv := append(env, "SLUICE_ADMIN_URL="+p.admin)
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"jobs", "list", "--json"},
		{"jobs", "show", "secret-job", "--json"}, {"jobs", "show", "sec-action"}, {"jobs", "cancel", "nope"}, {"check-config"}} {
		cmd := exec.Command(sluiceBinary(t), args...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, cliEnv...)
		out, _ := cmd.CombinedOutput()
		record("sluice "+strings.Join(args, " "), out)
	}
	bad := exec.Command(sluiceBinary(t), "check-config")
	bad.Env = append([]string{"PATH=" + os.Getenv("PATH")}, append(env, "SLUICE_MIN_RATE=-1", "SLUICE_CANCEL_URL=ftp://ops:"+urlPassword+"@x/${JOB}")...)
	out, _ := bad.CombinedOutput()
	record("sluice check-config (invalid)", out)

	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("sluice exit %d after SIGTERM", code)
	}
	record("stderr (debug logs)", []byte(p.stderr.String()))
	record("stdout", []byte(p.stdout.String()))

	upstream.mu.Lock()
	if upstream.authed == 0 || upstream.basicOK == 0 {
		t.Errorf("the secrets were not in use: %d writes carried the bearer token, %d actions the URL's password", upstream.authed, upstream.basicOK)
	}
	upstream.mu.Unlock()
	all := emitted.String()
	for name, s := range secrets {
		for _, section := range strings.Split(all, "\n== ")[1:] {
			title, body, _ := strings.Cut(section, "\n")
			if i := strings.Index(body, s); i >= 0 {
				lo, hi := max(0, i-120), min(len(body), i+len(s)+40)
				t.Errorf("%s appears in %s: …%s…", name, title, body[lo:hi])
			}
		}
	}
	t.Logf("grepped %d bytes of output for %d secrets", len(all), len(secrets))
}

// startInprocAt is startInproc with chosen proxy and admin addresses.
func startInprocAt(t *testing.T, proxyAddr, adminAddr string, env ...string) *inproc {
	t.Helper()
	return startInprocListeners(t, proxyAddr, adminAddr, env...)
}
