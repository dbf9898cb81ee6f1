package admin

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestPageFleet: the status page's fleet section (hidden until v1/status
// has a fleet object) reads only fields that FleetStatus and FleetMember
// have, and writes only into elements index.html has: a field renamed in
// Go, or an element in the page, fails here rather than blank on screen.
func TestPageFleet(t *testing.T) {
	html := string(pageAssets["index.html"].body)
	js := string(pageAssets["app.js"].body)
	if !strings.Contains(html, `<section id="fleet" class="card wide" hidden>`) {
		t.Fatal("index.html has no hidden fleet section")
	}
	start := strings.Index(js, "function renderFleet(s) {")
	end := strings.Index(js[max(start, 0):], "\n  }\n")
	if start < 0 || end < 0 {
		t.Fatal("app.js has no renderFleet")
	}
	fn := js[start : start+end]
	if !strings.Contains(js, "renderFleet(status);") {
		t.Error("app.js never calls renderFleet with the status")
	}

	tags := func(v any) map[string]bool {
		out := map[string]bool{}
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			out[name] = true
		}
		return out
	}
	for _, c := range []struct {
		prefix string
		fields map[string]bool
	}{{"fl", tags(FleetStatus{})}, {"m", tags(FleetMember{})}} {
		used := regexp.MustCompile(`\b`+c.prefix+`\.([a-z_]+)`).FindAllStringSubmatch(fn, -1)
		if len(used) == 0 {
			t.Errorf("renderFleet reads no field of %s", c.prefix)
		}
		for _, u := range used {
			if !c.fields[u[1]] {
				t.Errorf("renderFleet reads %s.%s, which the API does not send", c.prefix, u[1])
			}
		}
	}
	for _, id := range regexp.MustCompile(`(?:\$\("|setText\("|"#)(fleet[a-z-]*)`).FindAllStringSubmatch(fn, -1) {
		if !strings.Contains(html, `id="`+id[1]+`"`) {
			t.Errorf("renderFleet writes into #%s, which index.html lacks", id[1])
		}
	}
	for _, m := range []string{"leased", "joining", "safe_share", "local", "left"} {
		if !strings.Contains(string(pageAssets["style.css"].body), ".mode."+m) {
			t.Errorf("style.css has no colour for fleet mode %s", m)
		}
	}
}
