package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/sluice-dev/sluice/internal/redact"
)

const (
	// maxTokenFileBytes bounds a token or client id/secret file.
	maxTokenFileBytes = 64 << 10
	// maxTokenResponseBytes bounds a token endpoint's response body.
	maxTokenResponseBytes = 1 << 20
	// maxExpiresIn rejects absurd lifetimes (and overflow) from a token endpoint.
	maxExpiresIn = 10 * 365 * 24 * time.Hour
)

// checkToken rejects a token that would corrupt the Authorization header.
// Its error never contains the token.
func checkToken(tok string) error {
	if tok == "" {
		return errors.New("token is empty")
	}
	for i := 0; i < len(tok); i++ {
		if b := tok[i]; b <= ' ' || b == 0x7f {
			return fmt.Errorf("token contains whitespace or a control character at byte %d of %d", i, len(tok))
		}
	}
	return nil
}

// jwtExpiry returns the exp claim of tok if tok is a JWT (three base64url
// segments whose second is a JSON object with a numeric exp), unverified:
// it only tells the cache when the token stops being useful.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == "" {
		return time.Time{}, false
	}
	exp, err := claims.Exp.Float64()
	// Past year 5000 or before 1970 is not an expiry we can act on.
	if err != nil || exp <= 0 || exp > 95617584000 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(exp)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// fileSource reads a bearer token from a file. Its methods are called only
// by the refresh loop.
type fileSource struct {
	path string
	seen os.FileInfo // the file as of the last read attempt
}

func (s *fileSource) fetch(_ context.Context, _ time.Time) (credential, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return credential{}, fmt.Errorf("bearer-file: %w", err)
	}
	s.seen = fi
	tok, err := readSmallFile(s.path)
	if err != nil {
		return credential{}, fmt.Errorf("bearer-file: %w", err)
	}
	if err := checkToken(tok); err != nil {
		return credential{}, fmt.Errorf("bearer-file %s: %w", s.path, err)
	}
	c := credential{token: tok}
	if exp, ok := jwtExpiry(tok); ok {
		c.expires = exp
	}
	return c, nil
}

// changed reports whether the file was replaced or rewritten since the
// last read attempt (Kubernetes rotates projected tokens by swapping a
// symlink, which changes the file's identity).
func (s *fileSource) changed() bool {
	fi, err := os.Stat(s.path)
	if err != nil {
		return false // nothing new to read; the schedule retries
	}
	return s.seen == nil || !os.SameFile(fi, s.seen) || !fi.ModTime().Equal(s.seen.ModTime()) || fi.Size() != s.seen.Size()
}

func (s *fileSource) secrets() []string { return nil }

// readSmallFile returns the trimmed contents of a file of at most
// maxTokenFileBytes. Its errors name the path, never the contents.
func readSmallFile(path string) (string, error) {
	// Opening or reading a FIFO or a device may block for ever, and
	// SLUICE_TOKEN_FETCH_TIMEOUT does not reach a file read: the refresh
	// loop, and shutdown after it, would hang.
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file (mode %s)", path, fi.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxTokenFileBytes {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxTokenFileBytes)
	}
	return strings.TrimSpace(string(b)), nil
}

// urlSource fetches a token from SLUICE_TOKEN_URL, either as a plain JSON
// endpoint or with the OAuth2 client credentials grant. Its fetch is called
// only by the refresh loop.
type urlSource struct {
	url     string
	headers []header
	client  *http.Client

	// OAuth2 client credentials; oauth is nil for a plain endpoint.
	oauth              *clientcredentials.Config
	idFile, secretFile string
	secret             atomic.Pointer[string] // the client secret last read, for scrubbing
	oauthCtxClient     *http.Client           // client with the extra headers, for oauth2.HTTPClient
	redactedURL        string
}

func newURLSource(c Config, client *http.Client) (*urlSource, error) {
	headers, err := parseHeaders(c.TokenURLHeaders)
	if err != nil {
		panic("BUG: auth: Validate accepted SLUICE_TOKEN_URL_HEADERS: " + err.Error())
	}
	s := &urlSource{url: c.TokenURL, headers: headers, client: client, redactedURL: redact.URL(c.TokenURL)}
	if c.OAuthClientIDFile != "" {
		s.idFile, s.secretFile = c.OAuthClientIDFile, c.OAuthClientSecretFile
		s.oauth = &clientcredentials.Config{TokenURL: c.TokenURL, Scopes: c.OAuthScopes}
		hc := *client
		base := hc.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		hc.Transport = &headerTransport{base: base, headers: headers}
		s.oauthCtxClient = &hc
	}
	return s, nil
}

func (s *urlSource) secrets() []string {
	if p := s.secret.Load(); p != nil {
		return []string{*p}
	}
	return nil
}

func (s *urlSource) fetch(ctx context.Context, start time.Time) (credential, error) {
	if s.oauth != nil {
		return s.fetchOAuth(ctx, start)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return credential{}, fmt.Errorf("token-url %s: %w", s.redactedURL, redact.URLError(err))
	}
	for _, h := range s.headers {
		req.Header.Set(h.name, h.value)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return credential{}, fmt.Errorf("token-url GET %s: %w", s.redactedURL, redact.URLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponseBytes+1))
	if err != nil {
		return credential{}, fmt.Errorf("token-url GET %s: reading the response: %w", s.redactedURL, redact.URLError(err))
	}
	if resp.StatusCode != http.StatusOK {
		return credential{}, fmt.Errorf("token-url GET %s: status %d%s", s.redactedURL, resp.StatusCode, errorField(body))
	}
	if len(body) > maxTokenResponseBytes {
		return credential{}, fmt.Errorf("token-url GET %s: response larger than %d bytes", s.redactedURL, maxTokenResponseBytes)
	}
	tok, expiresIn, err := parseTokenResponse(body)
	if err != nil {
		return credential{}, fmt.Errorf("token-url GET %s: %w", s.redactedURL, err)
	}
	c := credential{token: tok}
	if expiresIn > 0 {
		c.expires = start.Add(expiresIn)
	}
	return c, nil
}

func (s *urlSource) fetchOAuth(ctx context.Context, start time.Time) (credential, error) {
	id, err := readSmallFile(s.idFile)
	if err != nil {
		return credential{}, fmt.Errorf("oauth2 client id: %w", err)
	}
	secret, err := readSmallFile(s.secretFile)
	if err != nil {
		return credential{}, fmt.Errorf("oauth2 client secret: %w", err)
	}
	s.secret.Store(&secret)
	// Reusing one clientcredentials.Config keeps its cached auth style.
	s.oauth.ClientID, s.oauth.ClientSecret = id, secret
	tok, err := s.oauth.Token(context.WithValue(ctx, oauth2.HTTPClient, s.oauthCtxClient))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			status := 0
			if re.Response != nil {
				status = re.Response.StatusCode
			}
			msg := fmt.Sprintf("oauth2 token endpoint %s: status %d", s.redactedURL, status)
			if re.ErrorCode != "" {
				msg += fmt.Sprintf(" error %q", re.ErrorCode)
			}
			if re.ErrorDescription != "" {
				msg += fmt.Sprintf(" (%s)", re.ErrorDescription)
			}
			return credential{}, errors.New(msg)
		}
		return credential{}, fmt.Errorf("oauth2 token endpoint %s: %w", s.redactedURL, redact.URLError(err))
	}
	if err := checkToken(tok.AccessToken); err != nil {
		return credential{}, fmt.Errorf("oauth2 token endpoint %s: %w", s.redactedURL, err)
	}
	c := credential{token: tok.AccessToken}
	switch {
	case tok.ExpiresIn > 0 && tok.ExpiresIn <= int64(maxExpiresIn/time.Second):
		c.expires = start.Add(time.Duration(tok.ExpiresIn) * time.Second)
	case !tok.Expiry.IsZero():
		c.expires = tok.Expiry
	}
	return c, nil
}

// errorField returns ` error "x"` when body is a JSON object with a string
// error field (RFC 6749 style), else "". The body itself is never quoted.
func errorField(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" || len(e.Error) > 100 {
		return ""
	}
	return fmt.Sprintf(" error %q", e.Error)
}

// parseTokenResponse parses {"access_token": "...", "expires_in": n}, where
// n is seconds as a JSON number or a decimal string; a missing or zero
// expires_in means the token has no known expiry. Errors never contain the
// token.
func parseTokenResponse(body []byte) (string, time.Duration, error) {
	var r struct {
		AccessToken *string         `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&r); err != nil {
		return "", 0, errors.New("response is not a JSON object with access_token and expires_in")
	}
	if r.AccessToken == nil {
		return "", 0, errors.New("response has no access_token")
	}
	if err := checkToken(*r.AccessToken); err != nil {
		return "", 0, fmt.Errorf("access_token: %w", err)
	}
	var expiresIn time.Duration
	if raw := bytes.TrimSpace(r.ExpiresIn); len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		s := string(raw)
		if raw[0] == '"' {
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", 0, errors.New("expires_in is not a number")
			}
		}
		secs, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(secs) || secs < 0 || secs > maxExpiresIn.Seconds() {
			return "", 0, fmt.Errorf("expires_in %.40q is not a number of seconds in [0, %d]", s, int64(maxExpiresIn.Seconds()))
		}
		expiresIn = time.Duration(secs * float64(time.Second))
	}
	return *r.AccessToken, expiresIn, nil
}

// headerTransport adds fixed headers to every request (the OAuth2 library
// builds its own requests).
type headerTransport struct {
	base    http.RoundTripper
	headers []header
}

func (t *headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(t.headers) == 0 {
		return t.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	for _, h := range t.headers {
		r.Header.Set(h.name, h.value)
	}
	return t.base.RoundTrip(r)
}
