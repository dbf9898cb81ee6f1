// Package redact makes text safe to show in logs, error messages, job
// views, check-config and API answers: secrets in URLs are replaced by one
// placeholder, and long inputs are cut. It works on the text, not on a
// parsed value, so that URL templates (${JOB}) and malformed URLs, the
// ones a configuration error quotes, are redacted all the same.
//
// What counts as a secret in a given setting (a header, a token, a body)
// is the caller's to decide; the caller then shows Placeholder in its
// place.
package redact

import (
	"errors"
	"net/url"
	"slices"
	"strings"
)

// Placeholder stands for every hidden value, whatever hid it, so that a
// reader (or a log query) finds all of them with one string.
const Placeholder = "<redacted>"

// URL returns raw fit to show: the password of its userinfo, a userinfo
// without a password (a token sent as the user name) and every query
// value are hidden, the fragment is dropped. The scheme, the user name before a
// password, the host, the path and the query's parameter names stay, as
// they are what a reader needs to tell which endpoint is meant.
//
// The userinfo is everything between "://" and the last '@', whatever it
// holds ('/', '?' and '#' included), because an unescaped password may
// hold any of them; a URL with an '@' in its path or query is then
// over-redacted (host and path included), which is the safe side for
// display. Text with an '@' but no "scheme://" (host:port with
// credentials, or a password holding "://") is hidden whole.
func URL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !isScheme(scheme) {
		if strings.Contains(raw, "@") {
			return Placeholder
		}
		return hideQuery(raw)
	}
	head := scheme + "://"
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		// A "user name" holding '/', '?', '#' or '@' is a path, a query or
		// a secret up to an '@': where the user name ends cannot be told,
		// and all of it may be secret.
		if user, _, hasPassword := strings.Cut(rest[:at], ":"); hasPassword && !strings.ContainsAny(user, "/?#@") {
			head += user + ":"
		}
		head += Placeholder + "@"
		rest = rest[at+1:]
	}
	return head + hideQuery(rest)
}

// Argv returns a command's argv fit to show: the value of a flag that
// carries a credential ("-u user:password", "--password=…", "-a …",
// "--token …"), a header whose name says it carries one ("Authorization:
// Bearer …" after curl's -H) and the secrets of every URL (see URL) are
// hidden. The program, the other flags and their values stay. A flag
// whose short name means something else in some program (-p for a port,
// -a for all) has its value hidden all the same: the safe side for
// display.
func Argv(argv []string) []string {
	out := make([]string, len(argv))
	secretNext := false
	for i, a := range argv {
		switch name, value, hasValue := strings.Cut(a, "="); {
		case secretNext:
			out[i] = Placeholder
			secretNext = false
			continue
		case strings.HasPrefix(a, "-") && credentialFlag(name):
			if hasValue {
				out[i] = name + "=" + Placeholder
			} else {
				out[i], secretNext = a, true
			}
			continue
		case strings.HasPrefix(a, "-") && hasValue:
			out[i] = name + "=" + Argv([]string{value})[0]
			continue
		}
		// A header, as curl's -H takes it: a name before the colon, not a
		// URL's scheme or a path.
		if name, _, ok := strings.Cut(a, ":"); ok && !strings.ContainsAny(strings.TrimSpace(name), " /") && SecretHeader(name) {
			out[i] = name + ": " + Placeholder
			continue
		}
		out[i] = URL(a)
	}
	return out
}

// ArgvOutput returns what a command printed, out, fit to show beside
// Argv(argv): each argument that Argv hides, and the secret in it (a
// flag's value, a header's), replaced wherever out repeats it, as a
// command does in a usage error or under "set -x". A secret shorter than
// 3 bytes is left: replacing it everywhere would garble the text more
// than it hides.
func ArgvOutput(out string, argv []string) string {
	shown := Argv(argv)
	var pairs [][2]string
	add := func(secret, replacement string) {
		if len(secret) >= 3 && secret != replacement {
			pairs = append(pairs, [2]string{secret, replacement})
		}
	}
	for i, a := range argv {
		if shown[i] == a {
			continue
		}
		add(a, shown[i])
		if _, value, ok := strings.Cut(a, "="); ok && strings.HasSuffix(shown[i], "="+Placeholder) {
			add(value, Placeholder)
		}
		if _, value, ok := strings.Cut(a, ":"); ok && strings.HasSuffix(shown[i], ": "+Placeholder) {
			value = strings.TrimSpace(value)
			add(value, Placeholder)
			if _, cred, ok := strings.Cut(value, " "); ok { // "Bearer abc": abc alone too
				add(strings.TrimSpace(cred), Placeholder)
			}
		}
	}
	// The longest first: a secret inside another is replaced with it.
	slices.SortFunc(pairs, func(a, b [2]string) int { return len(b[0]) - len(a[0]) })
	for _, p := range pairs {
		out = strings.ReplaceAll(out, p[0], p[1])
	}
	return out
}

// credentialFlag reports whether a command-line flag (with its dashes)
// names a credential.
func credentialFlag(flag string) bool {
	switch strings.ToLower(strings.TrimLeft(flag, "-")) {
	case "u", "user", "p", "password", "pass", "passwd", "pwd", "a", "auth", "token", "secret", "api-key", "apikey", "key",
		"oauth2-bearer", "bearer", "proxy-user", "access-token", "client-secret":
		return true
	}
	return false
}

// SecretHeader reports whether an HTTP header's name says its value is a
// credential (Authorization, X-Api-Key, Cookie, X-Amz-Security-Token…),
// to be shown as Placeholder.
func SecretHeader(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"auth", "cookie", "token", "secret", "key", "password", "signature"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// hideQuery hides the query values of s (the names stay) and drops its
// fragment, which is never sent and may carry a token.
func hideQuery(s string) string {
	s, _, _ = strings.Cut(s, "#")
	s, query, _ := strings.Cut(s, "?")
	if query == "" {
		return s
	}
	params := strings.Split(query, "&")
	for i, p := range params {
		if name, _, hasValue := strings.Cut(p, "="); hasValue {
			params[i] = name + "=" + Placeholder
		}
	}
	return s + "?" + strings.Join(params, "&")
}

// URLError returns the error that the *url.Error in err's chain wraps, or
// err if there is none. A *url.Error's message repeats the whole URL, its
// query included and its password shown as net/url's own placeholder: the
// caller names the URL itself, through URL.
func URLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// isScheme reports whether s is a URL scheme: a letter, then letters,
// digits, '+', '-' or '.'.
func isScheme(s string) bool {
	for i, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// Truncate shortens s to its first n bytes and marks the cut with "…", so
// that an error or an answer never echoes a huge input back.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
