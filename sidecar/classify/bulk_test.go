package classify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

func TestNewScanner(t *testing.T) {
	jsonCT := hdr("Content-Type", "application/json; charset=UTF-8")
	f := func(p Profile, method, path string, status int, h http.Header, want bool) {
		t.Helper()
		s := p.NewScanner(Request{Method: method, Path: path}, status, h)
		if got := s != nil; got != want {
			t.Errorf("%v.NewScanner(%s %s, %d, %v) != nil is %v, want %v", p, method, path, status, h, got, want)
		}
	}
	f(Elasticsearch, "POST", "/_bulk", 200, jsonCT, true)
	f(Elasticsearch, "PUT", "/_bulk", 200, jsonCT, true)
	f(Elasticsearch, "POST", "/logs-2024/_bulk", 200, jsonCT, true)
	f(Elasticsearch, "POST", "_bulk", 200, nil, true)
	f(Elasticsearch, "POST", "/_bulk/", 200, jsonCT, true)
	f(Elasticsearch, "POST", "/_bulk?refresh=wait_for&filter_path=items.*.status", 200, jsonCT, true)
	f(Elasticsearch, "POST", "/_bulk", 200, hdr("Content-Type", "application/vnd.elasticsearch+json;compatible-with=8"), true)
	f(Elasticsearch, "POST", "/_bulk", 200, hdr("Content-Encoding", "identity"), true)

	f(Elasticsearch, "POST", "/_bulk", 429, jsonCT, false)
	f(Elasticsearch, "POST", "/_bulk", 500, jsonCT, false)
	f(Elasticsearch, "GET", "/_bulk", 200, jsonCT, false)
	f(Elasticsearch, "POST", "/logs/_doc", 200, jsonCT, false)
	f(Elasticsearch, "POST", "/my_bulk", 200, jsonCT, false)
	f(Elasticsearch, "POST", "/_bulk/x", 200, jsonCT, false)
	f(Elasticsearch, "POST", "/_bulk", 200, hdr("Content-Type", "application/cbor"), false)
	f(Elasticsearch, "POST", "/_bulk", 200, hdr("Content-Type", "application/json", "Content-Encoding", "gzip"), false)
	for p := Profile(0); p <= numProfiles; p++ {
		if p != Elasticsearch && p != S3 { // S3 reads every write's answer
			f(p, "POST", "/_bulk", 200, jsonCT, false)
		}
	}

	// A nil Scanner must be a nil interface, not a typed nil.
	var s Scanner = Generic.NewScanner(Request{Method: "POST", Path: "/_bulk"}, 200, nil)
	if s != nil {
		t.Errorf("typed nil Scanner: %#v", s)
	}
}

// scan feeds body to a fresh scanner in the given chunk sizes (the rest in
// one piece) and returns its Result.
func scan(body []byte, chunks ...int) Result {
	return feed(&bulkScanner{status: 200}, body, chunks...)
}

// feed writes body to s in the given chunk sizes (the rest in one piece)
// and returns its Result.
func feed(s *bulkScanner, body []byte, chunks ...int) Result {
	for _, n := range chunks {
		n = min(n, len(body))
		if k, err := s.Write(body[:n]); k != n || err != nil {
			panic(fmt.Sprintf("Write(%d bytes) = %d, %v", n, k, err))
		}
		body = body[n:]
	}
	s.Write(body)
	return s.Result()
}

// scanBytewise feeds body one byte at a time.
func scanBytewise(body []byte) Result {
	s := &bulkScanner{status: 200}
	for i := range body {
		s.Write(body[i : i+1])
	}
	return s.Result()
}

const esBulkPartial = `{"took":30,"errors":true,"items":[
{"index":{"_index":"logs-2024","_id":"1","_version":1,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},
{"create":{"_index":"logs-2024","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of primary operation [coordinating_and_primary_bytes=107289344, replica_bytes=0, all_bytes=107289344, primary_operation_bytes=2048, max_coordinating_and_primary_bytes=107374182]"}}},
{"update":{"_index":"logs-2024","_id":"3","status":404,"error":{"type":"document_missing_exception","reason":"[3]: document missing","index_uuid":"aAsFqTI0Tc2W0LCWgPNrOA","shard":"0","index":"logs-2024"}}},
{"delete":{"_index":"logs-2024","_id":"4","_version":2,"result":"deleted","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":3,"_primary_term":1,"status":200}}
]}`

// esBulkPretty is what ?pretty returns (ES 7, with _type).
const esBulkPretty = `{
  "took" : 4,
  "errors" : true,
  "items" : [
    {
      "index" : {
        "_index" : "test",
        "_type" : "_doc",
        "_id" : "1",
        "status" : 429,
        "error" : {
          "type" : "es_rejected_execution_exception",
          "reason" : "rejected execution of org.elasticsearch.transport.TransportService$7@5c3b5b1a on EsThreadPoolExecutor[name = node-1/write, queue capacity = 200, org.elasticsearch.common.util.concurrent.EsThreadPoolExecutor@3c8b5d2d[Running, pool size = 8, active threads = 8, queued tasks = 200, completed tasks = 1234567]]"
        }
      }
    },
    {
      "index" : {
        "_index" : "test",
        "_type" : "_doc",
        "_id" : "2",
        "_version" : 1,
        "result" : "created",
        "_shards" : { "total" : 2, "successful" : 1, "failed" : 0 },
        "_seq_no" : 0,
        "_primary_term" : 1,
        "status" : 201
      }
    }
  ]
}
`

// esBulkTricky hides statuses where they must not count: inside strings
// (with escaped quotes and a trailing escaped backslash), inside error
// objects, inside a returned _source, under a nested "items" key, and at
// the top level.
const esBulkTricky = `{"status":429,"took":1,"errors":true,"items":[
{"index":{"_index":"t","_id":"a\"status\":429\"","status":201}},
{"index":{"_index":"t","_id":"c:\\","status":201}},
{"index":{"_index":"t","_id":"\\\"status\":429,","status":201}},
{"create":{"_index":"t","_id":"e","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [\"status\":429] {\"items\":[{\"index\":{\"status\":429}}]}","status":429,"caused_by":{"type":"x","status":429}}}},
{"update":{"_index":"t","_id":"u","status":200,"get":{"_source":{"status":429,"items":[{"index":{"status":429}}]}}}},
{"index":{"_index":"t","_id":"k","status" : 429 }},
{"index":{"_index":"t","_id":"esc","\u0073tatus":429}},
{"index":{"_index":"t","_id":"notstatus","statuses":429,"stat":429,"status":201}},
{"index":{"_index":"t","_id":"n","status":"429"}},
{"index":{"_index":"t","_id":"f","status":429.0}},
{"index":{"_index":"t","_id":"big","status":4290}},
{"status":429},
[{"index":{"status":429}}],
"status",
429
],"after":{"items":[{"index":{"status":429}}]}}`

func TestScannerBodies(t *testing.T) {
	f := func(name, body string, want Result) {
		t.Helper()
		if want.Reason == "" {
			want.Reason = "status_200"
		}
		got := scan([]byte(body))
		if got != want {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
		}
		if got := scanBytewise([]byte(body)); got != want {
			t.Errorf("%s byte by byte:\n got %+v\nwant %+v", name, got, want)
		}
		if ref, ok := referenceBulk([]byte(body)); ok && ref != want {
			t.Errorf("%s: encoding/json reference %+v disagrees with the table", name, ref)
		}
	}
	throttled := func(items, rejected, failed int) Result {
		return Result{Kind: Throttled, Reason: "es_bulk_item_429", Items: items, Rejected: rejected, Failed: failed,
			Share: float64(rejected) / float64(items+rejected+failed)}
	}

	f("partial 429", esBulkPartial, throttled(2, 1, 1))
	f("pretty", esBulkPretty, throttled(1, 1, 0))
	f("tricky", esBulkTricky, throttled(5, 2, 5))
	f("all accepted", `{"took":3,"errors":false,"items":[{"index":{"_index":"t","_id":"1","status":201}},{"index":{"_index":"t","_id":"2","status":200}}]}`,
		Result{Kind: OK, Items: 2})
	f("all rejected", `{"took":3,"errors":true,"items":[{"index":{"status":429}},{"create":{"status":429}}]}`, throttled(0, 2, 0))
	f("filter_path=items.*.status", `{"items":[{"index":{"status":201}},{"index":{"status":429}},{"index":{"status":429}},{"index":{"status":201}}]}`,
		throttled(2, 2, 0))
	// An item refused with 503 (a primary shard not active within the
	// bulk's timeout) was not done and is to be sent again, as a 429: a
	// bulk whose every item got it is not a bulk the store took.
	unavailable := `{"index":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"[logs][0] primary shard is not active Timeout: [1m]"}}}`
	all503 := throttled(0, 2, 0)
	all503.Reason = "es_bulk_item_503"
	f("all unavailable", `{"took":60001,"errors":true,"items":[`+unavailable+`,`+unavailable+`]}`, all503)
	f("429 and 503", `{"errors":true,"items":[{"index":{"status":201}},{"index":{"status":429}},`+unavailable+`,{"index":{"status":500}}]}`,
		throttled(1, 2, 1))
	f("no items", `{"took":0,"errors":false,"items":[]}`, Result{Kind: OK})
	// Only one complete JSON object is counted: a body that is empty, not
	// JSON, cut short or followed by more says nothing about its items.
	unknown := Result{Kind: OK, Items: -1}
	f("empty", ``, unknown)
	f("not JSON", nginx429, unknown)
	f("an error object", esRejected, Result{Kind: OK})
	f("truncated mid-item", esBulkPartial[:strings.Index(esBulkPartial, `"_id":"3"`)], unknown)
	f("truncated mid-number", `{"items":[{"index":{"status":201}},{"index":{"status":42`, unknown)
	f("stray closers", `]]}}{"items":[{"index":{"status":429}}]}`, unknown)
	f("two top-level values", `{"items":[{"index":{"status":429}}]}{"items":[{"index":{"status":201}}]}`, unknown)
	f("garbage around an item", "\x00\xff<html>{\"items\":[{\"index\":{\"status\":201 not json at all]]]\n", unknown)
	f("mismatched closers", `{"items":[{"index":{"status":201]]}`, unknown)
	f("deep nesting", `{"items":[{"index":{"status":201,"x":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}}]}`, Result{Kind: OK, Items: 1})
}

// TestScannerLarge feeds a 50,000-item response of several MiB in random
// chunk sizes and checks the counts exactly.
func TestScannerLarge(t *testing.T) {
	body, want := bulkResponse(50_000, 1)
	if len(body) < 4<<20 {
		t.Fatalf("body is only %d bytes", len(body))
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for _, maxChunk := range []int{7, 300, 5000, 70000} {
		s := &bulkScanner{status: 200}
		for rest := body; len(rest) > 0; {
			n := min(1+rng.IntN(maxChunk), len(rest))
			s.Write(rest[:n])
			rest = rest[n:]
		}
		if got := s.Result(); got != want {
			t.Fatalf("chunks of 1..%d bytes:\n got %+v\nwant %+v", maxChunk, got, want)
		}
	}
	if ref, ok := referenceBulk(body); !ok || ref != want {
		t.Fatalf("encoding/json reference: %+v, %v; want %+v", ref, ok, want)
	}
	small, smallWant := bulkResponse(1000, 5)
	if got := scanBytewise(small); got != smallWant {
		t.Fatalf("byte by byte:\n got %+v\nwant %+v", got, smallWant)
	}
	t.Logf("%d bytes, %+v", len(body), want)
}

// TestScannerThroughCopy runs the scanner the way the proxy will: as the
// second writer of an io.MultiWriter in io.Copy, with the loader's side
// receiving every byte unchanged.
func TestScannerThroughCopy(t *testing.T) {
	body, want := bulkResponse(2_000, 2)
	s := Elasticsearch.NewScanner(Request{Method: http.MethodPost, Path: "/logs/_bulk"}, 200, hdr("Content-Type", "application/json"))
	var loader bytes.Buffer
	n, err := io.Copy(io.MultiWriter(&loader, s), bytes.NewReader(body))
	if err != nil || n != int64(len(body)) {
		t.Fatalf("io.Copy = %d, %v", n, err)
	}
	if !bytes.Equal(loader.Bytes(), body) {
		t.Fatal("the loader did not receive the body unchanged")
	}
	if got := s.Result(); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if again := s.Result(); again != want {
		t.Fatalf("a second Result differs: %+v", again)
	}
}

// bulkResponse builds a realistic bulk response of n items: about 7% are
// rejected with 429 and 1% fail with a mapping error, some ids contain
// quotes, backslashes and the text "status":429. It returns the body and
// the Result a scanner must produce.
func bulkResponse(n int, seed uint64) ([]byte, Result) {
	rng := rand.New(rand.NewPCG(seed, 42))
	var b bytes.Buffer
	b.WriteString(`{"took":1873,"errors":true,"items":[`)
	var items, rejected, failed int
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		id := fmt.Sprintf("doc-%08d", i)
		if rng.IntN(50) == 0 {
			id += `\"status\":429\\`
		}
		switch r := rng.IntN(100); {
		case r < 7:
			rejected++
			fmt.Fprintf(&b, `{"create":{"_index":"logs-2024.06.01","_id":"%s","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of primary operation [coordinating_and_primary_bytes=107289344, replica_bytes=0, all_bytes=107289344, primary_operation_bytes=%d, max_coordinating_and_primary_bytes=107374182]"}}}`, id, 1000+r)
		case r < 8:
			failed++
			fmt.Fprintf(&b, `{"index":{"_index":"logs-2024.06.01","_id":"%s","status":400,"error":{"type":"document_parsing_exception","reason":"[1:27] failed to parse field [ts] of type [date] in document with id '%s'. Preview of field's value: '\"status\":429'","caused_by":{"type":"illegal_argument_exception","reason":"failed to parse date field [x]","status":429}}}}`, id, id)
		default:
			items++
			fmt.Fprintf(&b, `{"index":{"_index":"logs-2024.06.01","_id":"%s","_version":1,"result":"created","_shards":{"total":2,"successful":2,"failed":0},"_seq_no":%d,"_primary_term":1,"status":201}}`, id, i)
		}
	}
	b.WriteString(`]}`)
	return b.Bytes(), Result{
		Kind: Throttled, Reason: "es_bulk_item_429",
		Items: items, Rejected: rejected, Failed: failed,
		Share: float64(rejected) / float64(items+rejected+failed),
	}
}

// referenceBulk counts a valid JSON bulk response with encoding/json, by
// the rules the scanner implements: an item is an object element of an
// array under a top-level "items" key; its status is the last integer
// value of a "status" key in an object directly inside it. ok is false if
// body is not a single valid JSON value.
func referenceBulk(body []byte) (Result, bool) {
	if !json.Valid(body) {
		return Result{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	root, err := decodeOrdered(dec)
	if err != nil {
		panic(err) // json.Valid said yes
	}
	s := &bulkScanner{status: 200}
	if root.object {
		for i, k := range root.keys {
			v := root.vals[i]
			if k == "errors" && v.isTrue || k == "error" {
				s.failed1 = true
			}
			if k != "items" || !v.array {
				continue
			}
			s.sawItems = true
			for _, item := range v.vals {
				if !item.object {
					continue
				}
				s.itemStatus = noStatus
				for _, action := range item.vals {
					if !action.object {
						continue
					}
					for j, k := range action.keys {
						if k != "status" || action.vals[j].num == "" {
							continue
						}
						s.itemStatus = badStatus
						num := action.vals[j].num
						if strings.Trim(string(num), "0123456789") == "" {
							s.itemStatus = 1000
							if len(num) <= 3 {
								fmt.Sscan(string(num), &s.itemStatus)
							}
						}
					}
				}
				s.countItem()
			}
		}
	}
	// A valid JSON value: the scanner counts only a complete object.
	s.opened, s.closed = root.object, root.object
	return s.Result(), true
}

// value is a JSON value that keeps object keys in order and duplicates.
type value struct {
	object, array bool
	keys          []string
	vals          []*value
	num           json.Number
	isTrue        bool
}

func decodeOrdered(dec *json.Decoder) (*value, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	v := &value{}
	switch tok := tok.(type) {
	case json.Delim:
		v.object = tok == '{'
		v.array = tok == '['
		for dec.More() {
			if v.object {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v.keys = append(v.keys, k.(string))
			}
			e, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			v.vals = append(v.vals, e)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
	case json.Number:
		v.num = tok
	case bool:
		v.isTrue = tok
	}
	return v, nil
}

// BenchmarkScanner measures scanner throughput on a 50,000-item response
// written in the 32 KiB chunks io.Copy uses.
func BenchmarkScanner(b *testing.B) {
	body, want := bulkResponse(50_000, 1)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		s := &bulkScanner{status: 200}
		for rest := body; len(rest) > 0; {
			n := min(32<<10, len(rest))
			s.Write(rest[:n])
			rest = rest[n:]
		}
		if s.Result() != want {
			b.Fatal("wrong result")
		}
	}
}
