package classify

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

const batchWriteTarget = "DynamoDB_20120810.BatchWriteItem"

// dynamoPartial is a BatchWriteItem answer from the DynamoDB documentation's
// shape: two writes handed back, one per table, and the capacity consumed.
// Attribute maps nest objects (M, L of M) that are not writes, a string
// value spells the key and braces, and ItemCollectionMetrics has the same
// shape as UnprocessedItems.
const dynamoPartial = `{
  "UnprocessedItems": {
    "Forum": [
      {"PutRequest": {"Item": {"Name": {"S": "Amazon ElastiCache"}, "Tags": {"L": [{"M": {"k": {"S": "{\"UnprocessedItems\":{\"x\":[{}]}}"}}}]}}}}
    ],
    "Thread": [
      {"DeleteRequest": {"Key": {"ForumName": {"S": "Amazon S3"}, "Subject": {"S": "S3 thread 1"}}}}
    ]
  },
  "ItemCollectionMetrics": {
    "Thread": [{"ItemCollectionKey": {"ForumName": {"S": "Amazon S3"}}, "SizeEstimateRangeGB": [0.0, 1.0]}]
  },
  "ConsumedCapacity": [{"TableName": "Forum", "CapacityUnits": 3}, {"TableName": "Thread", "CapacityUnits": 2}]
}`

func dynamoScanner(requested int) *bulkScanner {
	return &bulkScanner{status: 200, dynamo: true, listKey: "UnprocessedItems", requested: requested}
}

func TestNewScannerDynamoDB(t *testing.T) {
	amzJSON := hdr("Content-Type", "application/x-amz-json-1.0")
	batch := Request{Method: http.MethodPost, Path: "/", Header: hdr("X-Amz-Target", batchWriteTarget), Items: 4}
	f := func(p Profile, req Request, status int, h http.Header, want bool) {
		t.Helper()
		wantScanner(t, p, req, status, h, want)
	}
	f(DynamoDB, batch, 200, amzJSON, true)
	f(DynamoDB, batch, 200, nil, true)
	f(DynamoDB, Request{Method: http.MethodPost, Header: hdr("X-Amz-Target", "DynamoDB_20111205.BatchWriteItem")}, 200, amzJSON, true)

	f(DynamoDB, batch, 400, amzJSON, false)
	f(DynamoDB, batch, 200, hdr("Content-Type", "application/x-amz-cbor-1.1"), false)
	f(DynamoDB, batch, 200, hdr("Content-Type", "application/x-amz-json-1.0", "Content-Encoding", "gzip"), false)
	f(DynamoDB, Request{Method: http.MethodGet, Header: batch.Header}, 200, amzJSON, false)
	for _, target := range []string{"", "DynamoDB_20120810.PutItem", "DynamoDB_20120810.BatchGetItem", "BatchWriteItem", "Kinesis_20131202.BatchWriteItem"} {
		f(DynamoDB, Request{Method: http.MethodPost, Header: hdr("X-Amz-Target", target)}, 200, amzJSON, false)
	}
	for p := Profile(0); p <= numProfiles; p++ {
		if p != DynamoDB && p != S3 { // S3 reads every write's answer
			f(p, batch, 200, amzJSON, false)
		}
	}
	s := DynamoDB.NewScanner(batch, 200, amzJSON).(*bulkScanner)
	if !s.dynamo || s.requested != 4 {
		t.Errorf("scanner %+v, want a DynamoDB scanner of 4 writes", s)
	}
}

func TestDynamoDBUnprocessed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      string
		requested int
		want      Result
	}{
		{"none", `{"UnprocessedItems":{},"ConsumedCapacity":[{"TableName":"Forum","CapacityUnits":25}]}`, 25,
			Result{Kind: OK, Reason: "status_200", Items: 25}},
		{"none, empty tables", `{"UnprocessedItems":{"Forum":[]}}`, 3, Result{Kind: OK, Reason: "status_200", Items: 3}},
		{"no key at all", `{}`, 3, Result{Kind: OK, Reason: "status_200", Items: 3}},
		{"item collection metrics are not writes", `{"UnprocessedItems":{},"ItemCollectionMetrics":{"T":[{"ItemCollectionKey":{}}]}}`, 3,
			Result{Kind: OK, Reason: "status_200", Items: 3}},
		{"two of eight", dynamoPartial, 8,
			Result{Kind: Throttled, Reason: "dynamodb_unprocessed_items", Share: 0.25, Items: 6, Rejected: 2, Scoped: true}},
		{"all handed back", dynamoPartial, 2,
			Result{Kind: Throttled, Reason: "dynamodb_unprocessed_items", Share: 1, Items: 0, Rejected: 2, Scoped: true}},
		{"count unknown: at least n of 25", dynamoPartial, 0,
			Result{Kind: Throttled, Reason: "dynamodb_unprocessed_items", Share: 0.08, Items: -1, Rejected: 2, Scoped: true}},
		{"more handed back than sent: count is wrong", dynamoPartial, 1,
			Result{Kind: Throttled, Reason: "dynamodb_unprocessed_items", Share: 0.08, Items: -1, Rejected: 2, Scoped: true}},
		{"ok, count unknown", `{"UnprocessedItems":{}}`, 0, Result{Kind: OK, Reason: "status_200", Items: -1}},
		{"escaped key", `{"Unprocessed\u0049tems":{"T":[{"PutRequest":{}}]}}`, 4,
			Result{Kind: Throttled, Reason: "dynamodb_unprocessed_items", Share: 0.25, Items: 3, Rejected: 1, Scoped: true}},
		{"the last key counts", `{"UnprocessedItems":{"T":[{},{}]},"UnprocessedItems":{"T":[{}]}}`, 4,
			Result{Kind: Throttled, Reason: "dynamodb_unprocessed_items", Share: 0.25, Items: 3, Rejected: 1, Scoped: true}},
		{"a table that is no list", `{"UnprocessedItems":{"T":{"U":{}}}}`, 4, Result{Kind: OK, Reason: "status_200", Items: 4}},
		{"nested key is not the answer's", `{"Other":{"UnprocessedItems":{"T":[{}]}}}`, 4, Result{Kind: OK, Reason: "status_200", Items: 4}},
		{"other case", `{"unprocessedItems":{"T":[{}]}}`, 4, Result{Kind: OK, Reason: "status_200", Items: 4}},
		{"cut short", dynamoPartial[:len(dynamoPartial)/2], 8, Result{Kind: OK, Reason: "status_200", Items: -1}},
		{"garbage", `<html>503</html>`, 8, Result{Kind: OK, Reason: "status_200", Items: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			if got := feed(dynamoScanner(tc.requested), body); got != tc.want {
				t.Errorf("whole: %+v, want %+v", got, tc.want)
			}
			for i := range body {
				if got := feed(dynamoScanner(tc.requested), body, i); got != tc.want {
					t.Fatalf("split at %d: %+v, want %+v", i, got, tc.want)
				}
			}
			if n, _, ok := referenceWrites(body, "UnprocessedItems"); ok && n >= 0 && wantDynamo(n, tc.requested) != tc.want {
				t.Errorf("encoding/json reference counts %d: %+v, want %+v", n, wantDynamo(n, tc.requested), tc.want)
			}
		})
	}
}

func TestRequestItems(t *testing.T) {
	batch := hdr("X-Amz-Target", batchWriteTarget)
	body := `{"RequestItems":{
  "Forum":[{"PutRequest":{"Item":{"Name":{"S":"a"},"Nested":{"M":{"x":{"S":"{\"PutRequest\":{}}"}}}}}},{"DeleteRequest":{"Key":{"Name":{"S":"b"}}}}],
  "Thread":[ {"PutRequest":{"Item":{"Subject":{"S":"c"}}}} ]},
 "ReturnConsumedCapacity":"TOTAL"}`
	f := func(p Profile, h http.Header, body string, want int) {
		t.Helper()
		if got := p.RequestItems(Request{Path: "/", Header: h}, []byte(body)); got != want {
			t.Errorf("%v.RequestItems(/, %v, %.40q) = %d, want %d", p, h, body, got, want)
		}
	}
	f(DynamoDB, batch, body, 3)
	f(DynamoDB, batch, `{"RequestItems":{}}`, 0)
	f(DynamoDB, hdr("X-Amz-Target", "DynamoDB_20120810.PutItem"), body, -1)
	f(DynamoDB, nil, body, -1)
	f(Elasticsearch, batch, body, -1)
	f(DynamoDB, batch, `{"TableName":"Forum"}`, -1)
	f(DynamoDB, batch, `{"RequestItems":{"Forum":{}}}`, 0) // DynamoDB refuses it with a 400
	f(DynamoDB, batch, `{"RequestItems":{"Forum":[{}]}} {}`, -1)
	f(DynamoDB, batch, body[:len(body)-3], -1)
	f(DynamoDB, batch, "", -1)
}

// TestBatchWriteRoundTrip counts a generated BatchWriteItem request and
// scans its answer with some writes handed back, as the proxy does.
func TestBatchWriteRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		tables := map[string][]map[string]any{}
		n := 1 + rng.IntN(maxBatchWrites)
		var back []int
		for i := range n {
			table := []string{"Forum", "Thread", "Reply"}[rng.IntN(3)]
			w := map[string]any{"PutRequest": map[string]any{"Item": map[string]any{"Id": map[string]any{"S": strings.Repeat("}{\"", i)}}}}
			tables[table] = append(tables[table], w)
			if rng.IntN(3) == 0 {
				back = append(back, i)
			}
		}
		req, _ := json.Marshal(map[string]any{"RequestItems": tables})
		h := hdr("X-Amz-Target", batchWriteTarget)
		if got := DynamoDB.RequestItems(Request{Path: "/", Header: h}, req); got != n {
			t.Fatalf("RequestItems = %d, want %d", got, n)
		}
		unprocessed := map[string][]any{}
		for _, i := range back {
			unprocessed["Forum"] = append(unprocessed["Forum"], map[string]any{"DeleteRequest": map[string]any{"Key": map[string]any{"Id": map[string]any{"N": i}}}})
		}
		resp, _ := json.MarshalIndent(map[string]any{"UnprocessedItems": unprocessed}, "", "  ")
		s := DynamoDB.NewScanner(Request{Method: http.MethodPost, Header: h, Items: n}, 200, hdr("Content-Type", "application/x-amz-json-1.0"))
		if _, err := s.Write(resp); err != nil {
			t.Fatal(err)
		}
		r := s.Result()
		if r.Rejected != len(back) || r.Items != n-len(back) || (r.Kind == Throttled) != (len(back) > 0) {
			t.Fatalf("%d writes, %d handed back: %+v\n%s", n, len(back), r, resp)
		}
	}
}

func FuzzDynamoDBScanner(f *testing.F) {
	for _, s := range []string{
		dynamoPartial, `{"UnprocessedItems":{}}`, `{"Unprocessed\u0049tems":{"T":[{}]}}`,
		`{"UnprocessedItems":{"T":[{},{}]},"UnprocessedItems":{"T":[{}]}}`,
		`{"UnprocessedItems":[{"T":[{}]}]}`, `{"UnprocessedItems":{"T":{"U":[{}]}}}`,
		`{"UnprocessedItems":{"T":[{},1,"{",[{}]]}}`, `{"UnprocessedItems":{"T":[{`, "", "}}", `"\`,
		`{"UnprocessedItems":{"T":{"U":{}}}}`, `{"RequestItems":{"T":[{"PutRequest":{}}]}}`, "[]", "1",
	} {
		f.Add([]byte(s), uint8(3), uint64(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, requested uint8, seed uint64) {
		req := int(requested % 30)
		whole := feed(dynamoScanner(req), body)
		checkResultInvariants(t, whole)
		if (whole.Kind == Throttled) != (whole.Rejected > 0) || whole.Failed != 0 || whole.Items < -1 ||
			whole.Items >= 0 && whole.Items+whole.Rejected != req {
			t.Fatalf("inconsistent counts for %d writes: %+v", req, whole)
		}
		chunks := randomChunks(seed, len(body))
		if got := feed(dynamoScanner(req), body, chunks...); got != whole {
			t.Fatalf("split %v: %+v, whole: %+v", chunks, got, whole)
		}
		// On valid JSON the scanner agrees with encoding/json.
		if n, _, ok := referenceWrites(body, "UnprocessedItems"); ok {
			want := Result{Kind: OK, Reason: "status_200", Items: -1} // not an object
			if n >= 0 {
				want = wantDynamo(n, req)
			}
			if want != whole {
				t.Fatalf("encoding/json reference counts %d: %+v, scanner: %+v", n, want, whole)
			}
		}
		// The same machine counts a request's writes.
		c := DynamoDB.NewItemCounter(Request{Path: "/", Header: hdr("X-Amz-Target", batchWriteTarget)})
		feedCounter(c, body, chunks)
		if n, saw, ok := referenceWrites(body, "RequestItems"); ok {
			want := -1
			if saw {
				want = n
			}
			if got := c.Items(); got != want {
				t.Fatalf("request counter %d, encoding/json reference %d", got, want)
			}
		}
	})
}

func feedCounter(c ItemCounter, body []byte, chunks []int) {
	for _, n := range chunks {
		_, _ = c.Write(body[:n])
		body = body[n:]
	}
}

// wantDynamo is the Result for an answer handing back unprocessed of
// requested writes (0: unknown), worked out apart from the scanner.
func wantDynamo(unprocessed, requested int) Result {
	r := Result{Kind: OK, Reason: "status_200", Items: -1}
	known := requested > 0 && requested >= unprocessed
	if known {
		r.Items = requested - unprocessed
	}
	if unprocessed > 0 {
		r.Kind, r.Reason, r.Rejected = Throttled, "dynamodb_unprocessed_items", unprocessed
		r.Scoped = true
		r.Share = float64(unprocessed) / 25
		if known {
			r.Share = float64(unprocessed) / float64(requested)
		}
		r.Share = min(r.Share, 1)
	}
	return r
}

// referenceWrites counts, with encoding/json, the writes of a valid JSON
// body: the objects in the arrays of the last top-level key whose value is
// an object. saw reports whether there was one; ok is false for a body
// that is not valid JSON (n is then -1). A valid body that is not an
// object counts -1: the scanner takes it as garbage.
func referenceWrites(body []byte, key string) (n int, saw, ok bool) {
	if !json.Valid(body) {
		return -1, false, false
	}
	root, err := decodeOrdered(json.NewDecoder(bytes.NewReader(body)))
	if err != nil {
		panic(err) // json.Valid said yes
	}
	if !root.object {
		return -1, false, true
	}
	for i, k := range root.keys {
		if v := root.vals[i]; k == key && v.object {
			n, saw = 0, true
			for _, table := range v.vals {
				for _, w := range table.vals {
					if table.array && w.object {
						n++
					}
				}
			}
		}
	}
	return n, saw, true
}

// BenchmarkRequestItems counts the writes of a BatchWriteItem of 25 writes
// of 320 KiB each (8 MiB, the default SLUICE_RETRY_BODY_MAX), as the proxy
// does for every buffered body.
func BenchmarkRequestItems(b *testing.B) {
	var body bytes.Buffer
	body.WriteString(`{"RequestItems":{"Forum":[`)
	for i := range maxBatchWrites {
		if i > 0 {
			body.WriteByte(',')
		}
		body.WriteString(`{"PutRequest":{"Item":{"Id":{"S":"` + strings.Repeat("x", 320<<10) + `"}}}}`)
	}
	body.WriteString(`]}}`)
	h := hdr("X-Amz-Target", batchWriteTarget)
	b.SetBytes(int64(body.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if DynamoDB.RequestItems(Request{Path: "/", Header: h}, body.Bytes()) != maxBatchWrites {
			b.Fatal("wrong count")
		}
	}
}

// wantScanner checks whether p.NewScanner has a Scanner for this answer.
func wantScanner(t *testing.T, p Profile, req Request, status int, h http.Header, want bool) {
	t.Helper()
	if got := p.NewScanner(req, status, h) != nil; got != want {
		t.Errorf("%v.NewScanner(%+v, %d, %v) != nil is %v, want %v", p, req, status, h, got, want)
	}
}

// A BatchExecuteStatement answer (PartiQL's batch of writes) is a 200 with
// one element of "Responses" per statement, and an "Error" in those that
// failed; a throttle of the statement's table is one of them, read as the
// share of the batch it refused, as BatchWriteItem's UnprocessedItems are.
// Other errors (a condition that failed) are the loader's, and the
// account's request limit is store-wide.
func TestDynamoDBBatchExecuteStatement(t *testing.T) {
	req := Request{Method: http.MethodPost, Path: "/", Header: hdr("X-Amz-Target", "DynamoDB_20120810.BatchExecuteStatement")}
	amzJSON := hdr("Content-Type", "application/x-amz-json-1.0")
	if !DynamoDB.ScansAnswer(req) || DynamoDB.NewScanner(req, 200, amzJSON) == nil {
		t.Fatal("a BatchExecuteStatement answer is not scanned")
	}
	ok := `{"TableName":"Orders"}`
	item := `{"TableName":"Orders","Item":{"Error":{"S":"ThrottlingError"},"Code":{"S":"x"}}}`
	throttled := `{"Error":{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity for one or more global secondary indexes."},"TableName":"Orders"}`
	provisioned := `{"TableName":"Orders","Error":{"Message":"The level of configured provisioned throughput for the table was exceeded.","Code":"ProvisionedThroughputExceeded"}}`
	condition := `{"Error":{"Code":"ConditionalCheckFailed","Message":"The conditional request failed"}}`
	account := `{"Error":{"Code":"RequestLimitExceeded","Message":"Throughput exceeds the current throughput limit for your account."}}`
	for _, tc := range []struct {
		name string
		body string
		want Result
	}{
		{"all taken", `{"Responses":[` + ok + `,` + item + `]}`, Result{Kind: OK, Reason: "status_200", Items: 2}},
		{"two throttled of four", `{"Responses":[` + ok + `,` + throttled + `,` + provisioned + `,` + ok + `],"ConsumedCapacity":[{"TableName":"Orders","CapacityUnits":2}]}`,
			Result{Kind: Throttled, Reason: "dynamodb_statement_throttled", Share: 0.5, Items: 2, Rejected: 2, Scoped: true}},
		{"a condition that failed", `{"Responses":[` + ok + `,` + condition + `]}`, Result{Kind: OK, Reason: "status_200", Items: 1, Failed: 1}},
		{"the account's limit", `{"Responses":[` + throttled + `,` + account + `,` + condition + `,` + ok + `]}`,
			Result{Kind: Throttled, Reason: "dynamodb_request_limit_exceeded", Share: 0.5, Items: 1, Rejected: 2, Failed: 1}},
		{"no responses", `{}`, Result{Kind: OK, Reason: "status_200", Items: -1}},
		{"cut short", `{"Responses":[` + ok + `,` + throttled, Result{Kind: OK, Reason: "status_200", Items: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			for i := range body {
				s := DynamoDB.NewScanner(req, 200, amzJSON)
				if got := feed(s.(*bulkScanner), body, i); got != tc.want {
					t.Fatalf("split at %d: %+v, want %+v", i, got, tc.want)
				}
			}
		})
	}
}
