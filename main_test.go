package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestBadConfigExits2 runs `sluice run` and `sluice check-config` with
// configuration mistakes: both exit 2 naming the variable, run on one line.
func TestBadConfigExits2(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"SLUICE_UPSTREAM_URL": ""}, "SLUICE_UPSTREAM_URL"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "not a url"}, "SLUICE_UPSTREAM_URL"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_MIN_RATE": "-3"}, "SLUICE_MIN_RATE"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_MIN_RATE": "100", "SLUICE_MAX_RATE": "10", "SLUICE_INITIAL_RATE": "50"}, "SLUICE_MIN_RATE"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_QUEUE_TIMEOUT": "10 parsecs"}, "SLUICE_QUEUE_TIMEOUT"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_ADMIN_TOKEN": "REPLACE-ME-with-openssl-rand-hex-32"}, "SLUICE_ADMIN_TOKEN"},
		{map[string]string{"SLUICE_UPSTREAM_URL": "http://s", "SLUICE_AUTO_CANCEL_CAUSES": "store_throttling,loader_hung"}, "SLUICE_AUTO_CANCEL_CAUSES"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var stdout, stderr bytes.Buffer
		if code := run([]string{"run"}, &stdout, &stderr); code != 2 {
			t.Errorf("%v: run exit %d, want 2", tc.env, code)
		}
		if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); lines != 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: run said %q, want one line naming %s", tc.env, stderr.String(), tc.want)
		}
		stderr.Reset()
		if code := run([]string{"check-config"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: check-config exit %d, said %q", tc.env, code, stderr.String())
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
}

func TestCheckConfigPrintsEffective(t *testing.T) {
	t.Setenv("SLUICE_UPSTREAM_URL", "http://user:pw@127.0.0.1:9200")
	t.Setenv("SLUICE_ADMIN_TOKEN", "s3cret-token-0a9f4c")
	t.Setenv("SLUICE_PROFILE", "elasticsearch")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check-config"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "SLUICE_PROFILE=elasticsearch\n") || !strings.Contains(out, "SLUICE_LISTEN_ADDR=127.0.0.1:8080\n") {
		t.Errorf("check-config output lacks settings:\n%s", out)
	}
	if strings.Contains(out, "s3cret-token-0a9f4c") || strings.Contains(out, ":pw@") {
		t.Errorf("check-config printed a secret:\n%s", out)
	}
}

func TestUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"frobnicate"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
}

// TestBadStateDirExits2: a state dir that cannot be opened stops sluice with
// exit 2 naming the variable, the path and the cause.
func TestBadStateDirExits2(t *testing.T) {
	file := t.TempDir() + "/not-a-dir"
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_UPSTREAM_URL", "http://127.0.0.1:1")
	t.Setenv("SLUICE_STATE_DIR", file)
	t.Setenv("SLUICE_ADMIN_ADDR", "127.0.0.1:0")
	t.Setenv("SLUICE_LISTEN_ADDR", "127.0.0.1:0")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"run"}, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2: %s", code, stderr.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "SLUICE_STATE_DIR") || !strings.Contains(msg, file) || !strings.Contains(msg, "not a directory") {
		t.Errorf("message %q does not name the variable, path and cause", msg)
	}
}
