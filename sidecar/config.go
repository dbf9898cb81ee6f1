package sidecar

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caarlos0/env/v10"

	"github.com/sluice-dev/sluice/internal/redact"
	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/auth"
	"github.com/sluice-dev/sluice/sidecar/classify"
	"github.com/sluice-dev/sluice/state"
)

// EnvPrefix is the prefix of every configuration variable.
const EnvPrefix = "SLUICE_"

// Config is sluice's whole configuration, read from SLUICE_* environment
// variables. Every field is listed in the README's table; TestReadmeListsEveryVariable
// keeps the two in step.
type Config struct {
	// Proxy.
	ListenAddr      string        `env:"LISTEN_ADDR" envDefault:"127.0.0.1:8080"`
	ListenPublicOK  bool          `env:"LISTEN_PUBLIC_OK" envDefault:"false"`
	UpstreamURL     string        `env:"UPSTREAM_URL"`
	PreserveHost    bool          `env:"PRESERVE_HOST" envDefault:"false"`
	UpstreamCAFile  string        `env:"UPSTREAM_CA_FILE"`
	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"30s"`
	AnswerTimeout   time.Duration `env:"ANSWER_TIMEOUT" envDefault:"10m"`
	Profile         string        `env:"PROFILE" envDefault:"generic"`

	// Scopes: a limiter per throttled table, bucket prefix or index
	// (package proxy, scopes.go); checked by validateScopes.
	ScopesMax      int    `env:"SCOPES_MAX" envDefault:"64"`
	ScopeKeyDepth  int    `env:"SCOPE_KEY_DEPTH" envDefault:"1"`
	ScopePathDepth int    `env:"SCOPE_PATH_DEPTH" envDefault:"1"`
	ScopeGeneric   string `env:"SCOPE_GENERIC" envDefault:"none"`
	ScopeBucket    string `env:"SCOPE_BUCKET"`

	// Adaptive limits.
	RateUnit           string        `env:"RATE_UNIT" envDefault:"requests"`
	InitialRate        float64       `env:"INITIAL_RATE"`
	MinRate            float64       `env:"MIN_RATE"`
	MaxRate            float64       `env:"MAX_RATE"`
	InitialConcurrency int           `env:"INITIAL_CONCURRENCY" envDefault:"4"`
	MaxConcurrency     int           `env:"MAX_CONCURRENCY" envDefault:"64"`
	MaxRetryAfter      time.Duration `env:"MAX_RETRY_AFTER" envDefault:"60s"`
	ControlInterval    time.Duration `env:"CONTROL_INTERVAL" envDefault:"500ms"`

	// Backpressure to the loader.
	Backpressure string        `env:"BACKPRESSURE" envDefault:"wait"`
	QueueMax     int           `env:"QUEUE_MAX" envDefault:"1024"`
	QueueTimeout time.Duration `env:"QUEUE_TIMEOUT" envDefault:"30s"`
	MaxIdleConns int           `env:"MAX_IDLE_CONNS" envDefault:"1024"`

	// Fair shares between jobs (limiter.fairQueue): the default job's
	// priority class, and the least share bulk keeps while live waits.
	DefaultJobPriority string  `env:"DEFAULT_JOB_PRIORITY" envDefault:"bulk"`
	BulkFloor          float64 `env:"BULK_FLOOR" envDefault:"0.1"`

	// Retries.
	RetryMax        int           `env:"RETRY_MAX" envDefault:"3"`
	RetryBackoffMin time.Duration `env:"RETRY_BACKOFF_MIN" envDefault:"100ms"`
	RetryBackoffMax time.Duration `env:"RETRY_BACKOFF_MAX" envDefault:"10s"`
	RetryBodyMax    ByteSize      `env:"RETRY_BODY_MAX" envDefault:"8MiB"`
	BufferBudget    ByteSize      `env:"BUFFER_BUDGET" envDefault:"256MiB"`
	RetryBudget     float64       `env:"RETRY_BUDGET" envDefault:"0.2"`
	RetryPost       bool          `env:"RETRY_POST" envDefault:"false"`
	Pipeline        bool          `env:"PIPELINE" envDefault:"false"`

	// Admin server, logs, shutdown.
	AdminAddr       string        `env:"ADMIN_ADDR" envDefault:":9090"`
	AdminToken      string        `env:"ADMIN_TOKEN" secret:"true"`
	AdminURL        string        `env:"ADMIN_URL" envDefault:"http://127.0.0.1:9090"`
	LogLevel        string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat       string        `env:"LOG_FORMAT" envDefault:"json"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`

	// Jobs.
	Job                 string        `env:"JOB" envDefault:"default"`
	MaxJobs             int           `env:"MAX_JOBS" envDefault:"1000"`
	StallAfter          time.Duration `env:"STALL_AFTER" envDefault:"5m"`
	CancelGrace         time.Duration `env:"CANCEL_GRACE" envDefault:"5m"`
	AutoCancel          bool          `env:"AUTO_CANCEL" envDefault:"true"`
	JobDeadline         time.Duration `env:"JOB_DEADLINE" envDefault:"0s"`
	CancelURL           string        `env:"CANCEL_URL"`
	CancelMethod        string        `env:"CANCEL_METHOD" envDefault:"POST"`
	CancelCommand       string        `env:"CANCEL_COMMAND"`
	CleanupURL          string        `env:"CLEANUP_URL"`
	CleanupMethod       string        `env:"CLEANUP_METHOD" envDefault:"POST"`
	CleanupCommand      string        `env:"CLEANUP_COMMAND"`
	ActionTimeout       time.Duration `env:"ACTION_TIMEOUT" envDefault:"30s"`
	ActionRetries       int           `env:"ACTION_RETRIES" envDefault:"5"`
	StateDir            string        `env:"STATE_DIR"`
	CheckpointsRetained int           `env:"CHECKPOINTS_RETAINED" envDefault:"5"`
	JobRetention        time.Duration `env:"JOB_RETENTION" envDefault:"24h"`
	ProgressProbeURL    string        `env:"PROGRESS_PROBE_URL"`
	ProgressProbePtr    string        `env:"PROGRESS_PROBE_POINTER" envDefault:"/progress"`

	// Stall remedies: which stall causes cancel a job, and which cancel the
	// default job (SLUICE_JOB, a stream that reopens once cleaned up).
	// Comma-separated cause names, or "none"; checked by
	// validateStallRemedies.
	AutoCancelCauses           string `env:"AUTO_CANCEL_CAUSES" envDefault:"store_throttling,upstream_timeouts"`
	DefaultJobAutoCancelCauses string `env:"DEFAULT_JOB_AUTO_CANCEL_CAUSES" envDefault:"none"`

	// Hold mode and sluice's pushback (checked by validateHold).
	HoldMax        time.Duration `env:"HOLD_MAX" envDefault:"0s"`
	PushbackStatus int           `env:"PUSHBACK_STATUS" envDefault:"429"`

	// Upstream credentials.
	Auth auth.Config

	// Fleet mode (package fleet): sidecars that write to one store share
	// its capacity through Redis. Off unless FLEET_REDIS_URL is set;
	// checked by validateFleet (fleet.go).
	FleetRedisURL          string        `env:"FLEET_REDIS_URL"`
	FleetRedisCluster      bool          `env:"FLEET_REDIS_CLUSTER" envDefault:"false"`
	FleetRedisPasswordFile string        `env:"FLEET_REDIS_PASSWORD_FILE"`
	FleetResource          string        `env:"FLEET_RESOURCE"`
	FleetCapacity          float64       `env:"FLEET_CAPACITY"`
	FleetWeight            float64       `env:"FLEET_WEIGHT" envDefault:"1"`
	FleetRefresh           time.Duration `env:"FLEET_REFRESH" envDefault:"1s"`
}

// ByteSize is a size in bytes that parses "8MiB", "512KiB", "1GB", "512Mi"
// (as Kubernetes writes it) or a plain number.
type ByteSize int64

// byteUnits are tried in order: the longer suffix of a pair ("KiB", "Ki")
// before the shorter one, which would match too.
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || !(n >= 0) || n*float64(mult) > 1<<62 { // !(n >= 0) also refuses NaN
		return errors.New("not a size (want e.g. 8MiB, 512Mi, 1GB or a number of bytes)")
	}
	*b = ByteSize(n * float64(mult))
	return nil
}

func (b ByteSize) String() string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return strconv.FormatInt(int64(b), 10)
}

// ConfigError lists every invalid variable. Each entry starts with the
// variable's name.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string { return strings.Join(e.Problems, "; ") }

// LoadConfig reads the configuration from environ (os.Environ() form) and
// validates it. The error, if any, is a *ConfigError naming every bad
// variable once. warnings lists unknown SLUICE_* variables (likely typos),
// each with the known variable closest to it when one is close.
func LoadConfig(environ []string) (cfg Config, warnings []string, err error) {
	envMap := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		envMap[k] = v
	}
	fields := configFields()
	byField := make(map[string]string, len(fields))
	known := make(map[string]bool, len(fields))
	secret := make(map[string]bool)
	for _, f := range fields {
		byField[f.field] = f.key
		known[f.key] = true
		secret[f.key] = f.secret
	}
	for k := range envMap {
		if strings.HasPrefix(k, EnvPrefix) && !known[k] {
			warnings = append(warnings, unknownVariable(k, fields))
			if k == EnvPrefix {
				// The bare prefix would name the nested auth struct itself.
				delete(envMap, k)
			}
		}
	}
	sort.Strings(warnings)

	// A value that does not parse is reported once, here; its variable
	// then takes its default, so that validate does not also report the
	// zero it was left with, nor compare other variables with that zero.
	var problems []string
	failed := map[string]bool{}
	opts := env.Options{Prefix: EnvPrefix, Environment: envMap, FuncMap: map[reflect.Type]env.ParserFunc{
		reflect.TypeOf(false): parseBool,
	}}
	perr := env.ParseWithOptions(&cfg, opts)
	var agg env.AggregateError
	if errors.As(perr, &agg) {
		for _, e := range agg.Errors {
			var pe env.ParseError
			if errors.As(e, &pe) {
				key := byField[pe.Name]
				val := strconv.Quote(envMap[key])
				if secret[key] {
					val = redact.Placeholder
				}
				problems = append(problems, fmt.Sprintf("%s: invalid value %s: %s", key, val, parseReason(pe.Err, pe.Type)))
				failed[key] = true
				continue
			}
			problems = append(problems, e.Error())
		}
	} else if perr != nil {
		problems = append(problems, perr.Error())
	}
	if len(failed) > 0 {
		parsed := make(map[string]string, len(envMap))
		for k, v := range envMap {
			if !failed[k] {
				parsed[k] = v
			}
		}
		envMap, opts.Environment, cfg = parsed, parsed, Config{}
		if err := env.ParseWithOptions(&cfg, opts); err != nil {
			problems = append(problems, err.Error()) // a default that does not parse: a bug, but say so
		}
	}
	cfg.AdminURL = AdminBaseURL(cfg.AdminURL)
	cfg.fillDefaults(envMap)
	warnings = append(warnings, cfg.doubtful(envMap, fields)...)
	var checks []string
	checks = append(checks, cfg.validate()...)
	checks = append(checks, cfg.validateStallRemedies()...)
	checks = append(checks, cfg.validateHold()...)
	checks = append(checks, cfg.validateFleet()...)
	for _, e := range cfg.Auth.Validate() {
		checks = append(checks, e.Error())
	}
	if cfg.PreserveHost && cfg.Auth.Source == auth.SourceAWSSigV4 {
		// sluice would sign for the loader's Host (its own address, as the
		// loader reached it) and send that Host to AWS, which routes and
		// checks signatures by it: every write would be refused.
		// PRESERVE_HOST is for loaders that sign their own requests.
		checks = append(checks, EnvPrefix+"PRESERVE_HOST: true with SLUICE_UPSTREAM_AUTH=aws-sigv4 would sign and send the loader's Host instead of the store's: unset one of them")
	}
	problems = onePerVariable(problems, checks, failed)
	if len(problems) > 0 {
		// A variable refused is not also "ignored": one line for it.
		warnings = slices.DeleteFunc(warnings, func(w string) bool {
			key, _, _ := strings.Cut(w, " ")
			key, _, _ = strings.Cut(key, "=")
			return slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, key+":") })
		})
		return cfg, warnings, &ConfigError{Problems: problems}
	}
	return cfg, warnings, nil
}

// onePerVariable appends to parsed (the values that did not parse) the
// problems checks found, keeping the first problem of each variable and
// dropping those that quote a variable whose value did not parse: one
// mistake, one line. Every problem starts with its variable's name.
func onePerVariable(parsed, checks []string, failed map[string]bool) []string {
	seen := map[string]bool{}
	for _, p := range parsed {
		key, _, _ := strings.Cut(p, ":")
		seen[key] = true
	}
	out := parsed
	for _, p := range checks {
		key, _, _ := strings.Cut(p, ":")
		if seen[key] || mentionsAny(p, failed) {
			continue
		}
		seen[key] = true
		out = append(out, p)
	}
	return out
}

// mentionsAny reports whether the text names one of the variables as a
// whole word (SLUICE_MAX_RATE, not SLUICE_MAX_RATES).
func mentionsAny(text string, vars map[string]bool) bool {
	for v := range vars {
		for off := 0; ; {
			i := strings.Index(text[off:], v)
			if i < 0 {
				break
			}
			i += off
			end := i + len(v)
			if (i == 0 || !isVarByte(text[i-1])) && (end == len(text) || !isVarByte(text[end])) {
				return true
			}
			off = end
		}
	}
	return false
}

func isVarByte(c byte) bool {
	return c == '_' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// parseBool accepts what strconv.ParseBool does (true/false, 1/0, t/f in
// the three cases it knows) in any case, and yes/no, which manifests and
// Helm values often hold; its error lists what is accepted, since
// "invalid syntax" alone leaves the reader guessing.
func parseBool(s string) (any, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "t", "1", "yes":
		return true, nil
	case "false", "f", "0", "no":
		return false, nil
	}
	return nil, errors.New("not a boolean: want true/false, 1/0 or yes/no")
}

// unknownVariable is the warning for an unknown SLUICE_* variable. The
// suggestion is the known variable at the smallest edit distance, if that
// is at most maxSuggestDistance: a letter swapped, dropped or doubled, or
// a plural, not a different word.
func unknownVariable(name string, fields []configField) string {
	best, bestDist := "", maxSuggestDistance+1
	for _, f := range fields {
		if d := levenshtein(name, f.key); d < bestDist || d == bestDist && f.key < best {
			best, bestDist = f.key, d
		}
	}
	if best == "" {
		return fmt.Sprintf("unknown variable %s ignored (typo?)", name)
	}
	return fmt.Sprintf("unknown variable %s ignored; did you mean %s?", name, best)
}

const maxSuggestDistance = 3

const maxControlInterval = 10 * time.Second

// doubtful warns of settings that are valid but likely a mistake:
// variables that are set but do nothing with the rest of the
// configuration, so that a sidecar started without the setting that turns
// them on says so instead of running as if they were not there, and a
// control interval that outlasts the shipped alert's patience. Warnings,
// not errors: unsetting SLUICE_FLEET_REDIS_URL alone is how an operator
// turns fleet mode off in a hurry, and a benchmark holds the limits still
// with an interval longer than its run.
func (c *Config) doubtful(set map[string]string, fields []configField) []string {
	isSet := func(key string) bool { return set[key] != "" }
	var w []string
	if c.ControlInterval > maxControlInterval {
		w = append(w, fmt.Sprintf("%sCONTROL_INTERVAL=%v: the limiter adapts once per interval, and the shipped alert takes a heartbeat over a minute old for a stopped control loop; at most %v is advised", EnvPrefix, c.ControlInterval, maxControlInterval))
	}
	if c.FleetRedisURL == "" {
		for _, f := range fields {
			if strings.HasPrefix(f.key, EnvPrefix+"FLEET_") && isSet(f.key) {
				w = append(w, f.key+" ignored: fleet mode is off without SLUICE_FLEET_REDIS_URL")
			}
		}
	}
	profile, err := classify.ParseProfile(c.Profile)
	if err == nil && c.ScopesMax == 0 {
		for _, key := range []string{"SCOPE_KEY_DEPTH", "SCOPE_BUCKET", "SCOPE_GENERIC", "SCOPE_PATH_DEPTH"} {
			if isSet(EnvPrefix + key) {
				w = append(w, EnvPrefix+key+" ignored: scopes are off with SLUICE_SCOPES_MAX=0")
			}
		}
		return w
	}
	if err == nil && profile != classify.S3 && profile != classify.GCS {
		for _, key := range []string{"SCOPE_KEY_DEPTH", "SCOPE_BUCKET"} {
			if isSet(EnvPrefix + key) {
				w = append(w, fmt.Sprintf("%s%s ignored: it applies to SLUICE_PROFILE=s3 or gcs, not %s", EnvPrefix, key, c.Profile))
			}
		}
	}
	switch {
	case err != nil: // validate reports it
	case profile != classify.Generic:
		for _, key := range []string{EnvPrefix + "SCOPE_GENERIC", EnvPrefix + "SCOPE_PATH_DEPTH"} {
			if isSet(key) {
				w = append(w, fmt.Sprintf("%s ignored: it applies to SLUICE_PROFILE=generic, not %s", key, c.Profile))
			}
		}
	case c.ScopeGeneric != "path" && isSet(EnvPrefix+"SCOPE_PATH_DEPTH"):
		w = append(w, fmt.Sprintf("%sSCOPE_PATH_DEPTH ignored: it applies to SLUICE_SCOPE_GENERIC=path, not %s", EnvPrefix, c.ScopeGeneric))
	}
	return w
}

// levenshtein is the number of single-byte insertions, deletions and
// substitutions that turn a into b. Variable names are ASCII.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// AdminBaseURL is the admin API's base URL from SLUICE_ADMIN_URL as an
// operator writes it: a bare host:port (127.0.0.1:9090) means http, and a
// bare :port (what SLUICE_ADMIN_ADDR holds) the loopback. Anything with a
// scheme is returned as given, for validate to judge.
func AdminBaseURL(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.Contains(s, "://") {
		return s
	}
	if strings.HasPrefix(s, ":") {
		s = "127.0.0.1" + s
	}
	return "http://" + s
}

// parseReason says why a value of type t did not parse, in the terms of
// the type and without repeating the value, which the problem quotes once.
func parseReason(err error, t reflect.Type) string {
	var ne *strconv.NumError
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "not a duration (want e.g. 500ms, 30s, 5m)"
	case errors.As(err, &ne) && ne.Err == strconv.ErrRange:
		return "out of range"
	case errors.As(err, &ne) && ne.Func != "ParseFloat":
		return "not a whole number"
	case errors.As(err, &ne):
		return "not a number"
	}
	return err.Error()
}

// fillDefaults sets the defaults an envDefault tag cannot hold: the rate
// limits left unset (set is the environment, so that an unset variable is
// told from one set to 0), whose defaults depend on SLUICE_RATE_UNIT: 50
// req/s or 1 MiB/s to start. An unknown unit is validate's to report; the
// rates then take the defaults of requests, so that the one mistake is
// reported once and not again for each rate left unset. An initial rate or
// concurrency left unset is kept within the limits that are set.
func (c *Config) fillDefaults(set map[string]string) {
	var initial, minR, maxR float64
	switch c.RateUnit {
	case "bytes":
		initial, minR, maxR = 1<<20, 16<<10, 10<<30
	default:
		initial, minR, maxR = 50, 1, 100000
	}
	// An empty value is unset, as it is for every variable with a default
	// in its tag (caarlos0/env): SLUICE_MAX_RATE= in a manifest template
	// is no request for a rate of 0.
	isSet := func(key string) bool { return set[EnvPrefix+key] != "" }
	minSet, maxSet := isSet("MIN_RATE"), isSet("MAX_RATE")
	if !isSet("INITIAL_RATE") {
		// Kept within the bounds that are set (and usable: a bad one is
		// validate's to report, once), as the bounds left unset are kept
		// around it: SLUICE_MAX_RATE=10 alone is no mistake.
		if minSet && c.MinRate > initial && !math.IsInf(c.MinRate, 0) {
			initial = c.MinRate
		}
		if maxSet && c.MaxRate > 0 && c.MaxRate < initial {
			initial = c.MaxRate
		}
		c.InitialRate = initial
	}
	if !isSet("INITIAL_CONCURRENCY") && c.MaxConcurrency >= 1 {
		// As the limiter's own default: 4, or the ceiling if lower.
		c.InitialConcurrency = min(c.InitialConcurrency, c.MaxConcurrency)
	}
	// The bounds left unset follow only a usable start: one that is 0,
	// negative, NaN or infinite is validate's to report, under its own
	// name, not again under a bound the operator never set.
	usable := c.InitialRate > 0 && !math.IsInf(c.InitialRate, 0)
	if !minSet {
		c.MinRate = minR
		if usable {
			c.MinRate = min(minR, c.InitialRate)
		}
	}
	if !maxSet {
		c.MaxRate = maxR
		if usable {
			c.MaxRate = max(maxR, c.InitialRate)
		}
	}
}

// validate returns one problem per invalid variable, each starting with
// the variable's name. It only reads c: defaults are fillDefaults' job.
func (c Config) validate() []string {
	var p []string
	bad := func(key, format string, args ...any) {
		p = append(p, EnvPrefix+key+": "+fmt.Sprintf(format, args...))
	}
	switch {
	case c.UpstreamURL == "":
		bad("UPSTREAM_URL", "required: the store's base URL, e.g. http://127.0.0.1:8428")
	default:
		u, err := url.Parse(c.UpstreamURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "":
			bad("UPSTREAM_URL", "must be an absolute http or https URL, got %q", redact.URL(c.UpstreamURL))
		case !validPort(u.Port()):
			bad("UPSTREAM_URL", "bad port in %q (want 1 to 65535)", redact.URL(c.UpstreamURL))
		case u.User != nil:
			// The proxy sends the loader's request to the URL's scheme,
			// host and path: a user or password here would never reach
			// the store.
			bad("UPSTREAM_URL", "credentials in the URL are never sent to the store, got %q: let the loader send them, or set SLUICE_UPSTREAM_AUTH", redact.URL(c.UpstreamURL))
		}
	}
	checkAddr := func(key, addr string) {
		if _, port, err := net.SplitHostPort(addr); err != nil {
			bad(key, "must be host:port, got %q", addr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad(key, "bad port in %q", addr)
		}
	}
	checkAddr("LISTEN_ADDR", c.ListenAddr)
	checkAddr("ADMIN_ADDR", c.AdminAddr)
	if sameListener(c.ListenAddr, c.AdminAddr) {
		// The second listener would fail to bind with "address already
		// in use", as if another process held the port.
		bad("ADMIN_ADDR", "%q is the port SLUICE_LISTEN_ADDR %q listens on: give the admin API a port of its own", c.AdminAddr, c.ListenAddr)
	}
	if c.AdminToken != "" {
		if why := weakAdminToken(c.AdminToken); why != "" {
			bad("ADMIN_TOKEN", "%s; generate one with: openssl rand -hex 32", why)
		}
	}
	if u, err := url.Parse(c.AdminURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("ADMIN_URL", "must be an http(s) URL, got %q", redact.URL(c.AdminURL))
	}
	if c.UpstreamCAFile != "" {
		// Checked as the proxy will read it, so that check-config does
		// not pass a directory or a file with no certificate that sluice
		// run then refuses (a FIFO would block the read: not read).
		fi, err := os.Stat(c.UpstreamCAFile)
		switch {
		case err != nil:
			bad("UPSTREAM_CA_FILE", "%v", err)
		case !fi.Mode().IsRegular():
			bad("UPSTREAM_CA_FILE", "%s is not a regular file (mode %s)", c.UpstreamCAFile, fi.Mode().Type())
		default:
			if pem, err := os.ReadFile(c.UpstreamCAFile); err != nil {
				bad("UPSTREAM_CA_FILE", "%v", err)
			} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				bad("UPSTREAM_CA_FILE", "no PEM certificate in %s", c.UpstreamCAFile)
			}
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration, got %v", d)
		}
	}
	positive("UPSTREAM_TIMEOUT", c.UpstreamTimeout)
	positive("ANSWER_TIMEOUT", c.AnswerTimeout)
	positive("MAX_RETRY_AFTER", c.MaxRetryAfter)
	if c.ControlInterval < time.Millisecond { // the limiter's least window
		bad("CONTROL_INTERVAL", "must be at least 1ms, got %v", c.ControlInterval)
	}
	positive("QUEUE_TIMEOUT", c.QueueTimeout)
	positive("RETRY_BACKOFF_MIN", c.RetryBackoffMin)
	positive("RETRY_BACKOFF_MAX", c.RetryBackoffMax)
	positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.StallAfter < state.MinStallAfter {
		bad("STALL_AFTER", "must be at least %v (a job would be stalled, then cancelled, by a throttle that holds its writes a moment), got %v", state.MinStallAfter, c.StallAfter)
	}
	positive("CANCEL_GRACE", c.CancelGrace)
	positive("ACTION_TIMEOUT", c.ActionTimeout)
	positive("JOB_RETENTION", c.JobRetention)
	if c.JobDeadline < 0 {
		bad("JOB_DEADLINE", "must be 0 (none) or a positive duration, got %v", c.JobDeadline)
	}
	if c.RetryBackoffMin > 0 && c.RetryBackoffMax > 0 && c.RetryBackoffMin > c.RetryBackoffMax {
		bad("RETRY_BACKOFF_MIN", "%v is greater than SLUICE_RETRY_BACKOFF_MAX %v", c.RetryBackoffMin, c.RetryBackoffMax)
	}
	if _, err := classify.ParseProfile(c.Profile); err != nil {
		bad("PROFILE", "%v", err)
	}
	c.validateScopes(bad)
	switch c.RateUnit {
	case "requests", "bytes":
	default:
		bad("RATE_UNIT", "must be requests or bytes, got %q", c.RateUnit)
	}
	for _, r := range []struct {
		key string
		v   float64
	}{{"INITIAL_RATE", c.InitialRate}, {"MIN_RATE", c.MinRate}, {"MAX_RATE", c.MaxRate}} {
		if !(r.v > 0) || math.IsInf(r.v, 0) {
			bad(r.key, "must be a positive number, got %v", r.v)
		}
	}
	if c.MinRate > 0 && c.MaxRate > 0 && c.MinRate > c.MaxRate {
		bad("MIN_RATE", "%v is greater than SLUICE_MAX_RATE %v", c.MinRate, c.MaxRate)
	}
	if c.InitialRate > 0 && c.MinRate > 0 && c.MaxRate >= c.MinRate && (c.InitialRate < c.MinRate || c.InitialRate > c.MaxRate) {
		bad("INITIAL_RATE", "%v is outside [SLUICE_MIN_RATE %v, SLUICE_MAX_RATE %v]", c.InitialRate, c.MinRate, c.MaxRate)
	}
	if c.MaxConcurrency < 1 {
		bad("MAX_CONCURRENCY", "must be at least 1, got %d", c.MaxConcurrency)
	}
	if c.InitialConcurrency < 1 || (c.MaxConcurrency >= 1 && c.InitialConcurrency > c.MaxConcurrency) {
		bad("INITIAL_CONCURRENCY", "must be in [1, SLUICE_MAX_CONCURRENCY %d], got %d", c.MaxConcurrency, c.InitialConcurrency)
	}
	switch c.Backpressure {
	case "wait", "reject":
	default:
		bad("BACKPRESSURE", "must be wait or reject, got %q", c.Backpressure)
	}
	if c.QueueMax < 1 {
		// The limiter would take 0 as its default, 1024.
		bad("QUEUE_MAX", "must be at least 1, got %d (SLUICE_BACKPRESSURE=reject never queues for a send slot)", c.QueueMax)
	}
	if !state.ValidPriority(c.DefaultJobPriority) {
		bad("DEFAULT_JOB_PRIORITY", "must be %s or %s, got %q", state.PriorityLive, state.PriorityBulk, c.DefaultJobPriority)
	}
	if !(c.BulkFloor > 0 && c.BulkFloor <= limiter.MaxBulkFloor) { // NaN fails too
		bad("BULK_FLOOR", "must be in (0, %v], got %v", limiter.MaxBulkFloor, c.BulkFloor)
	}
	if c.MaxIdleConns < 1 {
		bad("MAX_IDLE_CONNS", "must be at least 1, got %d", c.MaxIdleConns)
	}
	if c.RetryMax < 0 {
		bad("RETRY_MAX", "must be 0 or more, got %d", c.RetryMax)
	}
	if !(c.RetryBudget > 0 && c.RetryBudget <= 1) {
		bad("RETRY_BUDGET", "must be a share in (0, 1], got %v (SLUICE_RETRY_MAX=0 disables retries)", c.RetryBudget)
	}
	switch {
	case c.BufferBudget == 0 && c.RetryBodyMax > 0:
		// No room for any body: every write would stream, never retried
		// or held, while SLUICE_RETRY_BODY_MAX says they should be.
		bad("BUFFER_BUDGET", "0 leaves no room to buffer a body, so no write is retried or held: set SLUICE_RETRY_BODY_MAX=0 as well to mean that, or a budget of at least SLUICE_RETRY_BODY_MAX (%v)", c.RetryBodyMax)
	case c.RetryBodyMax > c.BufferBudget:
		bad("RETRY_BODY_MAX", "%v is greater than SLUICE_BUFFER_BUDGET %v", c.RetryBodyMax, c.BufferBudget)
	}
	if _, ok := ParseLogLevel(c.LogLevel); !ok {
		bad("LOG_LEVEL", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		bad("LOG_FORMAT", "must be json or text, got %q", c.LogFormat)
	}
	if c.MaxJobs < 1 {
		bad("MAX_JOBS", "must be at least 1, got %d", c.MaxJobs)
	}
	if !state.ValidJobID(c.Job) {
		bad("JOB", "must be 1-128 characters of A-Za-z0-9._:-, starting with a letter or digit, got %q", c.Job)
	}
	if c.ActionRetries < 0 {
		bad("ACTION_RETRIES", "must be 0 or more, got %d", c.ActionRetries)
	}
	if c.CheckpointsRetained < 1 {
		bad("CHECKPOINTS_RETAINED", "must be at least 1, got %d", c.CheckpointsRetained)
	}
	for _, a := range []struct{ prefix, u, method, cmd string }{
		{"CANCEL", c.CancelURL, c.CancelMethod, c.CancelCommand},
		{"CLEANUP", c.CleanupURL, c.CleanupMethod, c.CleanupCommand},
	} {
		if a.u != "" && a.cmd != "" {
			bad(a.prefix+"_URL", "set either SLUICE_%s_URL or SLUICE_%s_COMMAND, not both", a.prefix, a.prefix)
		}
		if a.u != "" {
			spec := state.ActionSpec{Kind: state.KindHTTP, Method: a.method, URL: a.u}
			if err := spec.Validate(); err != nil {
				bad(a.prefix+"_URL", "must be an http(s) URL, ${JOB} allowed in its path and query only: %v", err)
			}
		}
		if !state.ValidMethod(a.method) {
			bad(a.prefix+"_METHOD", "not an HTTP method: %q", a.method)
		}
		if a.cmd != "" {
			if _, err := ParseArgv(a.cmd); err != nil {
				bad(a.prefix+"_COMMAND", "%v", err)
			}
		}
	}
	if c.ProgressProbeURL != "" {
		if u, err := url.Parse(c.ProgressProbeURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("PROGRESS_PROBE_URL", "must be an http(s) URL, got %q", redact.URL(c.ProgressProbeURL))
		}
	}
	// Checked with or without a probe URL, as the job manager checks it.
	if c.ProgressProbePtr != "" && !strings.HasPrefix(c.ProgressProbePtr, "/") {
		bad("PROGRESS_PROBE_POINTER", "must be a JSON pointer starting with /, got %q", c.ProgressProbePtr)
	}
	return p
}

// sameListener reports whether two listen addresses would take the same
// port: the same port (0, any free port, never clashes) on the same host,
// or on all interfaces for either.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wildcard(ha) || wildcard(hb)
}

// validPort reports whether the port of a URL (u.Port(): "" when it has
// none) is one a connection can be made to.
func validPort(p string) bool {
	if p == "" {
		return true
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// ---- Stall remedies ----------------------------------------------------

// validateStallRemedies checks the variables that say which stalls cancel
// a job. A misspelt cause name would silently leave a job that should be
// cancelled running (or the reverse), so every name must be known.
func (c *Config) validateStallRemedies() []string {
	var p []string
	for _, v := range []struct{ key, list string }{
		{"AUTO_CANCEL_CAUSES", c.AutoCancelCauses},
		{"DEFAULT_JOB_AUTO_CANCEL_CAUSES", c.DefaultJobAutoCancelCauses},
	} {
		if _, err := state.ParseStallCauses(v.list); err != nil {
			p = append(p, EnvPrefix+v.key+": "+strings.TrimPrefix(err.Error(), "state: ")+`, or "none"`)
		}
	}
	return p
}

// ---- End of stall remedies ---------------------------------------------

// minAdminTokenBytes is the shortest admin token accepted: 16 bytes, 128
// bits if each byte were random. `openssl rand -hex 32` gives 64.
const minAdminTokenBytes = 16

// placeholderMarks are the words of values written to be replaced, not
// used: what example manifests and docs put where a token goes
// ("REPLACE-ME-with-openssl-rand-hex-32", "<your-token>", "changeme",
// "TODO"). They are matched case-insensitively anywhere in the token. A
// hex token never contains one (each has a letter past f, or is < or >); a
// random base64 one of 32 bytes does about once in 10 000, and is then
// refused at startup, where a new one is one command away. Short words
// used whole ("secret", "token", "admin") are refused by the length rule.
var placeholderMarks = []string{
	"changeme", "change-me", "change_me", "replace", "placeholder",
	"example", "xxxx", "token-here", "your-token", "todo", "<", ">",
}

// weakAdminToken says why tok cannot be the admin token, or "" if it can.
// The admin API listens on every interface by default and the token is what
// keeps a caller in the cluster from cancelling a job and running its
// cleanup: a token anyone can guess from the repository (a placeholder left
// in a manifest) or by trying (a short or repetitive one) is worse than
// none, which limits mutations to loopback callers. The reason never
// quotes the token, only the placeholder word found in it.
func weakAdminToken(tok string) string {
	if len(tok) < minAdminTokenBytes {
		return fmt.Sprintf("too short to resist guessing: %d bytes, want at least %d", len(tok), minAdminTokenBytes)
	}
	lower := strings.ToLower(tok)
	for _, m := range placeholderMarks {
		if strings.Contains(lower, m) {
			return fmt.Sprintf("reads like a placeholder, not a generated token (it contains %q)", m)
		}
	}
	if first, _ := utf8.DecodeRuneInString(tok); strings.TrimLeft(tok, string(first)) == "" {
		return "one character repeated, easy to guess"
	}
	if i := strings.IndexFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		// A Secret made from a file that ends in a newline, say. No
		// Authorization header can carry it (net/http trims white space
		// from a header's value and refuses control characters), so no
		// caller could ever authenticate.
		return fmt.Sprintf("contains white space or a control character (at byte %d): no Authorization header can carry it; remove it (a file that ends in a newline?)", i)
	}
	return ""
}

// ParseArgv splits a command given in a variable: a JSON array of strings
// (["pegasus_shell","cancel_bulk_load","-f","${JOB}"]) or words separated by
// white space. No shell is ever involved.
func ParseArgv(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var argv []string
		if err := json.Unmarshal([]byte(s), &argv); err != nil {
			return nil, fmt.Errorf("not a JSON array of strings: %v", err)
		}
		if len(argv) == 0 || argv[0] == "" {
			return nil, errors.New("empty command")
		}
		return argv, nil
	}
	// No shell means no quoting: sh -c "exit 1" would run sh with the
	// words `"exit` and `1"`, and fail only when a job is cancelled,
	// hours later. A quote in the words form is that mistake.
	if strings.ContainsAny(s, `"'`) {
		return nil, errors.New(`quotes are not parsed in the words form (no shell runs it): give the command as a JSON array, e.g. ["sh","-c","exit 1"]`)
	}
	argv := strings.Fields(s)
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	return argv, nil
}

type configField struct {
	field, key, def string
	secret          bool
	index           []int
}

// configFields lists every variable of Config, nested structs included.
func configFields() []configField {
	var out []configField
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			idx := append(append([]int(nil), index...), i)
			tag, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			if tag == "" && f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx)
				continue
			}
			if tag == "" {
				continue
			}
			out = append(out, configField{
				field:  f.Name,
				key:    EnvPrefix + tag,
				def:    f.Tag.Get("envDefault"),
				secret: f.Tag.Get("secret") == "true",
				index:  idx,
			})
		}
	}
	walk(reflect.TypeOf(Config{}), nil)
	return out
}

// Effective returns every variable with its effective value, secrets
// redacted, in name order: what `sluice check-config` prints.
func (c Config) Effective() [][2]string {
	v := reflect.ValueOf(c)
	// The credential variables are shown as package auth shows them: the
	// values of SLUICE_TOKEN_URL_HEADERS whose names suggest a credential
	// (Authorization=Bearer …) are no less secret than the admin token.
	authShown := c.Auth.Redacted()
	var out [][2]string
	for _, f := range configFields() {
		fv := v.FieldByIndex(f.index)
		s := fmt.Sprint(fv.Interface())
		shown, isAuth := authShown[f.key]
		switch {
		case isAuth:
			s = shown
		case f.secret && s != "":
			s = redact.Placeholder
		case strings.HasSuffix(f.key, "_URL") && s != "":
			s = redact.URL(s) // user:password in a URL is a secret too
		case strings.HasSuffix(f.key, "_COMMAND") && s != "":
			s = redact.Placeholder // when it does not parse (ValidateActions says why)
			if argv, err := ParseArgv(fv.String()); err == nil {
				if b, err := json.Marshal(redact.Argv(argv)); err == nil {
					s = string(b)
				}
			}
		case fv.Kind() == reflect.Slice && fv.Len() == 0, fv.Kind() == reflect.Map && fv.Len() == 0:
			s = ""
		}
		out = append(out, [2]string{f.key, s})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// MemoryLimit is the Go soft memory limit sluice runs with unless GOMEMLIMIT
// is set: the buffer budget plus room for everything else. With the default
// GOGC alone, the heap may grow to twice the live buffers before a
// collection, so peak memory would follow the budget times two.
func MemoryLimit(cfg Config) int64 {
	return int64(cfg.BufferBudget) + 128<<20
}

// GCPercent is the GOGC sluice runs with unless GOGC is set. sluice's live
// heap is small (a MiB or two besides buffered bodies) while every write
// allocates a little, so at Go's default of 100 it collects many times a
// second under load, and each collection takes CPU from the two or so
// cores the writes share and holds up the writes in flight. At 200 the
// same binary, side by side with itself at 100, used about 6% less CPU per
// small write and cut their p99 at half the bare proxy's peak by about a
// millisecond. The heap may grow to three times the live heap between
// collections instead of twice: a few MiB while it is small, and with
// buffered bodies no further than MemoryLimit (the budget plus 128 MiB),
// the bound as before.
const GCPercent = 200

// SetRuntimeLimits sets the process's soft memory limit (MemoryLimit) and
// GC percent (GCPercent) as sluice runs with them, leaving each alone when
// the user set it (GOMEMLIMIT or GOGC in the environment, which the Go
// runtime has already applied).
func SetRuntimeLimits(cfg Config) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(MemoryLimit(cfg))
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}

// --- Hold mode and sluice's pushback: SLUICE_HOLD_MAX, SLUICE_PUSHBACK_STATUS ---

// validateHold checks the variables of hold mode and of sluice's own
// pushback answers; each problem names its variable.
func (c *Config) validateHold() []string {
	var p []string
	bad := func(key, format string, args ...any) {
		p = append(p, EnvPrefix+key+": "+fmt.Sprintf(format, args...))
	}
	switch {
	case c.HoldMax < 0:
		bad("HOLD_MAX", "must be 0 (off) or a positive duration, got %v", c.HoldMax)
	case c.HoldMax > 0 && c.RetryMax == 0:
		// A held write is one sluice sends again; SLUICE_RETRY_MAX=0
		// says it never does.
		bad("HOLD_MAX", "holds writes by sending them again, which SLUICE_RETRY_MAX=0 turns off: set SLUICE_RETRY_MAX above 0, or SLUICE_HOLD_MAX to 0")
	}
	switch c.PushbackStatus {
	case 429, 503:
	default:
		bad("PUSHBACK_STATUS", "must be 429 or 503, got %d", c.PushbackStatus)
	}
	return p
}

// --- end of hold mode ---

// maxScopeDepth bounds SLUICE_SCOPE_KEY_DEPTH and SLUICE_SCOPE_PATH_DEPTH:
// deeper, every object is its own scope.
const maxScopeDepth = 32

// validateScopes checks the SLUICE_SCOPE* variables.
func (c *Config) validateScopes(bad func(key, format string, args ...any)) {
	if c.ScopesMax < 0 || c.ScopesMax > 10000 {
		bad("SCOPES_MAX", "must be in [0 (scopes off), 10000], got %d", c.ScopesMax)
	}
	if c.ScopeKeyDepth < 0 || c.ScopeKeyDepth > maxScopeDepth {
		bad("SCOPE_KEY_DEPTH", "must be in [0, %d], got %d", maxScopeDepth, c.ScopeKeyDepth)
	}
	if c.ScopePathDepth < 1 || c.ScopePathDepth > maxScopeDepth {
		bad("SCOPE_PATH_DEPTH", "must be in [1, %d], got %d", maxScopeDepth, c.ScopePathDepth)
	}
	switch c.ScopeGeneric {
	case "path", "job", "none":
	default:
		bad("SCOPE_GENERIC", "must be path, job or none, got %q", c.ScopeGeneric)
	}
	if b := c.ScopeBucket; b != "" && (strings.ContainsAny(b, "/ \t\r\n") || !utf8.ValidString(b) || len(b) > 255) {
		bad("SCOPE_BUCKET", "must be a bucket's name (no slash, no white space, at most 255 bytes), got %q", redact.Truncate(b, 64))
	}
}

// scopesPossible reports whether the profile can name a write's scope
// with this configuration: a generic store only with SLUICE_SCOPE_GENERIC
// path or job, VictoriaMetrics never (its cap is the whole store's).
// Without, no Scopes is made, and /v1/status and the page show none.
func (c *Config) scopesPossible() bool {
	if c.ScopesMax <= 0 {
		return false
	}
	switch p, _ := classify.ParseProfile(c.Profile); p {
	case classify.Generic:
		return c.ScopeGeneric != "none"
	case classify.VictoriaMetrics:
		return false
	}
	return true
}

// scopeRules are the proxy's rules from the SLUICE_SCOPE_* variables. The
// bucket of an upstream addressed virtual-hosted style is
// SLUICE_SCOPE_BUCKET, else what SLUICE_UPSTREAM_URL's host names (see
// classify.BucketOfHost).
func (c *Config) scopeRules() classify.ScopeRules {
	r := classify.ScopeRules{KeyDepth: c.ScopeKeyDepth, Bucket: c.ScopeBucket}
	if p, err := classify.ParseProfile(c.Profile); err == nil && r.Bucket == "" {
		if u, err := url.Parse(c.UpstreamURL); err == nil {
			r.Bucket = classify.BucketOfHost(p, u.Host)
		}
	}
	switch c.ScopeGeneric {
	case "path":
		r.PathDepth = c.ScopePathDepth
	case "job":
		r.ByJob = true
	}
	return r
}
