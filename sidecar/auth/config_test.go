package auth

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v10"
)

func TestDefaultConfig(t *testing.T) {
	want := Config{
		Source: SourceNone, Override: true, TokenFilePoll: 10 * time.Second,
		RefreshBefore: 5 * time.Minute, MinInterval: 10 * time.Second,
		FetchTimeout: 10 * time.Second, BackoffMax: time.Minute,
	}
	if got := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultConfig() = %+v, want %+v", got, want)
	}
	if errs := DefaultConfig().Validate(); len(errs) != 0 {
		t.Errorf("DefaultConfig().Validate() = %v", errs)
	}
}

// The parent parses Config with the prefix SLUICE_.
func TestParseFromEnvironment(t *testing.T) {
	var c Config
	err := env.ParseWithOptions(&c, env.Options{Prefix: envPrefix, Environment: map[string]string{
		"SLUICE_UPSTREAM_AUTH":            "token-url",
		"SLUICE_TOKEN_URL":                "https://idp.test/token",
		"SLUICE_TOKEN_URL_HEADERS":        "Metadata-Flavor=Google, X-Tenant=blue",
		"SLUICE_OAUTH_CLIENT_ID_FILE":     "/run/id",
		"SLUICE_OAUTH_CLIENT_SECRET_FILE": "/run/secret",
		"SLUICE_OAUTH_SCOPES":             "a,b",
		"SLUICE_TOKEN_REFRESH_BEFORE":     "15m",
		"SLUICE_TOKEN_MIN_INTERVAL":       "1s",
		"SLUICE_AUTH_OVERRIDE":            "false",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != SourceTokenURL || c.Override || c.RefreshBefore != 15*time.Minute || c.MinInterval != time.Second ||
		!slices.Equal(c.OAuthScopes, []string{"a", "b"}) || c.FetchTimeout != 10*time.Second {
		t.Errorf("parsed %+v", c)
	}
	if errs := c.Validate(); len(errs) != 0 {
		t.Errorf("Validate() = %v", errs)
	}
	h, _ := parseHeaders(c.TokenURLHeaders)
	if !reflect.DeepEqual(h, []header{{"Metadata-Flavor", "Google"}, {"X-Tenant", "blue"}}) {
		t.Errorf("headers = %v", h)
	}
}

func TestValidate(t *testing.T) {
	f := func(name string, mod func(*Config), want ...string) {
		t.Helper()
		c := DefaultConfig()
		mod(&c)
		var got []string
		for _, err := range c.Validate() {
			v, _, _ := strings.Cut(err.Error(), ":")
			if !strings.HasPrefix(v, envPrefix) {
				t.Errorf("%s: error %q does not start with the variable name", name, err)
			}
			got = append(got, v)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: invalid variables %v, want %v (%v)", name, got, want, c.Validate())
		}
	}
	f("defaults", func(c *Config) {})
	f("empty source means none", func(c *Config) { c.Source = "" })
	f("unknown source", func(c *Config) { c.Source = "kerberos" }, "SLUICE_UPSTREAM_AUTH")
	f("stray settings with none", func(c *Config) { c.TokenFile = "/t"; c.AWSService = "s3" }, "SLUICE_TOKEN_FILE", "SLUICE_AWS_SERVICE")
	f("bearer-file ok", func(c *Config) { c.Source = SourceBearerFile; c.TokenFile = "/t" })
	f("bearer-file without file", func(c *Config) { c.Source = SourceBearerFile }, "SLUICE_TOKEN_FILE")
	f("bearer-file bad poll", func(c *Config) { c.Source = SourceBearerFile; c.TokenFile = "/t"; c.TokenFilePoll = 0 }, "SLUICE_TOKEN_FILE_POLL")
	f("bearer-file with token url", func(c *Config) { c.Source = SourceBearerFile; c.TokenFile = "/t"; c.TokenURL = "http://x" }, "SLUICE_TOKEN_URL")
	f("token-url ok", func(c *Config) { c.Source = SourceTokenURL; c.TokenURL = "http://169.254.169.254/token" })
	f("token-url missing", func(c *Config) { c.Source = SourceTokenURL }, "SLUICE_TOKEN_URL")
	for _, u := range []string{"ftp://x/", "/relative", "http://", "http://%zz"} {
		f("token-url "+u, func(c *Config) { c.Source = SourceTokenURL; c.TokenURL = u }, "SLUICE_TOKEN_URL")
	}
	f("token-url bad headers", func(c *Config) {
		c.Source = SourceTokenURL
		c.TokenURL = "http://x/"
		c.TokenURLHeaders = "Bad Name=1"
	}, "SLUICE_TOKEN_URL_HEADERS")
	// A header written as HTTP has it, its credential before the first
	// '=': the problem names the item, never quotes it.
	c := DefaultConfig()
	c.Source, c.TokenURL, c.TokenURLHeaders = SourceTokenURL, "http://x/", "Authorization: Bearer c2VjcmV0LXZhdWx0LXRva2Vu=="
	if errs := c.Validate(); len(errs) != 1 || strings.Contains(errs[0].Error(), "c2VjcmV0") {
		t.Errorf("a header written Name: Value: %v, want one problem that does not quote it", errs)
	}
	f("oauth id without secret", func(c *Config) {
		c.Source = SourceTokenURL
		c.TokenURL = "http://x/"
		c.OAuthClientIDFile = "/id"
	}, "SLUICE_OAUTH_CLIENT_SECRET_FILE")
	f("oauth secret without id", func(c *Config) {
		c.Source = SourceTokenURL
		c.TokenURL = "http://x/"
		c.OAuthClientSecretFile = "/s"
	}, "SLUICE_OAUTH_CLIENT_ID_FILE")
	f("scopes without oauth", func(c *Config) {
		c.Source = SourceTokenURL
		c.TokenURL = "http://x/"
		c.OAuthScopes = []string{"a"}
	}, "SLUICE_OAUTH_SCOPES")
	f("scope with a space", func(c *Config) {
		c.Source = SourceTokenURL
		c.TokenURL = "http://x/"
		c.OAuthClientIDFile, c.OAuthClientSecretFile = "/id", "/s"
		c.OAuthScopes = []string{"a b"}
	}, "SLUICE_OAUTH_SCOPES")
	f("aws ok without region", func(c *Config) { c.Source = SourceAWSSigV4; c.AWSService = "aoss" })
	f("aws without service", func(c *Config) { c.Source = SourceAWSSigV4 }, "SLUICE_AWS_SERVICE")
	f("aws bad names", func(c *Config) { c.Source = SourceAWSSigV4; c.AWSService = "S3"; c.AWSRegion = "us east" }, "SLUICE_AWS_SERVICE", "SLUICE_AWS_REGION")
	f("durations", func(c *Config) {
		c.Source = SourceAWSSigV4
		c.AWSService = "es"
		c.RefreshBefore, c.MinInterval, c.FetchTimeout, c.BackoffMax = 0, -time.Second, 0, 0
	}, "SLUICE_TOKEN_REFRESH_BEFORE", "SLUICE_TOKEN_MIN_INTERVAL", "SLUICE_TOKEN_FETCH_TIMEOUT", "SLUICE_TOKEN_BACKOFF_MAX")
	f("backoff below min interval", func(c *Config) {
		c.Source = SourceAWSSigV4
		c.AWSService = "es"
		c.MinInterval, c.BackoffMax = time.Minute, time.Second
	}, "SLUICE_TOKEN_BACKOFF_MAX")
}

func TestRedacted(t *testing.T) {
	c := testConfig(SourceTokenURL)
	c.TokenURL = "https://user:pw@idp.test/token?api_key=k3y"
	c.TokenURLHeaders = "Metadata-Flavor=Google,Authorization=Bearer s3cr3t,X-Api-Key=k3y"
	r := c.Redacted()
	if got := r["SLUICE_TOKEN_URL_HEADERS"]; got != "Metadata-Flavor=Google,Authorization=<redacted>,X-Api-Key=<redacted>" {
		t.Errorf("headers = %q", got)
	}
	for k, v := range r {
		if !strings.HasPrefix(k, envPrefix) {
			t.Errorf("key %q lacks the prefix", k)
		}
		for _, s := range []string{"s3cr3t", "k3y", ":pw@"} {
			if strings.Contains(v, s) {
				t.Errorf("%s = %q leaks %q", k, v, s)
			}
		}
	}
	if r["SLUICE_UPSTREAM_AUTH"] != "token-url" || r["SLUICE_TOKEN_REFRESH_BEFORE"] != "5m0s" {
		t.Errorf("Redacted() = %v", r)
	}
	// Every env variable of Config appears in Redacted.
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		if tag := typ.Field(i).Tag.Get("env"); tag != "" {
			if _, ok := r[envPrefix+tag]; !ok {
				t.Errorf("Redacted() lacks %s%s", envPrefix, tag)
			}
		}
	}
}

func TestParseHeaders(t *testing.T) {
	f := func(in string, want []header, wantErr bool) {
		t.Helper()
		got, err := parseHeaders(in)
		if (err != nil) != wantErr || (!wantErr && !reflect.DeepEqual(got, want)) {
			t.Errorf("parseHeaders(%q) = %v, %v; want %v, error %v", in, got, err, want, wantErr)
		}
	}
	f("", nil, false)
	f(" , ", nil, false)
	f("Metadata-Flavor=Google", []header{{"Metadata-Flavor", "Google"}}, false)
	f("A=1, B = two words ,C=", []header{{"A", "1"}, {"B", "two words"}, {"C", ""}}, false)
	f("A=x=y", []header{{"A", "x=y"}}, false)
	f("NoValue", nil, true)
	f("=v", nil, true)
	f("Bad Name=v", nil, true)
	f("A=\x01", nil, true)
}

func FuzzParseHeaders(f *testing.F) {
	f.Add("Metadata-Flavor=Google,X-A=b")
	f.Add("a=b=c, ,d=")
	f.Fuzz(func(t *testing.T, s string) {
		hs, err := parseHeaders(s)
		if err != nil {
			return
		}
		parts := make([]string, 0, len(hs))
		for _, h := range hs {
			if !isToken(h.name) || strings.ContainsAny(h.value, "\r\n,") {
				t.Fatalf("parseHeaders(%q) accepted %q=%q", s, h.name, h.value)
			}
			parts = append(parts, h.name+"="+h.value)
		}
		again, err := parseHeaders(strings.Join(parts, ","))
		if err != nil || !reflect.DeepEqual(again, hs) {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}
