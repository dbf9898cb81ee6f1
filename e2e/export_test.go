package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseExport(t *testing.T) {
	// VictoriaMetrics may split one series over several lines.
	in := `{"metric":{"__name__":"e2e_sample","job":"a","writer":"0"},"values":[0,1],"timestamps":[1000,1001]}
{"metric":{"__name__":"e2e_sample","job":"a","writer":"1"},"values":[0],"timestamps":[1000]}

{"metric":{"__name__":"e2e_sample","job":"a","writer":"0"},"values":[1,2],"timestamps":[1001,1002]}
`
	s, err := ParseExport(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Series) != 2 || s.Samples() != 5 || s.Distinct() != 4 {
		t.Errorf("series %d samples %d distinct %d, want 2, 5, 4", len(s.Series), s.Samples(), s.Distinct())
	}
	f := func(name, in, wantErr string) {
		t.Helper()
		_, err := ParseExport(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: error = %v, want …%s…", name, err, wantErr)
		}
	}
	f("lengths differ", `{"metric":{},"values":[1,2],"timestamps":[1]}`, "line 1: 2 values but 1 timestamps")
	f("not JSON", "{\"metric\":{}}\nnope\n", "line 2")
}

func TestSeriesKey(t *testing.T) {
	got := SeriesKey(map[string]string{"writer": "3", "__name__": "m", "job": `a"b`})
	if want := `__name__="m",job="a\"b",writer="3"`; got != want {
		t.Errorf("SeriesKey = %s, want %s", got, want)
	}
}

func TestCheck(t *testing.T) {
	l := &Loader{Job: "j", Writers: 2, Batches: 2, BatchSize: 2, Start: time.UnixMilli(1000)}
	all := Result{Acked: [][]bool{{true, true}, {true, true}}, AckedSamples: 8}
	line := func(w string, values, ts string) string {
		return `{"metric":{"__name__":"e2e_sample","job":"j","writer":"` + w + `"},"values":[` + values + `],"timestamps":[` + ts + "]}\n"
	}
	full := line("0", "0,1,2,3", "1000,1001,1002,1003") + line("1", "0,1,2,3", "1000,1001,1002,1003")
	f := func(name string, res Result, export string, want Check, exact bool) {
		t.Helper()
		s, err := ParseExport(strings.NewReader(export))
		if err != nil {
			t.Fatal(err)
		}
		got := l.Check(res, s)
		if got != want || got.Exact() != exact {
			t.Errorf("%s: Check = %v (exact %v), want %v (exact %v)", name, got, got.Exact(), want, exact)
		}
	}
	f("exact", all, full, Check{Acked: 8, Stored: 8}, true)
	f("one missing", all, line("0", "0,1,2,3", "1000,1001,1002,1003")+line("1", "0,1,3", "1000,1001,1003"),
		Check{Acked: 8, Stored: 7, Missing: 1}, false)
	f("a duplicate", all, full+line("1", "2", "1002"), Check{Acked: 8, Stored: 9, Duplicates: 1}, false)
	f("wrong value", all, full+line("1", "7", "1002"), Check{Acked: 8, Stored: 9, Foreign: 1}, false)
	f("out of range", all, full+line("1", "4", "1004"), Check{Acked: 8, Stored: 9, Foreign: 1}, false)
	f("another series", all, full+`{"metric":{"__name__":"e2e_sample","job":"j","writer":"9"},"values":[0],"timestamps":[1000]}`,
		Check{Acked: 8, Stored: 9, Foreign: 1}, false)
	dropped := Result{Acked: [][]bool{{true, false}, {true, true}}, AckedSamples: 6}
	f("stored but not acknowledged", dropped, full, Check{Acked: 6, Stored: 8, Unacked: 2}, false)
	f("dropped and not stored", dropped, line("0", "0,1", "1000,1001")+line("1", "0,1,2,3", "1000,1001,1002,1003"),
		Check{Acked: 6, Stored: 6}, true)
	f("empty store", all, "", Check{Acked: 8, Missing: 8}, false)
}

func TestExport(t *testing.T) {
	var gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/export" {
			http.NotFound(w, r)
			return
		}
		gotQuery = r.URL.RawQuery
		if r.URL.Query().Get("match[]") == `{job="bad"}` {
			http.Error(w, "cannot parse selector", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"metric":{"__name__":"m","job":"a"},"values":[1],"timestamps":[1500]}` + "\n"))
	}))
	defer srv.Close()
	ctx := context.Background()
	s, err := Export(ctx, srv.Client(), srv.URL, `{job="a"}`, time.Unix(1, 0), time.Unix(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	if s.Samples() != 1 {
		t.Errorf("samples = %d, want 1", s.Samples())
	}
	if want := "end=3&match%5B%5D=%7Bjob%3D%22a%22%7D&start=1"; gotQuery != want {
		t.Errorf("query = %s, want %s", gotQuery, want)
	}
	_, err = Export(ctx, srv.Client(), srv.URL, `{job="bad"}`, time.Unix(1, 0), time.Unix(2, 0))
	if err == nil || !strings.Contains(err.Error(), "status 400: cannot parse selector") {
		t.Errorf("error = %v, want the store's 400 and message", err)
	}
}
