package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/internal/redact"
)

func writeFile(t *testing.T, path, contents string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(contents), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes contents to a temporary file and renames it over path
// (a new inode, as most secret writers do).
func replaceFile(t *testing.T, path, contents string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, contents)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// kubeletProject mimics how the kubelet updates a projected volume:
// the file is a symlink into ..data, itself a symlink that is swapped
// atomically to a new timestamped directory.
func kubeletProject(t *testing.T, dir, name, contents string, gen int) {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..2025_%d", gen))
	if err := os.Mkdir(ts, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ts, name), contents)
	tmpLink := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmpLink); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, name)
	if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
}

func bearer(t *testing.T, a *Authenticator) string {
	t.Helper()
	req := newRequest(t, "POST", "http://store.test/", "x")
	if err := applyNow(t, a, req); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
}

// The token file is re-read when it changes, both when it is replaced by
// rename and when the kubelet swaps the ..data symlink; an unchanged file
// is not re-read on every poll.
func TestBearerFileRotation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		update func(t *testing.T, dir, path, tok string, gen int)
	}{
		{"rename over the file", func(t *testing.T, _, path, tok string, _ int) { replaceFile(t, path, tok+"\n") }},
		{"rewrite in place", func(t *testing.T, _, path, tok string, _ int) { writeFile(t, path, tok) }},
		{"kubelet projected volume", func(t *testing.T, dir, _, tok string, gen int) { kubeletProject(t, dir, "token", tok, gen) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "token")
				tc.update(t, dir, path, "file-token-1", 1)
				c := testConfig(SourceBearerFile)
				c.TokenFile = path
				h := newHarness(t, c, nil, nil)
				h.start(t)
				synctest.Wait()
				if got := bearer(t, h.a); got != "file-token-1" {
					t.Fatalf("token = %q, want file-token-1", got)
				}

				// Half a poll period off the loop's ticks, so that an
				// in-place rewrite (truncate, then write) is never observed
				// half-done; the loop would read the empty file, keep the
				// cached token, and read again on the next poll.
				time.Sleep(time.Minute + c.TokenFilePoll/2)
				if n := h.a.Status().Fetches; n != 1 {
					t.Errorf("%d reads of an unchanged file in a minute, want 1", n)
				}

				for gen := 2; gen <= 4; gen++ {
					want := fmt.Sprintf("file-token-%d-rotated", gen)
					tc.update(t, dir, path, want, gen)
					time.Sleep(c.TokenFilePoll + time.Millisecond)
					if got := bearer(t, h.a); got != want {
						t.Fatalf("after rotation %d: token = %q, want %q", gen, got, want)
					}
				}
				if n := h.a.Status().Fetches; n != 4 {
					t.Errorf("%d reads for 3 rotations, want 4", n)
				}
			})
		})
	}
}

func jwt(exp int64) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(fmt.Appendf(nil, `{"sub":"system:serviceaccount:x:y","exp":%d}`, exp)) + ".c2ln"
}

// A JWT in the token file carries its expiry: it is shown in Status, it is
// re-read in the refresh window, and if nobody rotates it, requests fail
// once it has expired; a rotation brings readiness back.
func TestBearerFileJWTExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "token")
		exp := time.Now().Add(time.Hour).Truncate(time.Second)
		writeFile(t, path, jwt(exp.Unix()))
		c := testConfig(SourceBearerFile)
		c.TokenFile = path
		h := newHarness(t, c, nil, nil)
		h.start(t)
		synctest.Wait()
		if st := h.a.Status(); !st.Expiry.Equal(exp) || !st.Ready {
			t.Fatalf("Status = %+v, want expiry %v", st, exp)
		}
		time.Sleep(time.Until(exp) - time.Second)
		if !h.a.Ready() {
			t.Fatal("not ready a second before the JWT expires")
		}
		if n := h.a.Status().Fetches; n < 2 || n > 12 {
			t.Errorf("%d reads of a never-rotated token over its lifetime, want a few re-reads in the window", n)
		}
		time.Sleep(2 * time.Second)
		var ue *UnavailableError
		if err := h.a.Apply(newRequest(t, "GET", "http://store.test/", "")); !errors.As(err, &ue) {
			t.Fatalf("Apply after JWT expiry = %v", err)
		}
		if h.a.Ready() {
			t.Error("ready with an expired JWT")
		}
		next := jwt(time.Now().Add(time.Hour).Unix())
		replaceFile(t, path, next)
		time.Sleep(c.TokenFilePoll + time.Millisecond)
		if got := bearer(t, h.a); got != next {
			t.Errorf("after rotation token = %q", got)
		}
	})
}

// A missing or malformed token file leaves the cached token in use.
func TestBearerFileErrorsKeepCachedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token")
		writeFile(t, path, "good-token")
		c := testConfig(SourceBearerFile)
		c.TokenFile = path
		h := newHarness(t, c, nil, nil)
		h.start(t)
		synctest.Wait()
		replaceFile(t, path, "two words")
		time.Sleep(c.TokenFilePoll + time.Millisecond)
		if got := bearer(t, h.a); got != "good-token" {
			t.Errorf("token = %q, want the cached good-token", got)
		}
		st := h.a.Status()
		if st.LastResult != ResultError || !strings.Contains(st.LastError, "whitespace") || strings.Contains(st.LastError, "two words") {
			t.Errorf("Status = %+v", st)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
		if got := bearer(t, h.a); got != "good-token" {
			t.Errorf("token = %q after the file vanished, want the cached good-token", got)
		}
	})
}

// A token file that is not a regular file (a FIFO, a terminal: a path
// mistyped, or a pipe handed over as a file) is refused with a clear
// error. Reading it would block the refresh loop beyond
// SLUICE_TOKEN_FETCH_TIMEOUT, which does not reach a file read, and with
// it every later refresh and sluice's shutdown.
func TestBearerFileNotRegularRefused(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "token")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := (&fileSource{path: fifo}).fetch(context.Background(), time.Now())
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("fetch = %v, want an error saying the token file is not a regular file", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("fetch of a FIFO token file still blocked after 2s")
		// Open the FIFO's other end, so that the blocked read ends.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
	}
}

// OAuth2 client credentials: the client id and secret come from files that
// are re-read before every fetch, the extra headers and scopes are sent, and
// the token is cached across requests.
func TestOAuthClientCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		idFile, secretFile := filepath.Join(dir, "id"), filepath.Join(dir, "secret")
		writeFile(t, idFile, "client-1\n")
		writeFile(t, secretFile, "secret-1\n")

		var mu sync.Mutex
		var seen []string
		n := 0
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			id, secret, _ := req.BasicAuth()
			if err := req.ParseForm(); err != nil {
				return nil, err
			}
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprintf("%s %s %s:%s grant=%s scope=%s x-tenant=%s", req.Method, req.URL.Path, id, secret,
				req.PostForm.Get("grant_type"), req.PostForm.Get("scope"), req.Header.Get("X-Tenant")))
			n++
			return response(req, 200, fmt.Sprintf(`{"access_token":"oauth-%d","token_type":"bearer","expires_in":3600}`, n)), nil
		})
		c := testConfig(SourceTokenURL)
		c.TokenURL = "https://idp.test/oauth/token"
		c.TokenURLHeaders = "X-Tenant=blue"
		c.OAuthClientIDFile, c.OAuthClientSecretFile = idFile, secretFile
		c.OAuthScopes = []string{"store.write", "store.read"}
		h := newHarness(t, c, rt, nil)
		h.start(t)
		synctest.Wait()
		for range 100 {
			if got := bearer(t, h.a); got != "oauth-1" {
				t.Fatalf("token = %q", got)
			}
		}
		writeFile(t, secretFile, "secret-2")
		time.Sleep(time.Hour)
		if got := bearer(t, h.a); got != "oauth-2" {
			t.Errorf("token after an hour = %q, want oauth-2", got)
		}
		mu.Lock()
		defer mu.Unlock()
		want := []string{
			"POST /oauth/token client-1:secret-1 grant=client_credentials scope=store.write store.read x-tenant=blue",
			"POST /oauth/token client-1:secret-2 grant=client_credentials scope=store.write store.read x-tenant=blue",
		}
		if strings.Join(seen, "\n") != strings.Join(want, "\n") {
			t.Errorf("token endpoint saw\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The metadata-server style endpoint gets the configured headers and a GET.
func TestTokenURLRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &tokenServer{lifetime: time.Hour}
		c := testConfig(SourceTokenURL)
		c.TokenURL = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token?scopes=x"
		c.TokenURLHeaders = "Metadata-Flavor=Google"
		h := newHarness(t, c, srv, nil)
		h.start(t)
		synctest.Wait()
		srv.mu.Lock()
		req := srv.lastReq
		srv.mu.Unlock()
		if req.Method != "GET" || req.Header.Get("Metadata-Flavor") != "Google" || req.URL.Query().Get("scopes") != "x" {
			t.Errorf("request %s %s %v", req.Method, req.URL, req.Header)
		}
	})
}

func TestParseTokenResponse(t *testing.T) {
	f := func(body string, wantTok string, wantExp time.Duration, wantErr string) {
		t.Helper()
		tok, exp, err := parseTokenResponse([]byte(body))
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("parseTokenResponse(%s) error = %v, want %q", body, err, wantErr)
			}
			if err != nil && tok != "" {
				t.Errorf("parseTokenResponse(%s) returned a token with an error", body)
			}
			return
		}
		if err != nil || tok != wantTok || exp != wantExp {
			t.Errorf("parseTokenResponse(%s) = %q, %v, %v; want %q, %v", body, tok, exp, err, wantTok, wantExp)
		}
	}
	f(`{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}`, "ya29.abc", 3599*time.Second, "")
	f(`{"access_token":"eyJ0","expires_in":"86399","expires_on":"1700000000"}`, "eyJ0", 86399*time.Second, "") // Azure IMDS
	f(`{"access_token":"t","expires_in":1.5}`, "t", 1500*time.Millisecond, "")
	f(`{"access_token":"t"}`, "t", 0, "")
	f(`{"access_token":"t","expires_in":null}`, "t", 0, "")
	f(`{"access_token":"t","expires_in":-1}`, "", 0, "not a number of seconds")
	f(`{"access_token":"t","expires_in":"soon"}`, "", 0, "not a number of seconds")
	f(`{"access_token":"t","expires_in":1e30}`, "", 0, "not a number of seconds")
	f(`{"access_token":"t","expires_in":true}`, "", 0, "not a number of seconds")
	f(`{"expires_in":10}`, "", 0, "no access_token")
	f(`{"access_token":"","expires_in":10}`, "", 0, "empty")
	f(`{"access_token":"secret value","expires_in":10}`, "", 0, "whitespace")
	f(`{"access_token":"secret\r\nX-Injected: 1"}`, "", 0, "whitespace")
	f(`<html>`, "", 0, "not a JSON object")
	f(`{"access_token":5}`, "", 0, "not a JSON object")
}

func FuzzParseTokenResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"ya29.abc","expires_in":3599}`))
	f.Add([]byte(`{"access_token":"a","expires_in":"12"}`))
	f.Add([]byte(`{"access_token":"a b","expires_in":1e400}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, exp, err := parseTokenResponse(body)
		if err != nil {
			if tok != "" || exp != 0 {
				t.Fatalf("error %v with results %q, %v", err, tok, exp)
			}
			return
		}
		if checkToken(tok) != nil || exp < 0 || exp > maxExpiresIn {
			t.Fatalf("accepted token %q with expires_in %v", tok, exp)
		}
	})
}

func TestJWTExpiry(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	f := func(tok string, want time.Time, wantOK bool) {
		t.Helper()
		got, ok := jwtExpiry(tok)
		if ok != wantOK || !got.Equal(want) {
			t.Errorf("jwtExpiry(%q) = %v, %v; want %v, %v", tok, got, ok, want, wantOK)
		}
	}
	f(jwt(1700000000), time.Unix(1700000000, 0), true)
	f("a."+enc([]byte(`{"exp":1700000000.5}`))+".c", time.Unix(1700000000, 5e8), true)
	f("a."+enc([]byte(`{"exp":1700000000}`))+"==.c", time.Unix(1700000000, 0), true)
	f("opaque-token", time.Time{}, false)
	f("a."+enc([]byte(`{"sub":"x"}`))+".c", time.Time{}, false)
	f("a."+enc([]byte(`{"exp":"1700000000"}`))+".c", time.Unix(1700000000, 0), true) // lenient: a numeric string
	f("a."+enc([]byte(`{"exp":"soon"}`))+".c", time.Time{}, false)
	f("a."+enc([]byte(`{"exp":-5}`))+".c", time.Time{}, false)
	f("a."+enc([]byte(`{"exp":1e300}`))+".c", time.Time{}, false)
	f("a.!!!.c", time.Time{}, false)
}

func FuzzJWTExpiry(f *testing.F) {
	f.Add(jwt(1700000000))
	f.Add("a.eyJleHAiOjF9.c")
	f.Fuzz(func(t *testing.T, tok string) {
		exp, ok := jwtExpiry(tok)
		if ok && (exp.Unix() <= 0 || exp.Year() > 5000) {
			t.Fatalf("jwtExpiry(%q) = %v", tok, exp)
		}
		if !ok && !exp.IsZero() {
			t.Fatalf("jwtExpiry(%q) = %v with ok=false", tok, exp)
		}
	})
}

// SLUICE_AUTH_OVERRIDE: the loader's own Authorization header is replaced
// or kept; a header this Authenticator set on an earlier attempt is always
// refreshed, even after the token rotated.
func TestOverride(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, override := range []bool{true, false} {
			srv := &tokenServer{lifetime: 20 * time.Minute}
			c := testConfig(SourceTokenURL)
			c.Override = override
			h := newHarness(t, c, srv, nil)
			h.start(t)
			synctest.Wait()
			cur := "Bearer " + bearer(t, h.a)

			req := newRequest(t, "POST", "http://store.test/", "x")
			req.Header.Set("Authorization", "Basic bG9hZGVyOnB3")
			if err := applyNow(t, h.a, req); err != nil {
				t.Fatal(err)
			}
			want := cur
			if !override {
				want = "Basic bG9hZGVyOnB3"
			}
			if got := req.Header.Get("Authorization"); got != want {
				t.Errorf("override=%v: loader's header became %q, want %q", override, got, want)
			}

			// A retry of a request signed before the token rotated.
			retry := newRequest(t, "POST", "http://store.test/", "x")
			if err := applyNow(t, h.a, retry); err != nil {
				t.Fatal(err)
			}
			time.Sleep(17 * time.Minute) // past the refresh point (15–16 min): a new token
			if err := applyNow(t, h.a, retry); err != nil {
				t.Fatal(err)
			}
			if got, now := retry.Header.Get("Authorization"), "Bearer "+bearer(t, h.a); got != now || got == cur {
				t.Errorf("override=%v: retry carries %q, want the new %q (old %q)", override, got, now, cur)
			}
		}
	})
}

// TestURLSourceErrorsRedactURL: a token URL's password and query values
// never reach a fetch error, which is logged and shown in /v1/status.
func TestURLSourceErrorsRedactURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	for _, base := range []string{srv.URL, dead.URL} {
		c := testConfig(SourceTokenURL)
		c.TokenURL = strings.Replace(base, "://", "://user:pw-s3cr3t@", 1) + "/token?key=s3cr3t"
		s, err := newURLSource(c, srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.fetch(t.Context(), time.Now())
		if err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "user:"+redact.Placeholder+"@") {
			t.Errorf("%s: fetch error %v", base, err)
		}
	}
}
