package auth

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"

	"github.com/sluice-dev/sluice/internal/redact"
)

// envPrefix is the prefix the sidecar's configuration applies to every
// variable of Config; error messages and Redacted use the full names.
const envPrefix = "SLUICE_"

// Names of the credential sources accepted in SLUICE_UPSTREAM_AUTH.
const (
	SourceNone       = "none"        // the loader's own headers pass through untouched
	SourceBearerFile = "bearer-file" // Authorization: Bearer <contents of SLUICE_TOKEN_FILE>
	SourceTokenURL   = "token-url"   // a JSON token endpoint or OAuth2 client credentials
	SourceAWSSigV4   = "aws-sigv4"   // AWS Signature Version 4 with the SDK's default credential chain
)

// Config selects and tunes the upstream credential source. It is embedded
// in the sidecar's configuration and parsed with github.com/caarlos0/env/v10;
// the parent applies the prefix "SLUICE_" to every tag below. No field holds
// a secret: secrets are read from files (or, for aws-sigv4, from the AWS
// SDK's default chain) so that the configuration can be printed.
//
// The cache model shared by all sources: a credential obtained at time t
// that expires at e is refreshed in the background at
//
//	e - w·(1 - 0.2·u),  w = min(RefreshBefore, (e - t)/2),  u uniform in [0, 1)
//
// that is, never earlier than half-way through the lifetime the credential
// actually had when it was fetched, however large RefreshBefore is. Fetches
// are at least MinInterval apart, bounded by FetchTimeout, and back off
// while they fail as limiter.Backoff does (exponential, full jitter, from
// max(MinInterval, 1s) to BackoffMax). The cached credential is used until it truly expires.
type Config struct {
	// Source is the credential source: none, bearer-file, token-url or
	// aws-sigv4. The empty string means none.
	Source string `env:"UPSTREAM_AUTH" envDefault:"none"`
	// Override replaces an Authorization header sent by the loader (with
	// aws-sigv4, the signature parameters of a presigned query too); when
	// false, a request that already carries one (or an AWS presigned query)
	// is forwarded unchanged.
	Override bool `env:"AUTH_OVERRIDE" envDefault:"true"`

	// TokenFile is the bearer-file token's path. The file is re-read when
	// it changes (checked every TokenFilePoll) and when its token, if it is
	// a JWT, reaches the refresh window. Surrounding whitespace is ignored.
	TokenFile string `env:"TOKEN_FILE"`
	// TokenFilePoll is how often TokenFile is checked for a change (stat
	// only; the file is read when its identity, size or mtime changes).
	TokenFilePoll time.Duration `env:"TOKEN_FILE_POLL" envDefault:"10s"`

	// TokenURL is the token-url endpoint. Without OAuth client files it is
	// fetched with GET and must answer 200 with JSON
	// {"access_token": "...", "expires_in": seconds} (metadata-server style;
	// expires_in may be a number or a string). With OAuthClientIDFile and
	// OAuthClientSecretFile it is an OAuth2 token endpoint used with the
	// client credentials grant.
	TokenURL string `env:"TOKEN_URL"`
	// TokenURLHeaders are extra request headers for TokenURL, written as
	// comma-separated Name=Value pairs, e.g. "Metadata-Flavor=Google".
	TokenURLHeaders string `env:"TOKEN_URL_HEADERS"`
	// OAuthClientIDFile and OAuthClientSecretFile hold the OAuth2 client id
	// and secret; both are re-read before every fetch so they may rotate.
	OAuthClientIDFile     string `env:"OAUTH_CLIENT_ID_FILE"`
	OAuthClientSecretFile string `env:"OAUTH_CLIENT_SECRET_FILE"`
	// OAuthScopes are the scopes requested with client credentials
	// (comma-separated).
	OAuthScopes []string `env:"OAUTH_SCOPES"`

	// AWSService is the SigV4 signing name of the store's service, e.g. es,
	// aoss, s3, dynamodb. For s3 a non-empty body is signed as
	// UNSIGNED-PAYLOAD; for every other service its SHA-256 is computed.
	AWSService string `env:"AWS_SERVICE"`
	// AWSRegion is the signing region; empty means the region the AWS SDK
	// resolves from its environment (AWS_REGION, shared config).
	AWSRegion string `env:"AWS_REGION"`

	// RefreshBefore is the longest time before expiry at which a credential
	// is refreshed; it is clamped to half of the credential's lifetime.
	RefreshBefore time.Duration `env:"TOKEN_REFRESH_BEFORE" envDefault:"5m"`
	// MinInterval is the shortest time between the starts of two fetches.
	MinInterval time.Duration `env:"TOKEN_MIN_INTERVAL" envDefault:"10s"`
	// FetchTimeout bounds one fetch (connection, request and body).
	FetchTimeout time.Duration `env:"TOKEN_FETCH_TIMEOUT" envDefault:"10s"`
	// BackoffMax caps the exponential backoff between failing fetches.
	BackoffMax time.Duration `env:"TOKEN_BACKOFF_MAX" envDefault:"1m"`
}

// DefaultConfig returns the Config that an empty environment produces: the
// envDefault tags above, source none.
func DefaultConfig() Config {
	var c Config
	if err := env.ParseWithOptions(&c, env.Options{Environment: map[string]string{}}); err != nil {
		panic("BUG: auth: envDefault tags do not parse: " + err.Error())
	}
	return c
}

func (c Config) source() string {
	if c.Source == "" {
		return SourceNone
	}
	return c.Source
}

var awsServiceRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
var awsRegionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Validate returns one error per invalid variable, each message starting
// with the variable's full name, e.g. "SLUICE_TOKEN_URL: must be an
// http(s) URL". It reads no file and makes no network call. A setting that
// belongs to a source other than the selected one is an error, so that a
// forgotten SLUICE_UPSTREAM_AUTH does not silently send unauthenticated
// writes.
func (c Config) Validate() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, args...)))
	}
	src := c.source()
	switch src {
	case SourceNone, SourceBearerFile, SourceTokenURL, SourceAWSSigV4:
	default:
		bad("UPSTREAM_AUTH", "unknown source %q (want none, bearer-file, token-url or aws-sigv4)", c.Source)
		return errs
	}

	oauth := c.OAuthClientIDFile != "" || c.OAuthClientSecretFile != ""
	notFor := func(name string, set bool, want string) {
		if set && src != want {
			bad(name, "is set but SLUICE_UPSTREAM_AUTH is %q (it applies to %s)", src, want)
		}
	}
	notFor("TOKEN_FILE", c.TokenFile != "", SourceBearerFile)
	notFor("TOKEN_URL", c.TokenURL != "", SourceTokenURL)
	notFor("TOKEN_URL_HEADERS", c.TokenURLHeaders != "", SourceTokenURL)
	notFor("OAUTH_CLIENT_ID_FILE", c.OAuthClientIDFile != "", SourceTokenURL)
	notFor("OAUTH_CLIENT_SECRET_FILE", c.OAuthClientSecretFile != "", SourceTokenURL)
	notFor("OAUTH_SCOPES", len(c.OAuthScopes) > 0, SourceTokenURL)
	notFor("AWS_SERVICE", c.AWSService != "", SourceAWSSigV4)
	notFor("AWS_REGION", c.AWSRegion != "", SourceAWSSigV4)
	if src == SourceNone {
		return errs
	}

	switch src {
	case SourceBearerFile:
		if c.TokenFile == "" {
			bad("TOKEN_FILE", "required with SLUICE_UPSTREAM_AUTH=bearer-file")
		}
		if c.TokenFilePoll <= 0 {
			bad("TOKEN_FILE_POLL", "must be positive, got %s", c.TokenFilePoll)
		}
	case SourceTokenURL:
		if c.TokenURL == "" {
			bad("TOKEN_URL", "required with SLUICE_UPSTREAM_AUTH=token-url")
		} else if u, err := url.Parse(c.TokenURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("TOKEN_URL", "must be an http(s) URL with a host, got %q", redact.URL(c.TokenURL))
		}
		if _, err := parseHeaders(c.TokenURLHeaders); err != nil {
			bad("TOKEN_URL_HEADERS", "%v", err)
		}
		if oauth && (c.OAuthClientIDFile == "" || c.OAuthClientSecretFile == "") {
			if c.OAuthClientIDFile == "" {
				bad("OAUTH_CLIENT_ID_FILE", "required when SLUICE_OAUTH_CLIENT_SECRET_FILE is set")
			} else {
				bad("OAUTH_CLIENT_SECRET_FILE", "required when SLUICE_OAUTH_CLIENT_ID_FILE is set")
			}
		}
		if len(c.OAuthScopes) > 0 && !oauth {
			bad("OAUTH_SCOPES", "only used with OAuth client credentials (SLUICE_OAUTH_CLIENT_ID_FILE)")
		}
		for _, s := range c.OAuthScopes {
			if s == "" || strings.ContainsAny(s, " \t\r\n") {
				bad("OAUTH_SCOPES", "scope %q is empty or contains whitespace", s)
			}
		}
	case SourceAWSSigV4:
		if c.AWSService == "" {
			bad("AWS_SERVICE", "required with SLUICE_UPSTREAM_AUTH=aws-sigv4 (e.g. es, aoss, s3, dynamodb)")
		} else if !awsServiceRE.MatchString(c.AWSService) {
			bad("AWS_SERVICE", "%q is not a signing name (lower-case letters, digits, '-')", c.AWSService)
		}
		if c.AWSRegion != "" && !awsRegionRE.MatchString(c.AWSRegion) {
			bad("AWS_REGION", "%q is not a region name (lower-case letters, digits, '-')", c.AWSRegion)
		}
	}

	if c.RefreshBefore <= 0 {
		bad("TOKEN_REFRESH_BEFORE", "must be positive, got %s", c.RefreshBefore)
	}
	if c.MinInterval < 0 {
		bad("TOKEN_MIN_INTERVAL", "must not be negative, got %s", c.MinInterval)
	}
	if c.FetchTimeout <= 0 {
		bad("TOKEN_FETCH_TIMEOUT", "must be positive, got %s", c.FetchTimeout)
	}
	if c.BackoffMax <= 0 {
		bad("TOKEN_BACKOFF_MAX", "must be positive, got %s", c.BackoffMax)
	} else if c.BackoffMax < c.MinInterval {
		bad("TOKEN_BACKOFF_MAX", "%s is below SLUICE_TOKEN_MIN_INTERVAL %s", c.BackoffMax, c.MinInterval)
	}
	return errs
}

// Redacted returns every variable of c by its full name with a value safe
// to print (check-config). No field holds a secret; values of
// SLUICE_TOKEN_URL_HEADERS whose names suggest a credential are replaced by
// redact.Placeholder, and SLUICE_TOKEN_URL is shown as redact.URL shows it
// (userinfo and query values hidden).
func (c Config) Redacted() map[string]string {
	headers := c.TokenURLHeaders
	if h, err := parseHeaders(c.TokenURLHeaders); err == nil {
		parts := make([]string, 0, len(h))
		for _, kv := range h {
			v := kv.value
			if redact.SecretHeader(kv.name) {
				v = redact.Placeholder
			}
			parts = append(parts, kv.name+"="+v)
		}
		headers = strings.Join(parts, ",")
	} else if headers != "" {
		headers = redact.Placeholder
	}
	return map[string]string{
		envPrefix + "UPSTREAM_AUTH":            c.source(),
		envPrefix + "AUTH_OVERRIDE":            fmt.Sprint(c.Override),
		envPrefix + "TOKEN_FILE":               c.TokenFile,
		envPrefix + "TOKEN_FILE_POLL":          c.TokenFilePoll.String(),
		envPrefix + "TOKEN_URL":                redact.URL(c.TokenURL),
		envPrefix + "TOKEN_URL_HEADERS":        headers,
		envPrefix + "OAUTH_CLIENT_ID_FILE":     c.OAuthClientIDFile,
		envPrefix + "OAUTH_CLIENT_SECRET_FILE": c.OAuthClientSecretFile,
		envPrefix + "OAUTH_SCOPES":             strings.Join(c.OAuthScopes, ","),
		envPrefix + "AWS_SERVICE":              c.AWSService,
		envPrefix + "AWS_REGION":               c.AWSRegion,
		envPrefix + "TOKEN_REFRESH_BEFORE":     c.RefreshBefore.String(),
		envPrefix + "TOKEN_MIN_INTERVAL":       c.MinInterval.String(),
		envPrefix + "TOKEN_FETCH_TIMEOUT":      c.FetchTimeout.String(),
		envPrefix + "TOKEN_BACKOFF_MAX":        c.BackoffMax.String(),
	}
}

type header struct{ name, value string }

// parseHeaders parses "Name=Value,Name2=Value2". Names must be HTTP tokens;
// values must not contain control characters or commas. Surrounding spaces
// are trimmed; empty items are ignored.
func parseHeaders(s string) ([]header, error) {
	var out []header
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, value, ok := strings.Cut(item, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" {
			return nil, fmt.Errorf("item %d is not Name=Value", len(out)+1)
		}
		if !isToken(name) {
			// Not quoted: an item written "Authorization: Bearer …"
			// holds its credential before the first '='.
			return nil, fmt.Errorf("item %d: the header name is not an HTTP token (write each header as Name=Value)", len(out)+1)
		}
		for _, r := range value {
			if r < 0x20 || r == 0x7f {
				return nil, fmt.Errorf("value of header %q contains a control character", name)
			}
		}
		out = append(out, header{name: name, value: value})
	}
	return out, nil
}

// isToken reports whether s is an RFC 9110 token (a valid header name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return true
}
