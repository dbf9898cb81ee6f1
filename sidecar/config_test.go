package sidecar

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/state"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, warnings, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://127.0.0.1:8428"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %v", warnings)
	}
	if cfg.ListenAddr != "127.0.0.1:8080" || cfg.UpstreamTimeout != 30*time.Second || cfg.RetryBodyMax != 8<<20 ||
		cfg.BufferBudget != 256<<20 || cfg.InitialRate != 50 || cfg.MaxRetryAfter != time.Minute || cfg.Job != "default" {
		t.Errorf("unexpected defaults: %+v", cfg)
	}
	if cfg.AutoCancelCauses != "store_throttling,upstream_timeouts" || cfg.DefaultJobAutoCancelCauses != "none" {
		t.Errorf("auto-cancel causes: %q, default job's %q", cfg.AutoCancelCauses, cfg.DefaultJobAutoCancelCauses)
	}
	for _, ok := range []string{"none", "upstream_errors, upstream_unreachable", "loader_idle,probe_no_progress,store_throttling"} {
		if _, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_AUTO_CANCEL_CAUSES=" + ok, "SLUICE_DEFAULT_JOB_AUTO_CANCEL_CAUSES=" + ok}); err != nil {
			t.Errorf("causes %q: %v", ok, err)
		}
	}
	cfg, _, err = LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_RATE_UNIT=bytes"})
	if err != nil || cfg.InitialRate != 1<<20 || cfg.MinRate != 16<<10 {
		t.Errorf("bytes defaults: %v %v %v", err, cfg.InitialRate, cfg.MinRate)
	}
}

// TestConfigErrorsNameTheVariable: every mistake is reported, each naming
// its variable.
func TestConfigErrorsNameTheVariable(t *testing.T) {
	f := func(name string, env []string, want ...string) {
		t.Helper()
		_, _, err := LoadConfig(env)
		if err == nil {
			t.Errorf("%s: no error", name)
			return
		}
		ce, ok := err.(*ConfigError)
		if !ok {
			t.Errorf("%s: error %T, want *ConfigError", name, err)
			return
		}
		for _, w := range want {
			found := false
			for _, p := range ce.Problems {
				if strings.HasPrefix(p, w) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: problems %q do not name %s", name, ce.Problems, w)
			}
		}
	}
	up := "SLUICE_UPSTREAM_URL=http://s"
	f("missing upstream", nil, "SLUICE_UPSTREAM_URL")
	f("bad url", []string{"SLUICE_UPSTREAM_URL=ftp://x"}, "SLUICE_UPSTREAM_URL")
	f("relative url", []string{"SLUICE_UPSTREAM_URL=/just/a/path"}, "SLUICE_UPSTREAM_URL")
	f("negative rate", []string{up, "SLUICE_MIN_RATE=-1"}, "SLUICE_MIN_RATE")
	f("unknown stall cause", []string{up, "SLUICE_AUTO_CANCEL_CAUSES=store_throttling,loader_hung"}, "SLUICE_AUTO_CANCEL_CAUSES")
	f("stall cause of the default job", []string{up, "SLUICE_DEFAULT_JOB_AUTO_CANCEL_CAUSES=throttling"}, "SLUICE_DEFAULT_JOB_AUTO_CANCEL_CAUSES")
	f("min > max", []string{up, "SLUICE_MIN_RATE=100", "SLUICE_MAX_RATE=10", "SLUICE_INITIAL_RATE=50"}, "SLUICE_MIN_RATE")
	f("bad duration", []string{up, "SLUICE_UPSTREAM_TIMEOUT=soon"}, "SLUICE_UPSTREAM_TIMEOUT")
	f("negative duration", []string{up, "SLUICE_STALL_AFTER=-5m"}, "SLUICE_STALL_AFTER")
	f("stall window of 5ms (for 5m)", []string{up, "SLUICE_STALL_AFTER=5ms"}, "SLUICE_STALL_AFTER")
	f("bad size", []string{up, "SLUICE_RETRY_BODY_MAX=lots"}, "SLUICE_RETRY_BODY_MAX")
	f("bad bool", []string{up, "SLUICE_AUTO_CANCEL=maybe"}, "SLUICE_AUTO_CANCEL")
	f("bad int", []string{up, "SLUICE_QUEUE_MAX=many"}, "SLUICE_QUEUE_MAX")
	f("no idle connections", []string{up, "SLUICE_MAX_IDLE_CONNS=0"}, "SLUICE_MAX_IDLE_CONNS")
	f("unknown default job class", []string{up, "SLUICE_DEFAULT_JOB_PRIORITY=urgent"}, "SLUICE_DEFAULT_JOB_PRIORITY")
	f("bulk floor of 0", []string{up, "SLUICE_BULK_FLOOR=0"}, "SLUICE_BULK_FLOOR")
	f("bulk floor over 0.9", []string{up, "SLUICE_BULK_FLOOR=0.95"}, "SLUICE_BULK_FLOOR")
	f("bulk floor NaN", []string{up, "SLUICE_BULK_FLOOR=NaN"}, "SLUICE_BULK_FLOOR")
	f("bad profile", []string{up, "SLUICE_PROFILE=mongodb"}, "SLUICE_PROFILE")
	f("bad unit", []string{up, "SLUICE_RATE_UNIT=items"}, "SLUICE_RATE_UNIT")
	f("bad backpressure", []string{up, "SLUICE_BACKPRESSURE=drop"}, "SLUICE_BACKPRESSURE")
	f("bad addr", []string{up, "SLUICE_LISTEN_ADDR=8080"}, "SLUICE_LISTEN_ADDR")
	f("bad job", []string{up, "SLUICE_JOB=a b"}, "SLUICE_JOB")
	f("both url and command", []string{up, "SLUICE_CANCEL_URL=http://x/${JOB}", "SLUICE_CANCEL_COMMAND=true"}, "SLUICE_CANCEL_URL")
	f("bad command", []string{up, "SLUICE_CLEANUP_COMMAND=[1,2]"}, "SLUICE_CLEANUP_COMMAND")
	f("retry body over budget", []string{up, "SLUICE_RETRY_BODY_MAX=1GiB", "SLUICE_BUFFER_BUDGET=1MiB"}, "SLUICE_RETRY_BODY_MAX")
	f("host preserved and signed by sluice", []string{up, "SLUICE_PRESERVE_HOST=true", "SLUICE_UPSTREAM_AUTH=aws-sigv4", "SLUICE_AWS_SERVICE=es"}, "SLUICE_PRESERVE_HOST")
	f("no budget, bodies to buffer", []string{up, "SLUICE_BUFFER_BUDGET=0"}, "SLUICE_BUFFER_BUDGET")
	f("several at once", []string{"SLUICE_UPSTREAM_TIMEOUT=x", "SLUICE_MAX_CONCURRENCY=0"},
		"SLUICE_UPSTREAM_URL", "SLUICE_UPSTREAM_TIMEOUT", "SLUICE_MAX_CONCURRENCY")
}

// TestAdminTokenRules: a token that is short, repetitive or a placeholder
// left in a manifest is refused, naming the variable and never quoting the
// token; generated tokens and no token at all are accepted.
func TestAdminTokenRules(t *testing.T) {
	for _, tc := range []struct {
		name, token string
		want        string // "" when accepted, else a part of the problem
	}{
		{"unset", "", ""},
		{"openssl rand -hex 32", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", ""},
		{"openssl rand -base64 32", "q2Jx7Yb1kP0sVw9mZf3T8rLcN4aHd6uE5gQiWoXyBjM=", ""},
		{"uuid", "0b3f9c1e-5a7d-4e2b-9c8f-1d2e3f4a5b6c", ""},
		{"16 bytes", "k3Jd9-QzT1mVw0bW", ""},
		{"15 bytes", "k3Jd9-QzT1mVw0b", "too short to resist guessing: 15 bytes, want at least 16"},
		{"a word", "secret", "too short"},
		{"the old manifest's placeholder", "REPLACE-ME-with-openssl-rand-hex-32", `placeholder, not a generated token (it contains "replace")`},
		{"changeme", "changeme-changeme-changeme", `"changeme"`},
		{"change-me", "Change-Me-Before-Deploying", `"change-me"`},
		{"your token", "<your-token-goes-here>", `"your-token"`},
		{"angle bracket", "<admin token goes in here>", `"<"`},
		{"placeholder", "placeholder-value-0001", `"placeholder"`},
		{"example", "example-admin-token-1234", `"example"`},
		{"xxxx", "sluice-admin-XXXXXXXXXXXX", `"xxxx"`},
		{"token here", "admin-token-here-123456", `"token-here"`},
		{"todo", "TODO-generate-a-real-one", `"todo"`},
		{"one character", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "one character repeated"},
		{"zeros", "0000000000000000", "one character repeated"},
		{"one multibyte character", "éééééééééééééééé", "one character repeated"},
		// A Secret made from a file that ends in a newline: accepted, it
		// locked every caller out (net/http trims a header's value).
		{"a trailing newline", "9f86d081884c7d659a2feaa0c55ad015\n", "white space or a control character (at byte 32)"},
		{"a trailing space", "9f86d081884c7d659a2feaa0c55ad015 ", "at byte 32"},
		{"a leading space", " 9f86d081884c7d659a2feaa0c55ad015", "at byte 0"},
		{"CRLF", "9f86d081884c7d659a2feaa0c55ad015\r\n", "at byte 32"},
	} {
		_, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_ADMIN_TOKEN=" + tc.token})
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.name, err)
			}
			continue
		}
		ce, ok := err.(*ConfigError)
		if !ok || len(ce.Problems) != 1 {
			t.Errorf("%s: got %v, want one problem with SLUICE_ADMIN_TOKEN", tc.name, err)
			continue
		}
		p := ce.Problems[0]
		if !strings.HasPrefix(p, "SLUICE_ADMIN_TOKEN: ") || !strings.Contains(p, tc.want) ||
			!strings.HasSuffix(p, "; generate one with: openssl rand -hex 32") {
			t.Errorf("%s: problem %q, want SLUICE_ADMIN_TOKEN: …%s…; generate one with: openssl rand -hex 32", tc.name, p, tc.want)
		}
		if strings.Contains(p, tc.token) {
			t.Errorf("%s: problem %q quotes the token", tc.name, p)
		}
	}
}

// TestUnknownVariablesWarned: an unknown SLUICE_* variable is a warning,
// with the closest known variable when one is within three edits.
func TestUnknownVariablesWarned(t *testing.T) {
	for _, tc := range []struct {
		name, variable, want string
	}{
		{"plural", "SLUICE_UPSTREAM_TIMEOUTS", "unknown variable SLUICE_UPSTREAM_TIMEOUTS ignored; did you mean SLUICE_UPSTREAM_TIMEOUT?"},
		{"swapped letters", "SLUICE_UPSTREAM_ULR", "unknown variable SLUICE_UPSTREAM_ULR ignored; did you mean SLUICE_UPSTREAM_URL?"},
		{"three edits", "SLUICE_STAL_AFTR", "unknown variable SLUICE_STAL_AFTR ignored; did you mean SLUICE_STALL_AFTER?"},
		{"lower case", "SLUICE_profile", "unknown variable SLUICE_profile ignored (typo?)"},
		{"nothing close", "SLUICE_COLOUR_SCHEME", "unknown variable SLUICE_COLOUR_SCHEME ignored (typo?)"},
	} {
		_, warnings, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", tc.variable + "=3s", "OTHER=1"})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(warnings) != 1 || warnings[0] != tc.want {
			t.Errorf("%s: warnings = %q, want [%q]", tc.name, warnings, tc.want)
		}
	}
}

// TestDoubtfulSettingsWarned: a variable that the rest of the
// configuration turns off is a warning naming what would turn it on, and
// so is a control interval the shipped alert would take for a stopped
// loop; the sidecar still starts (unsetting the Redis URL alone is how
// fleet mode is switched off).
func TestDoubtfulSettingsWarned(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"fleet without Redis", []string{"SLUICE_FLEET_CAPACITY=4000", "SLUICE_FLEET_RESOURCE=dynamodb:orders"}, []string{
			"SLUICE_FLEET_RESOURCE ignored: fleet mode is off without SLUICE_FLEET_REDIS_URL",
			"SLUICE_FLEET_CAPACITY ignored: fleet mode is off without SLUICE_FLEET_REDIS_URL",
		}},
		{"fleet with Redis", []string{"SLUICE_FLEET_REDIS_URL=redis://127.0.0.1:6379", "SLUICE_FLEET_CAPACITY=4000"}, nil},
		{"generic scope with another profile", []string{"SLUICE_PROFILE=dynamodb", "SLUICE_SCOPE_GENERIC=path"}, []string{
			"SLUICE_SCOPE_GENERIC ignored: it applies to SLUICE_PROFILE=generic, not dynamodb",
		}},
		{"path depth without path scopes", []string{"SLUICE_SCOPE_GENERIC=job", "SLUICE_SCOPE_PATH_DEPTH=2"}, []string{
			"SLUICE_SCOPE_PATH_DEPTH ignored: it applies to SLUICE_SCOPE_GENERIC=path, not job",
		}},
		{"path depth with path scopes", []string{"SLUICE_SCOPE_GENERIC=path", "SLUICE_SCOPE_PATH_DEPTH=2"}, nil},
		{"a default spelled out", []string{"SLUICE_SCOPE_GENERIC=none"}, nil},
		{"scope settings with scopes off", []string{"SLUICE_SCOPES_MAX=0", "SLUICE_SCOPE_GENERIC=path"}, []string{
			"SLUICE_SCOPE_GENERIC ignored: scopes are off with SLUICE_SCOPES_MAX=0",
		}},
		{"key depth with another profile", []string{"SLUICE_PROFILE=elasticsearch", "SLUICE_SCOPE_KEY_DEPTH=2"}, []string{
			"SLUICE_SCOPE_KEY_DEPTH ignored: it applies to SLUICE_PROFILE=s3 or gcs, not elasticsearch",
		}},
		{"key depth for S3", []string{"SLUICE_PROFILE=s3", "SLUICE_SCOPE_KEY_DEPTH=2"}, nil},
		{"control interval of 10s", []string{"SLUICE_CONTROL_INTERVAL=10s"}, nil},
		{"control interval of a minute", []string{"SLUICE_CONTROL_INTERVAL=1m"}, []string{
			"SLUICE_CONTROL_INTERVAL=1m0s: the limiter adapts once per interval, and the shipped alert takes a heartbeat over a minute old for a stopped control loop; at most 10s is advised",
		}},
	} {
		_, warnings, err := LoadConfig(append([]string{"SLUICE_UPSTREAM_URL=http://s"}, tc.env...))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !slices.Equal(warnings, tc.want) {
			t.Errorf("%s: warnings = %q, want %q", tc.name, warnings, tc.want)
		}
	}
}

// TestRefusedIsNotAlsoIgnored: a variable that the configuration turns
// off but whose value is refused gets the error alone, not also a warning
// that it is ignored.
func TestRefusedIsNotAlsoIgnored(t *testing.T) {
	_, warnings, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_SCOPES_MAX=0", "SLUICE_SCOPE_GENERIC=bogus", "SLUICE_SCOPE_PATH_DEPTH=2"})
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.HasPrefix(ce.Problems[0], "SLUICE_SCOPE_GENERIC:") {
		t.Fatalf("err = %v, want SLUICE_SCOPE_GENERIC refused", err)
	}
	want := []string{"SLUICE_SCOPE_PATH_DEPTH ignored: scopes are off with SLUICE_SCOPES_MAX=0"}
	if !slices.Equal(warnings, want) {
		t.Errorf("warnings = %q, want %q", warnings, want)
	}
}

func TestLevenshtein(t *testing.T) {
	f := func(a, b string, want int) {
		t.Helper()
		if got := levenshtein(a, b); got != want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", a, b, got, want)
		}
		if got := levenshtein(b, a); got != want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", b, a, got, want)
		}
	}
	f("", "", 0)
	f("", "abc", 3)
	f("URL", "URL", 0)
	f("ULR", "URL", 2)
	f("kitten", "sitting", 3)
	f("TIMEOUTS", "TIMEOUT", 1)
}

// TestConfigErrorsOncePerVariable: one mistake is one problem. A value
// that does not parse is not reported again as the zero it left behind,
// nor as a conflict of that zero with another variable.
func TestConfigErrorsOncePerVariable(t *testing.T) {
	up := "SLUICE_UPSTREAM_URL=http://s"
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"float", []string{up, "SLUICE_INITIAL_RATE=abc"},
			[]string{`SLUICE_INITIAL_RATE: invalid value "abc": not a number`}},
		{"float with the others set", []string{up, "SLUICE_MIN_RATE=fast", "SLUICE_MAX_RATE=0.5"},
			[]string{`SLUICE_MIN_RATE: invalid value "fast": not a number`}},
		{"int", []string{up, "SLUICE_MAX_CONCURRENCY=lots"},
			[]string{`SLUICE_MAX_CONCURRENCY: invalid value "lots": not a whole number`}},
		{"int out of range", []string{up, "SLUICE_QUEUE_MAX=99999999999999999999"},
			[]string{`SLUICE_QUEUE_MAX: invalid value "99999999999999999999": out of range`}},
		{"duration", []string{up, "SLUICE_QUEUE_TIMEOUT=10 parsecs"},
			[]string{`SLUICE_QUEUE_TIMEOUT: invalid value "10 parsecs": not a duration (want e.g. 500ms, 30s, 5m)`}},
		{"duration compared with another", []string{up, "SLUICE_RETRY_BACKOFF_MAX=soon", "SLUICE_RETRY_BACKOFF_MIN=1m"},
			[]string{`SLUICE_RETRY_BACKOFF_MAX: invalid value "soon": not a duration (want e.g. 500ms, 30s, 5m)`}},
		{"size compared with another", []string{up, "SLUICE_BUFFER_BUDGET=big", "SLUICE_RETRY_BODY_MAX=512MiB"},
			[]string{`SLUICE_BUFFER_BUDGET: invalid value "big": not a size (want e.g. 8MiB, 512Mi, 1GB or a number of bytes)`}},
		{"bool", []string{up, "SLUICE_PIPELINE=maybe"},
			[]string{`SLUICE_PIPELINE: invalid value "maybe": not a boolean: want true/false, 1/0 or yes/no`}},
		// The bounds left unset are not blamed for a bad start.
		{"bad start alone", []string{up, "SLUICE_INITIAL_RATE=0"},
			[]string{"SLUICE_INITIAL_RATE: must be a positive number, got 0"}},
		{"negative start alone", []string{up, "SLUICE_INITIAL_RATE=-5"},
			[]string{"SLUICE_INITIAL_RATE: must be a positive number, got -5"}},
		{"NaN start alone", []string{up, "SLUICE_INITIAL_RATE=NaN"},
			[]string{"SLUICE_INITIAL_RATE: must be a positive number, got NaN"}},
		{"infinite start alone", []string{up, "SLUICE_INITIAL_RATE=Inf"},
			[]string{"SLUICE_INITIAL_RATE: must be a positive number, got +Inf"}},
		{"unknown unit leaves the rates to their defaults", []string{up, "SLUICE_RATE_UNIT=rows"},
			[]string{`SLUICE_RATE_UNIT: must be requests or bytes, got "rows"`}},
		{"two checks of one variable", []string{up, "SLUICE_CANCEL_URL=ftp://x", "SLUICE_CANCEL_COMMAND=true"},
			[]string{"SLUICE_CANCEL_URL: set either SLUICE_CANCEL_URL or SLUICE_CANCEL_COMMAND, not both"}},
		{"two mistakes, two problems", []string{"SLUICE_UPSTREAM_TIMEOUT=x", "SLUICE_MAX_CONCURRENCY=0"},
			[]string{`SLUICE_UPSTREAM_TIMEOUT: invalid value "x": not a duration (want e.g. 500ms, 30s, 5m)`,
				"SLUICE_UPSTREAM_URL: required: the store's base URL, e.g. http://127.0.0.1:8428",
				"SLUICE_MAX_CONCURRENCY: must be at least 1, got 0"}},
	} {
		_, _, err := LoadConfig(tc.env)
		ce, ok := err.(*ConfigError)
		if !ok {
			t.Errorf("%s: error %v, want a *ConfigError", tc.name, err)
			continue
		}
		if !slices.Equal(ce.Problems, tc.want) {
			t.Errorf("%s: problems\n  %s\nwant\n  %s", tc.name, strings.Join(ce.Problems, "\n  "), strings.Join(tc.want, "\n  "))
		}
	}
}

// TestConfigBooleans: every boolean variable takes what strconv.ParseBool
// takes, in any case, and yes/no.
func TestConfigBooleans(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"true", true}, {"TRUE", true}, {"True", true}, {"t", true}, {"1", true}, {"yes", true}, {"Yes", true}, {" yes ", true},
		{"false", false}, {"FALSE", false}, {"f", false}, {"0", false}, {"no", false}, {"NO", false},
	} {
		cfg, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_PIPELINE=" + tc.in, "SLUICE_AUTO_CANCEL=" + tc.in})
		if err != nil || cfg.Pipeline != tc.want || cfg.AutoCancel != tc.want {
			t.Errorf("%q: pipeline %v, auto-cancel %v, %v; want %v", tc.in, cfg.Pipeline, cfg.AutoCancel, err, tc.want)
		}
	}
	for _, bad := range []string{"maybe", "on", "2", "y"} {
		_, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_PIPELINE=" + bad})
		if err == nil || !strings.Contains(err.Error(), "want true/false, 1/0 or yes/no") {
			t.Errorf("%q: %v, want the accepted values listed", bad, err)
		}
	}
}

// TestAdminURLWithoutScheme: SLUICE_ADMIN_URL as an operator writes it.
func TestAdminURLWithoutScheme(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:9090", "http://127.0.0.1:9090"},
		{"localhost:9090", "http://localhost:9090"},
		{"sluice.ns.svc:9090/", "http://sluice.ns.svc:9090/"},
		{":9090", "http://127.0.0.1:9090"},
		{"https://sluice:9443", "https://sluice:9443"},
		{" http://127.0.0.1:9090 ", "http://127.0.0.1:9090"},
		{"", ""},
	} {
		if got := AdminBaseURL(tc.in); got != tc.want {
			t.Errorf("AdminBaseURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	cfg, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_ADMIN_URL=127.0.0.1:9091"})
	if err != nil || cfg.AdminURL != "http://127.0.0.1:9091" {
		t.Errorf("SLUICE_ADMIN_URL=127.0.0.1:9091: %q, %v", cfg.AdminURL, err)
	}
	if _, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_ADMIN_URL=ftp://x"}); err == nil {
		t.Errorf("SLUICE_ADMIN_URL=ftp://x accepted")
	}
}

func TestEffectiveRedactsSecrets(t *testing.T) {
	cfg, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_ADMIN_TOKEN=hunter2-hunter2-hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, kv := range cfg.Effective() {
		all.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	if strings.Contains(all.String(), "hunter2-hunter2-hunter2") || !strings.Contains(all.String(), "SLUICE_ADMIN_TOKEN=<redacted>") {
		t.Errorf("effective configuration leaks or hides the token:\n%s", all.String())
	}

	// A credential in the token URL's headers is as secret; a header that
	// carries none stays readable.
	cfg, _, err = LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_UPSTREAM_AUTH=token-url", "SLUICE_TOKEN_URL=http://t/",
		"SLUICE_TOKEN_URL_HEADERS=Authorization=Bearer hunter2-hunter2,Metadata-Flavor=Google"})
	if err != nil {
		t.Fatal(err)
	}
	all.Reset()
	for _, kv := range cfg.Effective() {
		all.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	if strings.Contains(all.String(), "hunter2-hunter2") || !strings.Contains(all.String(), "SLUICE_TOKEN_URL_HEADERS=Authorization=<redacted>,Metadata-Flavor=Google\n") {
		t.Errorf("effective configuration leaks or hides the token URL's headers:\n%s", all.String())
	}
}

// TestReadmeListsEveryVariable keeps the README's table and the
// configuration struct in step, and field names unique (errors are mapped
// back to variables by field name).
func TestReadmeListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, f := range configFields() {
		if !strings.Contains(string(readme), "`"+f.key+"`") {
			t.Errorf("README.md does not list %s", f.key)
		}
		if other, dup := seen[f.field]; dup {
			t.Errorf("field name %s used by %s and %s", f.field, other, f.key)
		}
		seen[f.field] = f.key
	}
}

func TestByteSize(t *testing.T) {
	f := func(in string, want ByteSize) {
		t.Helper()
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || b != want {
			t.Errorf("%q: got %d, %v; want %d", in, b, err, want)
		}
	}
	f("8MiB", 8<<20)
	f("512KiB", 512<<10)
	f("1GB", 1e9)
	f("1024", 1024)
	f(" 2 MiB ", 2<<20)
	f("512Mi", 512<<20) // as Kubernetes writes a quantity
	f("64Ki", 64<<10)
	f("2Gi", 2<<30)
	f("1Ti", 1<<40)
	f("1.5Gi", 3<<29)
	for _, bad := range []string{"", "MiB", "Mi", "-1", "1XB", "1e30GiB", "1Xi"} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseArgv(t *testing.T) {
	argv, err := ParseArgv(`["pegasus_shell","cancel_bulk_load","-f","${JOB}"]`)
	if err != nil || len(argv) != 4 || argv[3] != "${JOB}" {
		t.Errorf("json form: %v %v", argv, err)
	}
	argv, err = ParseArgv("curl -X DELETE http://x/${JOB}")
	if err != nil || len(argv) != 4 {
		t.Errorf("words form: %v %v", argv, err)
	}
	// Quotes in the words form would be passed on literally (no shell).
	for _, bad := range []string{"", "  ", "[]", `[""]`, "[1]", "[\"a\"", `sh -c "exit 1"`, `curl -d '{}' http://x/${JOB}`} {
		if _, err := ParseArgv(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzLoadConfig(f *testing.F) {
	f.Add("SLUICE_UPSTREAM_TIMEOUT", "30s")
	f.Add("SLUICE_RETRY_BODY_MAX", "8MiB")
	f.Add("SLUICE_CANCEL_COMMAND", `["a","${JOB}"]`)
	f.Add("SLUICE_MIN_RATE", "NaN")
	f.Fuzz(func(t *testing.T, key, value string) {
		_, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", key + "=" + value})
		if ce, ok := err.(*ConfigError); ok {
			for _, p := range ce.Problems {
				if !strings.HasPrefix(p, "SLUICE_") {
					t.Errorf("problem does not name a variable: %q", p)
				}
			}
		}
	})
}

// readmeDefaults returns the Default column of the README's configuration
// table, by variable.
func readmeDefaults(t *testing.T) map[string]string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(SLUICE_[A-Z0-9_]+)` \\|([^|]*)\\|")
	out := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		out[m[1]] = strings.TrimSpace(m[2])
	}
	return out
}

// TestReadmeDefaultsMatchConfig keeps the defaults in one place: what the
// README's table documents is what the envDefault tags (and, for the rates,
// fillDefaults) give, and the library defaults behind those variables
// agree with both, so that a library user and a sidecar user get the same.
// A literal default is the first `quoted` word of its cell; a cell without
// one (required, unset, computed) must have no envDefault.
func TestReadmeDefaultsMatchConfig(t *testing.T) {
	documented := readmeDefaults(t)
	literal := regexp.MustCompile("`([^`]*)`")
	for _, f := range configFields() {
		cell, ok := documented[f.key]
		if !ok {
			continue // TestReadmeListsEveryVariable reports it
		}
		want := ""
		if m := literal.FindStringSubmatch(cell); m != nil {
			want = m[1]
		}
		if f.def != want {
			t.Errorf("%s: README documents %q, envDefault is %q", f.key, cell, f.def)
		}
	}

	// The rates' defaults depend on SLUICE_RATE_UNIT: "50 req/s or 1 MiB/s".
	unitDefaults := func(unit string) Config {
		t.Helper()
		cfg, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_RATE_UNIT=" + unit})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	requests, bytes := unitDefaults("requests"), unitDefaults("bytes")
	for _, r := range []struct {
		key                 string
		requests, bytesUnit float64
	}{
		{"SLUICE_INITIAL_RATE", requests.InitialRate, bytes.InitialRate},
		{"SLUICE_MIN_RATE", requests.MinRate, bytes.MinRate},
		{"SLUICE_MAX_RATE", requests.MaxRate, bytes.MaxRate},
	} {
		cell := documented[r.key]
		reqs, byts, ok := strings.Cut(cell, " or ")
		n, err := strconv.ParseFloat(strings.TrimSuffix(reqs, " req/s"), 64)
		var b ByteSize
		if !ok || err != nil || b.UnmarshalText([]byte(strings.TrimSuffix(byts, "/s"))) != nil {
			t.Errorf("%s: README cell %q is not \"N req/s or SIZE/s\"", r.key, cell)
			continue
		}
		if n != r.requests || float64(b) != r.bytesUnit {
			t.Errorf("%s: README documents %q, the defaults are %v req/s and %v B/s", r.key, cell, r.requests, r.bytesUnit)
		}
	}

	// Library defaults behind a variable.
	def := requests
	for _, l := range []struct {
		key       string
		cfg, want any
	}{
		{"SLUICE_INITIAL_CONCURRENCY", def.InitialConcurrency, limiter.DefaultInitialConcurrency},
		{"SLUICE_CONTROL_INTERVAL", def.ControlInterval, limiter.DefaultWindow},
		{"SLUICE_QUEUE_MAX", def.QueueMax, limiter.DefaultQueueMax},
		{"SLUICE_BULK_FLOOR", def.BulkFloor, limiter.DefaultBulkFloor},
		{"SLUICE_RETRY_BACKOFF_MIN", def.RetryBackoffMin, limiter.DefaultBackoffMin},
		{"SLUICE_RETRY_BACKOFF_MAX", def.RetryBackoffMax, limiter.DefaultBackoffMax},
		{"SLUICE_MAX_RETRY_AFTER", def.MaxRetryAfter, limiter.DefaultMaxRetryAfter},
		{"SLUICE_RETRY_BUDGET", def.RetryBudget, limiter.DefaultRetryRatio},
		{"SLUICE_MAX_JOBS", def.MaxJobs, state.DefaultMaxJobs},
		{"SLUICE_STALL_AFTER", def.StallAfter, state.DefaultStallAfter},
		{"SLUICE_CANCEL_GRACE", def.CancelGrace, state.DefaultCancelGrace},
		{"SLUICE_ACTION_TIMEOUT", def.ActionTimeout, state.DefaultActionTimeout},
		{"SLUICE_ACTION_RETRIES", def.ActionRetries, state.DefaultActionRetries},
		{"SLUICE_CHECKPOINTS_RETAINED", def.CheckpointsRetained, state.DefaultCheckpointsRetained},
		{"SLUICE_JOB_RETENTION", def.JobRetention, state.DefaultRetention},
	} {
		if l.cfg != l.want {
			t.Errorf("%s defaults to %v, the library's default is %v", l.key, l.cfg, l.want)
		}
	}
}

// TestFillDefaults: the rates left unset take their unit's defaults, kept
// within what is set; a rate set (to 0 too) is left for validate to judge,
// and an unknown unit (validate's to report) fills those of requests.
func TestFillDefaults(t *testing.T) {
	f := func(name, unit string, set map[string]string, in, want [3]float64) {
		t.Helper()
		c := Config{RateUnit: unit, InitialRate: in[0], MinRate: in[1], MaxRate: in[2]}
		c.fillDefaults(set)
		if got := [3]float64{c.InitialRate, c.MinRate, c.MaxRate}; got != want {
			t.Errorf("%s: initial, min, max = %v, want %v", name, got, want)
		}
	}
	none := map[string]string{}
	f("requests", "requests", none, [3]float64{}, [3]float64{50, 1, 100000})
	f("bytes", "bytes", none, [3]float64{}, [3]float64{1 << 20, 16 << 10, 10 << 30})
	f("initial above the max", "requests", map[string]string{"SLUICE_INITIAL_RATE": "1e9"}, [3]float64{1e9}, [3]float64{1e9, 1, 1e9})
	f("initial below the min", "bytes", map[string]string{"SLUICE_INITIAL_RATE": "100"}, [3]float64{100}, [3]float64{100, 100, 10 << 30})
	f("set to 0", "requests", map[string]string{"SLUICE_INITIAL_RATE": "0", "SLUICE_MIN_RATE": "0", "SLUICE_MAX_RATE": "0"}, [3]float64{}, [3]float64{})
	f("unknown unit", "items", none, [3]float64{}, [3]float64{50, 1, 100000})
}

// TestReadmeConfigurationGrouped keeps the README's configuration readable
// as it grows: the variables sit in groups (proxy, limiter, retries, jobs,
// credentials, fleet, in that order, others may come between), each
// introduced by a sentence, every variable in exactly one row, and the
// variables of one feature in that feature's group.
func TestReadmeConfigurationGrouped(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")

	row := regexp.MustCompile("^\\| `(SLUICE_[A-Z0-9_]+)` \\|")
	groupOf := map[string]string{}
	var groups []string
	group, intro := "", false
	for _, line := range strings.Split(section, "\n") {
		switch {
		case strings.HasPrefix(line, "### "):
			group, intro = strings.ToLower(strings.TrimPrefix(line, "### ")), false
			groups = append(groups, group)
		case strings.HasPrefix(line, "| Variable |"):
			if group == "" {
				t.Errorf("a configuration table before any group heading")
			} else if !intro {
				t.Errorf("group %q has no sentence introducing it", group)
			}
		case row.MatchString(line):
			key := row.FindStringSubmatch(line)[1]
			if prev, dup := groupOf[key]; dup {
				t.Errorf("%s is listed in %q and in %q", key, prev, group)
			}
			groupOf[key] = group
		case strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "|"):
			intro = true
		}
	}

	want := []string{"proxy", "limiter", "retries", "jobs", "credentials", "fleet"}
	i := 0
	for _, g := range groups {
		if i < len(want) && strings.HasPrefix(g, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("configuration groups %q: want, in order, groups starting with %q", groups, want)
	}

	feature := map[string]string{
		"SLUICE_FLEET_":   "fleet",
		"SLUICE_TOKEN_":   "credentials",
		"SLUICE_OAUTH_":   "credentials",
		"SLUICE_AWS_":     "credentials",
		"SLUICE_RETRY_":   "retries",
		"SLUICE_CANCEL_":  "jobs",
		"SLUICE_CLEANUP_": "jobs",
		"SLUICE_ACTION_":  "jobs",
		"SLUICE_QUEUE_":   "limiter",
	}
	for _, f := range configFields() {
		g, ok := groupOf[f.key]
		if !ok {
			t.Errorf("%s has no row in the README's configuration groups", f.key)
			continue
		}
		for prefix, wantGroup := range feature {
			if strings.HasPrefix(f.key, prefix) && !strings.HasPrefix(g, wantGroup) {
				t.Errorf("%s is in group %q, want the %s group", f.key, g, wantGroup)
			}
		}
	}
}

// TestConfigRefusesWhatRunWouldRefuse: a value that LoadConfig accepts
// must start the sidecar; values the parts below refuse (or silently
// replace) are refused here, naming the variable, so that check-config
// and run agree and sluice exits 2, not 1, blaming the right variable.
func TestConfigRefusesWhatRunWouldRefuse(t *testing.T) {
	up := "SLUICE_UPSTREAM_URL=http://s"
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		// limiter.Config.Validate refuses a window under 1ms: NewServer
		// failed with "limiter: Config.Window=…", exit 1.
		{"control interval under 1ms", []string{up, "SLUICE_CONTROL_INTERVAL=500us"}, "SLUICE_CONTROL_INTERVAL"},
		{"control interval 1ns", []string{up, "SLUICE_CONTROL_INTERVAL=1ns"}, "SLUICE_CONTROL_INTERVAL"},
		// The limiter takes QueueMax 0 as its default, 1024: a queue of
		// 0 was silently a queue of 1024.
		{"queue of 0", []string{up, "SLUICE_QUEUE_MAX=0"}, "SLUICE_QUEUE_MAX"},
		// The job manager validates the pointer whether a probe URL is
		// set or not: run failed blaming SLUICE_STATE_DIR.
		{"probe pointer without /", []string{up, "SLUICE_PROGRESS_PROBE_POINTER=progress"}, "SLUICE_PROGRESS_PROBE_POINTER"},
		// Credentials in the upstream URL are never sent (the proxy
		// copies scheme, host and path only): the store answers 401.
		{"upstream userinfo", []string{"SLUICE_UPSTREAM_URL=http://elastic:s3cret@es:9200"}, "SLUICE_UPSTREAM_URL"},
		{"upstream user only", []string{"SLUICE_UPSTREAM_URL=http://elastic@es:9200"}, "SLUICE_UPSTREAM_URL"},
		// Every attempt fails to dial.
		{"upstream port out of range", []string{"SLUICE_UPSTREAM_URL=http://es:99999"}, "SLUICE_UPSTREAM_URL"},
		{"upstream without a host name", []string{"SLUICE_UPSTREAM_URL=http://:9200"}, "SLUICE_UPSTREAM_URL"},
		// The proxy reads the CA file and refuses one it cannot read
		// or that holds no certificate: exit 2 from run, after
		// check-config had passed it.
		// The admin listener failed to bind: "address already in use".
		{"admin on the proxy's address", []string{up, "SLUICE_LISTEN_ADDR=127.0.0.1:9090", "SLUICE_ADMIN_ADDR=127.0.0.1:9090"}, "SLUICE_ADMIN_ADDR"},
		{"admin on every interface at the proxy's port", []string{up, "SLUICE_LISTEN_ADDR=127.0.0.1:8080", "SLUICE_ADMIN_ADDR=:8080"}, "SLUICE_ADMIN_ADDR"},
		{"CA file that is a directory", []string{up, "SLUICE_UPSTREAM_CA_FILE=" + t.TempDir()}, "SLUICE_UPSTREAM_CA_FILE"},
		{"CA file without a certificate", []string{up, "SLUICE_UPSTREAM_CA_FILE=" + notPEM}, "SLUICE_UPSTREAM_CA_FILE"},
	} {
		_, _, err := LoadConfig(tc.env)
		ce, ok := err.(*ConfigError)
		if !ok {
			t.Errorf("%s: error %v, want a *ConfigError naming %s", tc.name, err, tc.want)
			continue
		}
		if !slices.ContainsFunc(ce.Problems, func(p string) bool { return strings.HasPrefix(p, tc.want+":") }) {
			t.Errorf("%s: problems %q do not name %s", tc.name, ce.Problems, tc.want)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the problem quotes the password: %v", tc.name, err)
		}
	}
	for _, ok := range []string{"SLUICE_ADMIN_ADDR=127.0.0.2:8080", "SLUICE_ADMIN_ADDR=127.0.0.1:0", "SLUICE_CONTROL_INTERVAL=1ms", "SLUICE_QUEUE_MAX=1", "SLUICE_UPSTREAM_URL=https://es:9200/prefix?x=1", "SLUICE_UPSTREAM_URL=http://[::1]:9200"} {
		if _, _, err := LoadConfig([]string{up, ok}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// TestAcceptedConfigStarts: what LoadConfig accepts, NewServer builds
// (no StartupError, no error of a part that names its own field).
func TestAcceptedConfigStarts(t *testing.T) {
	for _, env := range [][]string{
		{"CONTROL_INTERVAL=1ms"},
		{"PROGRESS_PROBE_POINTER=/done"},
	} {
		cfg := testConfig(t, env...)
		s, err := NewServer(cfg, Options{Store: &state.MemStore{}})
		if err != nil {
			t.Errorf("%v: NewServer: %v", env, err)
			continue
		}
		s.jobs.Close()
	}
}

// TestUnsetStartKeptWithinSetLimits: a ceiling (or floor) set alone is no
// mistake: the start left unset follows it, as the limits left unset
// follow a start that is set (TestFillDefaults), and as the limiter's own
// default concurrency is min(4, MaxConcurrency). Before, SLUICE_MAX_RATE=10
// alone was refused as "SLUICE_INITIAL_RATE: 50 is outside […]", a
// variable the operator never set.
func TestUnsetStartKeptWithinSetLimits(t *testing.T) {
	for _, tc := range []struct {
		env         []string
		rate        float64
		concurrency int
	}{
		{[]string{"SLUICE_MAX_RATE=10"}, 10, 4},
		{[]string{"SLUICE_MIN_RATE=100"}, 100, 4},
		{[]string{"SLUICE_RATE_UNIT=bytes", "SLUICE_MAX_RATE=65536"}, 65536, 4},
		{[]string{"SLUICE_MAX_CONCURRENCY=2"}, 50, 2},
		{[]string{"SLUICE_MAX_CONCURRENCY=1", "SLUICE_MAX_RATE=5", "SLUICE_MIN_RATE=2"}, 5, 1},
		// Empty is unset, as for the variables with a default in their
		// tag: a manifest template's SLUICE_MAX_RATE= is not a rate of 0.
		{[]string{"SLUICE_MAX_RATE=", "SLUICE_MIN_RATE=", "SLUICE_INITIAL_RATE="}, 50, 4},
		{[]string{"SLUICE_MAX_CONCURRENCY=2", "SLUICE_INITIAL_CONCURRENCY="}, 50, 2},
	} {
		cfg, _, err := LoadConfig(append([]string{"SLUICE_UPSTREAM_URL=http://s"}, tc.env...))
		if err != nil {
			t.Errorf("%v: %v", tc.env, err)
			continue
		}
		if cfg.InitialRate != tc.rate || cfg.InitialConcurrency != tc.concurrency {
			t.Errorf("%v: initial rate %v, concurrency %d; want %v, %d", tc.env, cfg.InitialRate, cfg.InitialConcurrency, tc.rate, tc.concurrency)
		}
	}
	// What is set is still judged as set.
	for _, env := range [][]string{
		{"SLUICE_MAX_CONCURRENCY=2", "SLUICE_INITIAL_CONCURRENCY=4"},
		{"SLUICE_MAX_RATE=10", "SLUICE_INITIAL_RATE=50"},
		{"SLUICE_MIN_RATE=100", "SLUICE_MAX_RATE=10"},
	} {
		if _, _, err := LoadConfig(append([]string{"SLUICE_UPSTREAM_URL=http://s"}, env...)); err == nil {
			t.Errorf("%v: no error", env)
		}
	}
}
