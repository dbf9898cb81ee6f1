package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/state"
)

// A job with a declared total shows how far along it is, in the list and
// in its own view; one without shows a dash.
func TestJobsShowProgress(t *testing.T) {
	cfg, _, err := sidecar.LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sidecar.NewServer(cfg, sidecar.Options{Store: &state.MemStore{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.StartLoops()()
	admin := httptest.NewServer(s.AdminHandler())
	defer admin.Close()
	post := func(path, body string) {
		t.Helper()
		resp, err := http.Post(admin.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
	post("/v1/jobs", `{"id":"load-9","total":{"records":100}}`)
	post("/v1/jobs/load-9/progress", `{"records":25}`)
	post("/v1/jobs", `{"id":"load-10"}`)
	env := map[string]string{"SLUICE_ADMIN_URL": admin.URL}
	cli := func(args ...string) string {
		var out, errs bytes.Buffer
		if code := Run(args, func(k string) string { return env[k] }, &out, &errs); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs.String())
		}
		return out.String()
	}
	list := cli("jobs", "list")
	for _, want := range []string{"PROGRESS", "ETA", "25.0%"} {
		if !strings.Contains(list, want) {
			t.Errorf("jobs list lacks %q:\n%s", want, list)
		}
	}
	if line := lineOf(list, "load-10"); !strings.Contains(line, " - ") {
		t.Errorf("a job without a total shows no dash: %q", line)
	}
	show := cli("jobs", "show", "load-9")
	if !strings.Contains(show, "25.0%: 25 of 100 records") || !strings.Contains(lineOf(show, "eta"), "eta") {
		t.Errorf("jobs show lacks the progress rows:\n%s", show)
	}
}

func lineOf(text, prefix string) string {
	for l := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
