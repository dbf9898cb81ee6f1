package classify

import (
	"net/http"
	"strings"
	"testing"
)

// esBulkRequest is a _bulk body of n actions, cycling through index,
// create, update (each with its source line) and delete (none).
func esBulkRequest(n int) string {
	var b strings.Builder
	for i := range n {
		switch i % 4 {
		case 0:
			b.WriteString(`{"index":{"_index":"logs","_id":"` + string(rune('a'+i%26)) + "\"}}\n{\"msg\":\"a\\nb\"}\n")
		case 1:
			b.WriteString("{ \"create\" : {\"_index\":\"logs\"}}\n{\"n\":1}\n")
		case 2:
			b.WriteString("{\"update\":{\"_id\":\"1\"}}\n{\"doc\":{\"n\":2}}\n")
		case 3:
			b.WriteString("{\"delete\":{\"_id\":\"2\"}}\n")
		}
	}
	return b.String()
}

// TestBulkRequestActions: the actions of a _bulk body are counted as it
// streams, whatever its splits; a body that is not whole action lines
// counts as unknown, never as a wrong number.
func TestBulkRequestActions(t *testing.T) {
	count := func(body string, step int) int {
		c := Elasticsearch.NewItemCounter(Request{Path: "/logs/_bulk", RawQuery: "filter_path=items.*.error"})
		for len(body) > 0 {
			n := min(step, len(body))
			_, _ = c.Write([]byte(body[:n]))
			body = body[n:]
		}
		return c.Items()
	}
	for _, tc := range []struct {
		name string
		body string
		want int
	}{
		{"one of each", esBulkRequest(4), 4},
		{"a thousand", esBulkRequest(1000), 1000},
		{"blank lines between", "\n" + esBulkRequest(2) + "\n\n" + esBulkRequest(1), 3},
		{"last line unterminated", strings.TrimSuffix(esBulkRequest(3), "\n"), -1},
		{"source missing at the end", "{\"index\":{}}\n", -1},
		{"not an action", "{\"search\":{}}\n{}\n", -1},
		{"not JSON", "index\n", -1},
		{"empty", "", -1},
		// The line after an index, create or update is its source, even
		// empty (the item fails, but it is one): with \n or \r\n alike.
		{"empty source", "{\"index\":{}}\n\n{\"delete\":{}}\n{\"delete\":{}}\n", 3},
		{"empty source, CRLF", "{\"index\":{}}\r\n\r\n{\"delete\":{}}\r\n{\"delete\":{}}\r\n", 3},
	} {
		for _, step := range []int{1, 7, 1 << 20} {
			if got := count(tc.body, step); got != tc.want {
				t.Errorf("%s, in pieces of %d: %d actions, want %d", tc.name, step, got, tc.want)
			}
		}
	}
	if c := Elasticsearch.NewItemCounter(Request{Path: "/logs/_doc/1", RawQuery: "filter_path=items.*.error"}); c != nil {
		t.Error("a counter for a request that is no _bulk")
	}
	// A _bulk whose answer counts its items itself: its body is not walked.
	if c := Elasticsearch.NewItemCounter(Request{Path: "/logs/_bulk"}); c != nil {
		t.Error("a counter for a _bulk whose answer lists every item")
	}
	if got := Elasticsearch.RequestItems(Request{Path: "/_bulk", RawQuery: "filter_path=items.*.error"}, []byte(esBulkRequest(25))); got != 25 {
		t.Errorf("RequestItems: %d, want 25", got)
	}
}

func TestFilterListsErrorsOnly(t *testing.T) {
	for q, want := range map[string]bool{
		"filter_path=items.*.error":                   true,
		"filter_path=took,items.*.error&refresh=true": true,
		"filter_path=items.*.error%2Cerrors":          true,
		"":                                            false,
		"refresh=true":                                false,
		"filter_path=took":                            false,
		"filter_path=items.*.status,items.*.error": false,
		"filter_path=items.**":                     false,
		"filter_path=items.*.error,-took":          false,
		"filter_path=*,items.*.error":              false,
		"filter_path=%zz":                          false,
		// Wildcards that reach the items' status from above "items".
		"filter_path=items.*.error,**.status":  false,
		"filter_path=items.*.error,*.*.status": false,
		// Elasticsearch keeps the last of a repeated parameter.
		"filter_path=items.*.error&filter_path=items.*.status": false,
	} {
		if got := filterListsErrorsOnly(q); got != want {
			t.Errorf("filterListsErrorsOnly(%q) = %v, want %v", q, got, want)
		}
	}
}

// TestScannerErrorsOnly: a _bulk sent with filter_path=items.*.error (the
// bulk API reference's way "to return only information about failed
// operations") is answered with its failed items only, without their
// status, and with {} when none failed. With the request's count of
// actions that still says what was taken and what was refused; without it
// nothing is counted (Items -1), never a whole bulk refused.
func TestScannerErrorsOnly(t *testing.T) {
	rejected := `{"index":{"_index":"logs","_id":"7","error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"}}}`
	mapping := `{"create":{"_index":"logs","error":{"type":"mapper_parsing_exception","reason":"failed to parse","caused_by":{"type":"es_rejected_execution_exception"}}}}`
	openSearch := `{"update":{"error":{"reason":"x","type":"rejected_execution_exception"}}}`
	errorsOnly := "filter_path=items.*.error"
	for _, tc := range []struct {
		name     string
		query    string
		items    int
		body     string
		want     Result
		wantFrac float64
	}{
		{"all taken", errorsOnly, 1000, `{}`, Result{Kind: OK, Items: 1000}, 0},
		{"all taken, count unknown", errorsOnly, -1, `{}`, Result{Kind: OK, Items: -1}, 0},
		{"one rejected of a thousand", errorsOnly, 1000, `{"items":[` + rejected + `]}`,
			Result{Kind: Throttled, Reason: "es_bulk_item_429", Items: 999, Rejected: 1}, 0.001},
		{"OpenSearch's type, and a mapping error", errorsOnly, 10, `{"items":[` + openSearch + `,` + mapping + `]}`,
			Result{Kind: Throttled, Reason: "es_bulk_item_429", Items: 8, Rejected: 1, Failed: 1}, 0.1},
		{"a mapping error only", errorsOnly, 10, `{"items":[` + mapping + `]}`, Result{Kind: OK, Items: 9, Failed: 1}, 0},
		// Without the count (or with one the answer contradicts), what
		// was taken is not known: nothing is counted, never a bulk whose
		// every item failed.
		{"count unknown: listed items are failures", errorsOnly, -1, `{"items":[` + rejected + `]}`, Result{Kind: OK, Items: -1}, 0},
		{"more listed than sent", errorsOnly, 1, `{"items":[` + rejected + `,` + rejected + `]}`, Result{Kind: OK, Items: -1}, 0},
		{"no filter: an item without a status fails", "", 1000, `{"items":[` + rejected + `]}`, Result{Kind: OK, Items: -1}, 0},
		{"filter_path=items.index.error", "filter_path=items.index.error", 3, `{"items":[{"index":{"error":{"type":"mapper_parsing_exception"}}}]}`,
			Result{Kind: OK, Items: -1}, 0},
		{"filter_path=items.*.error,items.*._id", "filter_path=items.*.error,items.*._id", 3,
			`{"items":[{"index":{"_id":"a"}},{"index":{"_id":"b","error":{"type":"mapper_parsing_exception"}}},{"index":{"_id":"c"}}]}`,
			Result{Kind: OK, Items: -1}, 0},
		// A filter that drops the items: a 200 that says none failed (or
		// says nothing) took the bulk, of a count not known. Items 0
		// would be an empty bulk, which is no progress.
		{"filter_path=took: taken, count unknown", "filter_path=took", 1000, `{"took":3}`, Result{Kind: OK, Items: -1}, 0},
		{"filter_path=errors, none failed", "filter_path=took,errors", 1000, `{"took":3,"errors":false}`, Result{Kind: OK, Items: -1}, 0},
		{"no filter, no items", "", -1, `{"took":3,"errors":false}`, Result{Kind: OK, Items: -1}, 0},
		// One that says some failed, without saying which: nothing is
		// proven taken.
		{"filter_path=errors, some failed", "filter_path=took,errors", 1000, `{"took":3,"errors":true}`, Result{Kind: OK}, 0},
		// Statuses in the answer all the same (a filter taken for
		// errors-only that was not): they are read, not the count.
		{"statuses kept", errorsOnly, 2, `{"items":[{"index":{"status":201}},{"index":{"status":429,"error":{"type":"es_rejected_execution_exception"}}}]}`,
			Result{Kind: Throttled, Reason: "es_bulk_item_429", Items: 1, Rejected: 1}, 0.5},
		{"statuses kept, count unknown", errorsOnly, -1, `{"items":[{"index":{"status":201}},{"index":{"status":429,"error":{"type":"es_rejected_execution_exception"}}}]}`,
			Result{Kind: Throttled, Reason: "es_bulk_item_429", Items: 1, Rejected: 1}, 0.5},
	} {
		if tc.want.Kind == OK {
			tc.want.Reason = "status_200"
		}
		req := Request{Method: http.MethodPost, Path: "/logs/_bulk", RawQuery: tc.query, Items: tc.items}
		for _, step := range []int{1, 5, 1 << 20} {
			s := Elasticsearch.NewScanner(req, http.StatusOK, http.Header{"Content-Type": {"application/json"}}).(*bulkScanner)
			chunks := []int{}
			for n := step; n < len(tc.body); n += step {
				chunks = append(chunks, step)
			}
			got := feed(s, []byte(tc.body), chunks...)
			frac := got.Share
			got.Share = 0
			if got != tc.want || frac != tc.wantFrac {
				t.Errorf("%s, in pieces of %d:\n got %+v share %v\nwant %+v share %v", tc.name, step, got, frac, tc.want, tc.wantFrac)
			}
		}
	}
}

// BenchmarkBulkActions counts the actions of a 10 MiB _bulk body as the
// proxy does for one sent under filter_path=items.*.error (no other _bulk
// is walked): its cost per byte forwarded.
func BenchmarkBulkActions(b *testing.B) {
	var body strings.Builder
	doc := `{"msg":"` + strings.Repeat("x", 1000) + `"}` + "\n"
	for body.Len() < 10<<20 {
		body.WriteString(`{"index":{"_index":"logs"}}` + "\n" + doc)
	}
	buf := []byte(body.String())
	req := Request{Path: "/logs/_bulk", RawQuery: "filter_path=items.*.error"}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if Elasticsearch.RequestItems(req, buf) <= 0 {
			b.Fatal("no count")
		}
	}
}
