package redact

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	f := func(name, in, want string) {
		t.Helper()
		if got := URL(in); got != want {
			t.Errorf("%s: URL(%q) = %q, want %q", name, in, got, want)
		}
	}
	f("no secret", "https://store:9200/_bulk", "https://store:9200/_bulk")
	f("empty", "", "")
	f("password", "http://u:hunter2@store:9200/p", "http://u:<redacted>@store:9200/p")
	f("user only: a token as user name", "https://ghp_abc123@git.test/x", "https://<redacted>@git.test/x")
	f("empty password", "http://u:@store/", "http://u:<redacted>@store/")
	f("template", "http://ops:pw@store/_tasks/${JOB}/_cancel", "http://ops:<redacted>@store/_tasks/${JOB}/_cancel")
	f("password with / ? # and @", "http://u:p/a?s#s@w@store/p", "http://u:<redacted>@store/p")
	f("malformed", "http://u:p w@[::1/p", "http://u:<redacted>@[::1/p")
	f("query values", "https://idp.test/token?key=s3cr3t&aud=x&flag", "https://idp.test/token?key=<redacted>&aud=<redacted>&flag")
	f("query template", "http://h/p?id=${JOB}", "http://h/p?id=<redacted>")
	f("empty query", "http://h/p?", "http://h/p")
	f("fragment", "https://h/cb#access_token=s3cr3t", "https://h/cb")
	f("all of it", "https://user:pw@idp.test/token?key=s3cr3t#frag", "https://user:<redacted>@idp.test/token?key=<redacted>")
	f("no scheme, credentials", "u:pw@store:9200", Placeholder)
	f("no scheme, no @", "store:9200", "store:9200")
	f("no scheme, query", "store:9200/p?key=s3cr3t#f", "store:9200/p?key=<redacted>")
	f("not a scheme", "0:pw://h@x", Placeholder)
	f("unparseable", "::", "::")
	f("@ in the query", "http://h/p?to=a:b@c", "http://<redacted>@c")
	f("@ in the path", "http://h/users/@me", "http://<redacted>@me")
}

// FuzzURL: whatever a secret holds, it is not shown where a URL keeps its
// secrets. A user name is shown, so it holds none of the characters that
// end one; a secret used as the user name holds no ':' (which would make
// what precedes it the user name).
func FuzzURL(f *testing.F) {
	f.Add("http", "u", "pw", "store/p?k=v#f")
	f.Add("https", "", "p@ss/?#", "h")
	f.Fuzz(func(t *testing.T, scheme, user, password, tail string) {
		const mark = "S3CR3T-9d2e"
		if strings.ContainsAny(user, ":@/?#") || strings.Contains(scheme+user+tail, mark) {
			return
		}
		in := []string{
			scheme + "://" + user + ":" + mark + password + "@" + tail,
			user + ":" + mark + password + "@" + tail,
			scheme + "://" + tail + "?" + user + "=" + mark + password,
			scheme + "://" + tail + "#" + mark + password,
		}
		if !strings.Contains(password, ":") {
			in = append(in, scheme+"://"+mark+password+"@"+tail)
		}
		for _, in := range in {
			if got := URL(in); strings.Contains(got, mark) {
				t.Fatalf("URL(%q) = %q shows the secret", in, got)
			}
		}
	})
}

func TestURLError(t *testing.T) {
	ue := &url.Error{Op: "Get", URL: "http://u:pw@h/?k=s3cr3t", Err: context.DeadlineExceeded}
	if got := URLError(ue); got != context.DeadlineExceeded {
		t.Errorf("URLError(*url.Error) = %v", got)
	}
	other := errors.New("x")
	if got := URLError(other); got != other {
		t.Errorf("URLError(other) = %v", got)
	}
}

func TestTruncate(t *testing.T) {
	f := func(in string, n int, want string) {
		t.Helper()
		if got := Truncate(in, n); got != want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", in, n, got, want)
		}
	}
	f("", 3, "")
	f("abc", 3, "abc")
	f("abcd", 3, "abc…")
	f("abcd", 0, "…")
}

// TestArgv: a command shown in a job view or by check-config keeps its
// program, flags and plain values, and hides what carries a credential.
func TestArgvOutput(t *testing.T) {
	f := func(argv []string, out, want string) {
		t.Helper()
		if got := ArgvOutput(out, argv); got != want {
			t.Errorf("ArgvOutput(%q, %q) = %q, want %q", out, argv, got, want)
		}
	}
	f([]string{"curl", "-u", "elastic:S3cret", "http://es:9200/x"}, "+ curl -u elastic:S3cret http://es:9200/x\n401",
		"+ curl -u "+Placeholder+" http://es:9200/x\n401")
	f([]string{"tool", "--password=hunter2"}, "usage: tool --password=hunter2: bad password hunter2",
		"usage: tool --password="+Placeholder+": bad password "+Placeholder)
	f([]string{"curl", "-H", "Authorization: Bearer abc123"}, "header Authorization: Bearer abc123; token abc123 expired",
		"header Authorization: "+Placeholder+"; token "+Placeholder+" expired")
	f([]string{"tool", "https://u:pw@h/x?k=v"}, "GET https://u:pw@h/x?k=v failed", "GET https://u:"+Placeholder+"@h/x?k="+Placeholder+" failed")
	f([]string{"pegasus_shell", "cancel_bulk_load", "-f", "j1"}, "no such job j1", "no such job j1")
	f([]string{"redis-cli", "-a", "pw", "DEL", "x"}, "pw: DEL x", "pw: DEL x") // too short to replace
}

func TestArgv(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"curl", "-u", "elastic:S3cret", "-XPOST", "http://es:9200/_tasks/${JOB}/_cancel"},
			[]string{"curl", "-u", Placeholder, "-XPOST", "http://es:9200/_tasks/${JOB}/_cancel"}},
		{[]string{"curl", "-H", "Authorization: Bearer abc", "-H", "Content-Type: application/json", "https://a:b@h/x?k=v"},
			[]string{"curl", "-H", "Authorization: " + Placeholder, "-H", "Content-Type: application/json", "https://a:" + Placeholder + "@h/x?k=" + Placeholder}},
		{[]string{"tool", "--password=hunter2", "--token", "t0k", "--url=http://u:p@h/", "--job=${JOB}"},
			[]string{"tool", "--password=" + Placeholder, "--token", Placeholder, "--url=http://u:" + Placeholder + "@h/", "--job=${JOB}"}},
		{[]string{"redis-cli", "-a", "pw", "DEL", "job:${JOB}"}, []string{"redis-cli", "-a", Placeholder, "DEL", "job:${JOB}"}},
		{[]string{"pegasus_shell", "cancel_bulk_load", "-f", "${JOB}"}, []string{"pegasus_shell", "cancel_bulk_load", "-f", "${JOB}"}},
		{[]string{"x", "X-Api-Key: k", "--secret"}, []string{"x", "X-Api-Key: " + Placeholder, "--secret"}},
	} {
		if got := Argv(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Argv(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
