package state

import (
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// FuzzExpandURL: whatever the id, it stays one path segment and one query
// value, and never changes the host.
func FuzzExpandURL(f *testing.F) {
	for _, s := range []string{"a", "../x", "a?b=c#d", "a&job=b", "%2F", "a b", "\x00"} {
		f.Add(s)
	}
	spec := ActionSpec{Kind: KindHTTP, URL: "http://store/jobs/${JOB}/cancel?job=${JOB}"}
	f.Fuzz(func(t *testing.T, id string) {
		raw, err := spec.ExpandURL(id)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		segs := strings.Split(u.EscapedPath(), "/")
		if u.Host != "store" || u.Fragment != "" || len(segs) != 4 || segs[3] != "cancel" {
			t.Fatalf("id %q gave %q", id, raw)
		}
		if seg, err := url.PathUnescape(segs[2]); err != nil || seg != id {
			t.Fatalf("id %q: path segment %q", id, segs[2])
		}
		if q := u.Query(); len(q) != 1 || len(q["job"]) != 1 || q["job"][0] != id {
			t.Fatalf("id %q: query %v", id, q)
		}
	})
}

func FuzzValidJobID(f *testing.F) {
	for _, s := range []string{"default", "a:b.c-d_e", "", "a/b", strings.Repeat("x", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidJobID(id) {
			return
		}
		if len(id) < 1 || len(id) > 128 || strings.ContainsAny(id, "/?#&=%;$ \r\n\"'") {
			t.Fatalf("ValidJobID(%q) = true", id)
		}
		if url.PathEscape(id) != id {
			t.Fatalf("valid id %q needs escaping", id)
		}
	})
}

// FuzzSettingsJSON: decoding never panics, and valid settings survive a
// round trip.
func FuzzSettingsJSON(f *testing.F) {
	f.Add(`{"stall_after":"90s","cancel":{"kind":"http","url":"http://h/${JOB}"},"labels":{"a":"b"}}`)
	f.Add(`{"deadline":"-1h","auto_cancel":false,"cleanup":{"kind":"command","argv":["x","${JOB}"]}}`)
	f.Add(`{"weight":2.5,"priority":"live"}`)
	f.Add(`{"weight":1e308,"priority":"bulk"}`)
	f.Fuzz(func(t *testing.T, in string) {
		var s Settings
		if json.Unmarshal([]byte(in), &s) != nil || s.Validate() != nil {
			return
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back Settings
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if back.StallAfter != s.StallAfter || back.CancelGrace != s.CancelGrace || back.Deadline != s.Deadline || len(back.Labels) != len(s.Labels) {
			t.Fatalf("round trip %+v → %s → %+v", s, b, back)
		}
	})
}

// FuzzJSONPointer: whatever the probe answers, a value read is a finite
// number (NaN or Inf would make the job's record impossible to encode),
// and it reads back as itself.
func FuzzJSONPointer(f *testing.F) {
	f.Add(`{"a":[1,{"b":"2"}]}`, "/a/1/b")
	f.Add(`3`, "")
	f.Add(`{"n":"NaN"}`, "/n")
	f.Add(`["-Infinity"]`, "/0")
	f.Add(`{"a/b":{"~":"1e308"}}`, "/a~1b/~0")
	f.Fuzz(func(t *testing.T, doc, ptr string) {
		v, err := jsonPointerNumber([]byte(doc), ptr)
		if err != nil {
			return
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("jsonPointerNumber(%q, %q) = %v", doc, ptr, v)
		}
		lit := strconv.FormatFloat(v, 'g', -1, 64)
		if back, err := jsonPointerNumber([]byte(lit), ""); err != nil || back != v {
			t.Fatalf("jsonPointerNumber(%q, %q) = %v, but %s reads as %v, %v", doc, ptr, v, lit, back, err)
		}
	})
}
