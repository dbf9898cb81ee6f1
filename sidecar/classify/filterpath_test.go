package classify

import "testing"

// TestScannerFilterPath covers the bulk answers Elasticsearch sends for a
// _bulk with filter_path, which its bulk API reference recommends
// ("To return only information about failed operations, use
// filter_path=items.*.error"): an all-accepted bulk answers `{}` (every
// item filtered out), and a rejected item keeps its error but loses its
// status.
func TestScannerFilterPath(t *testing.T) {
	f := func(name, body string, want Result) {
		t.Helper()
		if want.Reason == "" {
			want.Reason = "status_200"
		}
		if got := scan([]byte(body)); got != want {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
		}
		if got := scanBytewise([]byte(body)); got != want {
			t.Errorf("%s byte by byte:\n got %+v\nwant %+v", name, got, want)
		}
		if ref, ok := referenceBulk([]byte(body)); ok && ref != want {
			t.Errorf("%s: encoding/json reference %+v disagrees with the table", name, ref)
		}
	}
	unknown := Result{Kind: OK, Items: -1}
	// Nothing failed, the items are filtered out: the count is unknown, not
	// zero (zero is an empty bulk, which the proxy counts as no progress).
	f("items.*.error, all accepted", `{}`, unknown)
	f("errors only, all accepted", `{"took":12,"errors":false}`, unknown)
	// Something failed and the items are not shown: nothing is proven.
	f("errors only, some failed", `{"took":12,"errors":true}`, Result{Kind: OK})

	// The rejected item has no status, only its error: still a 429.
	rejected := `{"index":{"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of primary operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, primary_operation_bytes=2048, max_coordinating_and_primary_bytes=107374182]"}}}`
	osRejectedItem := `{"create":{"error":{"type":"rejected_execution_exception","reason":"rejected execution"}}}`
	mapping := `{"index":{"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [ts]"}}}`
	f("items.*.error, one rejected", `{"items":[`+rejected+`]}`,
		Result{Kind: Throttled, Reason: "es_bulk_item_429", Rejected: 1, Share: 1})
	f("items.*.error, rejected and mapping", `{"items":[`+rejected+`,`+osRejectedItem+`,`+mapping+`]}`,
		Result{Kind: Throttled, Reason: "es_bulk_item_429", Rejected: 2, Failed: 1, Share: 2.0 / 3})
	f("items.*.error, mapping only", `{"items":[`+mapping+`]}`, Result{Kind: OK, Failed: 1})
	// A status, when there is one, decides.
	f("status and error", `{"items":[{"index":{"status":400,"error":{"type":"es_rejected_execution_exception"}}}]}`,
		Result{Kind: OK, Failed: 1})
	// The type must be the error's own, directly under the action.
	f("type elsewhere", `{"items":[{"index":{"error":{"caused_by":{"type":"es_rejected_execution_exception"}},"type":"es_rejected_execution_exception"}}]}`,
		Result{Kind: OK, Failed: 1})
}
