package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/internal/redact"
)

// JobPlaceholder is replaced by the job id in an ActionSpec.
const JobPlaceholder = "${JOB}"

// ExitAlreadyGone is the exit status by which a command action says the job
// is already gone; like exit 0 it counts as success (the LSB convention for
// "program is not running"). Any other non-zero status is a failure.
const ExitAlreadyGone = 3

// maxErrorText bounds the error text kept per attempt.
const maxErrorText = 512

// ActionSpec describes a cancel or cleanup action.
//
// Kind "http": one request Method (default POST) to URL with Headers and
// Body. ${JOB} in the URL is replaced by the job id escaped for its position
// (url.PathEscape before the query, url.QueryEscape in it) and is not allowed
// in the scheme or host, so an id can never add path segments, query
// parameters or a host. ${JOB} in headers and body is replaced as is; the
// result must not contain CR, LF or NUL. A 2xx status is success; 404 and 410
// mean the job is already gone, also success, for both cancel and cleanup;
// anything else, or a transport error, is a failed attempt.
//
// Kind "command": Argv is executed directly, never through a shell; ${JOB}
// is replaced inside each element as plain text, and SLUICE_JOB is set in the
// environment. Exit 0 is success, ExitAlreadyGone is already gone (success),
// any other status is a failed attempt. On timeout the process (and its
// process group) is killed, and so is what it leaves in its group when it
// exits: no process of an attempt outlives it.
type ActionSpec struct {
	Kind    string            `json:"kind"`
	Method  string            `json:"method,omitempty"`
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	Argv    []string          `json:"argv,omitempty"`
}

// Action kinds.
const (
	KindHTTP    = "http"
	KindCommand = "command"
)

// Validate checks the spec without running it.
func (s *ActionSpec) Validate() error {
	switch s.Kind {
	case KindHTTP:
		if s.Method != "" && !validToken(s.Method) {
			return fmt.Errorf("state: action method %q is not a valid HTTP method", s.Method)
		}
		if _, err := s.request("x"); err != nil {
			return err
		}
		for k, v := range s.Headers {
			if !validToken(k) {
				return fmt.Errorf("state: action header name %q is invalid", k)
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				return fmt.Errorf("state: action header %q contains CR, LF or NUL", k)
			}
		}
		if len(s.Argv) > 0 {
			return errors.New("state: http action must not have argv")
		}
	case KindCommand:
		if len(s.Argv) == 0 || s.Argv[0] == "" {
			return errors.New("state: command action needs argv[0]")
		}
		if s.URL != "" || s.Body != "" || len(s.Headers) > 0 || s.Method != "" {
			return errors.New("state: command action takes only argv")
		}
	default:
		return fmt.Errorf("state: action kind %q is not %q or %q", s.Kind, KindHTTP, KindCommand)
	}
	return nil
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// ExpandURL returns the spec's URL for job id, with ${JOB} escaped by
// position.
func (s *ActionSpec) ExpandURL(id string) (string, error) {
	raw := s.URL
	// The authority ends at the first '/', '?' or '#' after "://".
	authEnd := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		authEnd = i + 3
		if k := strings.IndexAny(raw[authEnd:], "/?#"); k >= 0 {
			authEnd += k
		} else {
			authEnd = len(raw)
		}
	}
	if strings.Contains(raw[:authEnd], JobPlaceholder) {
		return "", fmt.Errorf("state: action URL %q: %s is not allowed in the scheme or host", redact.URL(raw), JobPlaceholder)
	}
	query := strings.IndexAny(raw, "?#")
	if query < 0 {
		query = len(raw)
	}
	out := strings.ReplaceAll(raw[:query], JobPlaceholder, url.PathEscape(id)) +
		strings.ReplaceAll(raw[query:], JobPlaceholder, url.QueryEscape(id))
	u, err := url.Parse(out)
	if err != nil {
		// The parser's own message can quote a piece of a malformed
		// password (as a "port"), so it is not passed on.
		_ = err
		return "", fmt.Errorf("state: action URL %q is not a valid URL", redact.URL(raw))
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("state: action URL %q must be http(s)://host/…", redact.URL(raw))
	}
	return out, nil
}

func (s *ActionSpec) request(id string) (*http.Request, error) {
	u, err := s.ExpandURL(id)
	if err != nil {
		return nil, err
	}
	method := s.Method
	if method == "" {
		method = http.MethodPost
	}
	body := strings.ReplaceAll(s.Body, JobPlaceholder, id)
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("state: action request %s %q: %w", method, redact.URL(u), redact.URLError(err))
	}
	for k, v := range s.Headers {
		v = strings.ReplaceAll(v, JobPlaceholder, id)
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("state: action header %q contains CR, LF or NUL after substitution", k)
		}
		req.Header.Set(k, v)
	}
	return req, nil
}

// ExpandArgv returns the command's argv for job id, ${JOB} replaced as plain text.
func (s *ActionSpec) ExpandArgv(id string) []string {
	argv := make([]string, len(s.Argv))
	for i, a := range s.Argv {
		argv[i] = strings.ReplaceAll(a, JobPlaceholder, id)
	}
	return argv
}

// runner performs one attempt of an action.
type runner struct {
	client  *http.Client
	timeout time.Duration
	now     func() time.Time
}

// attempt runs spec once for job id, bounded by r.timeout, and describes the
// outcome. ok reports success (including already gone).
func (r *runner) attempt(ctx context.Context, spec *ActionSpec, id, action string, n int) (a Attempt, ok bool) {
	start := r.now()
	a = Attempt{Action: action, N: n, At: start}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var err error
	switch spec.Kind {
	case KindHTTP:
		err = r.http(ctx, spec, id, &a)
	case KindCommand:
		err = r.command(ctx, spec, id, &a)
	default:
		err = fmt.Errorf("state: action kind %q", spec.Kind)
	}
	a.Duration = r.now().Sub(start)
	switch {
	case err == nil:
		return a, a.Result == ResultOK || a.Result == ResultAlreadyGone
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		a.Result = ResultTimeout
		a.Error = redact.Truncate(fmt.Sprintf("timed out after %s: %v", r.timeout, err), maxErrorText)
	default:
		a.Result = ResultError
		a.Error = redact.Truncate(err.Error(), maxErrorText)
	}
	return a, false
}

func (r *runner) http(ctx context.Context, spec *ActionSpec, id string, a *Attempt) error {
	req, err := spec.request(id)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req.WithContext(ctx))
	if err != nil {
		// The client's error quotes the URL with its query and a password
		// of its own placeholder: name the URL as everything else does.
		return fmt.Errorf("%s %s: %w", req.Method, redact.URL(req.URL.String()), redact.URLError(err))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorText))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	a.Status = resp.StatusCode
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		a.Result = ResultOK
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusGone:
		// The store no longer knows the job: cancelling or cleaning it
		// again is pointless, so the action has reached its goal.
		a.Result = ResultAlreadyGone
	default:
		a.Result = ResultError
		a.Error = redact.Truncate(fmt.Sprintf("%s %s: status %d: %s", req.Method, redact.URL(req.URL.String()), resp.StatusCode, bytes.TrimSpace(snippet)), maxErrorText)
	}
	return nil
}

func (r *runner) command(ctx context.Context, spec *ActionSpec, id string, a *Attempt) error {
	argv := spec.ExpandArgv(id)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(actionEnv(cmd.Environ()), "SLUICE_JOB="+id)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	killGroup(cmd)
	dieWithSluice(cmd)
	cmd.WaitDelay = time.Second
	err := runCommand(cmd)
	killLeftovers(cmd)
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// It exited 0, and a child it left running held its output open
		// past WaitDelay: the output is given up on, the exit status
		// stands.
		err = nil
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		code := 0
		a.ExitCode, a.Result = &code, ResultOK
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", argv[0], ctx.Err())
	case errors.As(err, &exit) && exit.Exited():
		code := exit.ExitCode()
		a.ExitCode = &code
		if code == ExitAlreadyGone {
			a.Result = ResultAlreadyGone
			return nil
		}
		a.Result = ResultError
		// Its output may repeat its arguments (a usage error, set -x),
		// and the job view must not show the secrets among them.
		a.Error = redact.Truncate(fmt.Sprintf("%s: exit status %d: %s", argv[0], code, redact.ArgvOutput(string(bytes.TrimSpace(out.b)), argv)), maxErrorText)
		return nil
	}
	return fmt.Errorf("%s: %w", argv[0], err)
}

// limitedBuffer keeps the first maxErrorText bytes written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxErrorText - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// actionEnv is the environment of a command action: sluice's own, less
// its settings (SLUICE_*), which hold its credentials: the admin token, the
// token URL's headers, the fleet's Redis password. None is the cleanup
// script's business; the caller sets SLUICE_JOB.
func actionEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "SLUICE_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// ValidMethod reports whether m is an upper-case HTTP method token, as an
// action's method must be: a lower-case "post" is refused rather than sent
// as a method the store does not know.
func ValidMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, r := range m {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}
