package classify

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func scopesOf(p Profile, rules ScopeRules, req Request, job string, body []byte) []string {
	var ws WriteScopes
	p.Scopes(rules, req, job, body, &ws)
	out := make([]string, ws.Len())
	for i := range out {
		out[i] = ws.At(i)
	}
	return out
}

func TestScopesS3(t *testing.T) {
	f := func(path string, depth int, want ...string) {
		t.Helper()
		got := scopesOf(S3, ScopeRules{KeyDepth: depth}, Request{Method: "PUT", Path: path}, "job", nil)
		if !slices.Equal(got, want) {
			t.Errorf("S3 depth %d %q: %q, want %q", depth, path, got, want)
		}
	}
	f("/logs/2024/05/01/part-0001.parquet", 1, "logs/2024/")
	f("/logs/2024/05/01/part-0001.parquet", 2, "logs/2024/05/")
	f("/logs/2024/05/01/part-0001.parquet", 0, "logs/")
	f("/logs/2024/05/01/part-0001.parquet", 9, "logs/2024/05/01/") // never the object's name
	f("/logs/part-0001.parquet", 1, "logs/")
	f("/logs/part-0001.parquet", 0, "logs/")
	f("/logs", 1, "logs/")
	f("/logs/", 1, "logs/")
	f("/", 1)
	f("", 1)
	f("//x", 1) // no bucket
}

// A virtual-hosted upstream names its bucket in its host: the whole path
// is the key. Read as path-style, a flat key was a scope of its own that
// no later write took from, so S3's SlowDown slowed nothing, and a key's
// first directory passed for the bucket.
func TestScopesVirtualHosted(t *testing.T) {
	f := func(p Profile, path string, depth int, want ...string) {
		t.Helper()
		got := scopesOf(p, ScopeRules{KeyDepth: depth, Bucket: "events"}, Request{Method: "PUT", Path: path}, "job", nil)
		if !slices.Equal(got, want) {
			t.Errorf("%v depth %d %q: %q, want %q", p, depth, path, got, want)
		}
	}
	f(S3, "/part-0001.parquet", 1, "events/")
	f(S3, "/part-0002.parquet", 1, "events/")
	f(S3, "/logs/2024/05/part-0001.parquet", 1, "events/logs/")
	f(S3, "/logs/2024/05/part-0001.parquet", 2, "events/logs/2024/")
	f(S3, "/logs/2024/05/part-0001.parquet", 0, "events/")
	f(S3, "/", 1, "events/") // a bucket operation
	f(GCS, "/raw/2024/a.json", 1, "events/raw/")
	f(GCS, "/a.json", 1, "events/")
	// The JSON API names its bucket in the path, whatever the host.
	f(GCS, "/storage/v1/b/other/o/raw/a.json", 1, "other/raw/")
}

func TestBucketOfHost(t *testing.T) {
	f := func(p Profile, host, want string) {
		t.Helper()
		if got := BucketOfHost(p, host); got != want {
			t.Errorf("BucketOfHost(%v, %q) = %q, want %q", p, host, got, want)
		}
	}
	f(S3, "logs.s3.eu-west-1.amazonaws.com", "logs")
	f(S3, "logs.s3.amazonaws.com", "logs")
	f(S3, "logs.s3-eu-west-1.amazonaws.com", "logs")
	f(S3, "logs.s3-accelerate.amazonaws.com", "logs")
	f(S3, "logs.s3.dualstack.eu-west-1.amazonaws.com", "logs")
	f(S3, "Logs.S3.eu-west-1.amazonaws.com:443", "logs")
	f(S3, "my.s3.logs.s3.eu-west-1.amazonaws.com", "my.s3.logs")
	f(S3, "logs.s3.cn-north-1.amazonaws.com.cn", "logs")
	f(S3, "logs.vpce-0a1b2c3d-4e5f.s3.eu-west-1.vpce.amazonaws.com", "logs")
	// Path-style hosts and hosts that do not say.
	f(S3, "s3.eu-west-1.amazonaws.com", "")
	f(S3, "s3-eu-west-1.amazonaws.com", "")
	f(S3, "vpce-0a1b2c3d-4e5f.s3.eu-west-1.vpce.amazonaws.com", "")
	f(S3, "logs.minio.internal:9000", "")
	f(S3, "127.0.0.1:9000", "")
	f(S3, "logs.storage.googleapis.com", "logs")
	f(GCS, "logs.storage.googleapis.com", "logs")
	f(GCS, "storage.googleapis.com", "")
	f(GCS, "logs.s3.eu-west-1.amazonaws.com", "")
	f(DynamoDB, "dynamodb.eu-west-1.amazonaws.com", "")
}

func TestScopesGCS(t *testing.T) {
	f := func(path, query string, want ...string) {
		t.Helper()
		got := scopesOf(GCS, ScopeRules{KeyDepth: 1}, Request{Method: "POST", Path: path, RawQuery: query}, "job", nil)
		if !slices.Equal(got, want) {
			t.Errorf("GCS %q?%s: %q, want %q", path, query, got, want)
		}
	}
	f("/upload/storage/v1/b/events/o", "uploadType=media&name=raw%2F2024%2Fa.json", "events/raw/")
	f("/upload/storage/v1/b/events/o", "uploadType=media&name=a.json", "events/")
	f("/upload/storage/v1/b/events/o", "uploadType=media", "events/")
	f("/storage/v1/b/events/o/raw/2024/a.json", "", "events/raw/")
	f("/events/raw/2024/a.json", "", "events/raw/") // the XML API
	f("/storage/v1/b/", "", nil...)
}

func TestScopesDynamoDB(t *testing.T) {
	f := func(body string, want ...string) {
		t.Helper()
		got := scopesOf(DynamoDB, ScopeRules{}, Request{Method: "POST", Path: "/"}, "job", []byte(body))
		if !slices.Equal(got, want) {
			t.Errorf("DynamoDB %.80q: %q, want %q", body, got, want)
		}
	}
	// BatchWriteItem over two tables takes from each, sorted.
	f(`{"RequestItems":{"orders":[{"PutRequest":{"Item":{"id":{"S":"1"},"TableName":{"S":"decoy"}}}}],
	   "customers":[{"DeleteRequest":{"Key":{"id":{"S":"7"}}}}]},"ReturnConsumedCapacity":"TOTAL"}`,
		"customers", "orders")
	// PutItem: the table after the item, as the SDKs write it.
	f(`{"Item":{"pk":{"S":"a"},"note":{"S":"TableName: nope"}},"TableName":"events"}`, "events")
	f(`{ "TableName" : "events" , "Item":{}}`, "events")
	// TransactWriteItems names a table per action.
	f(`{"TransactItems":[{"Put":{"TableName":"a_t","Item":{}}},{"Update":{"TableName":"b_t","Key":{}}},{"Put":{"TableName":"a_t"}}]}`,
		"a_t", "b_t")
	// Nothing readable: store-wide only.
	f(`{"TableName":"x"}`)           // too short for a table
	f(`{"TableName":"ev\u0065nts"}`) // escaped
	f(`{"TableName":"events`)        // cut
	f(`not json "TableName":"events"`, "events")
	f(``)
	// More tables than a write may take from: none.
	var b strings.Builder
	b.WriteString(`{"RequestItems":{`)
	for i := range MaxWriteScopes + 1 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"table` + string(rune('a'+i)) + `":[]`)
	}
	b.WriteString(`}}`)
	f(b.String())
	// A streamed body is not read.
	if got := scopesOf(DynamoDB, ScopeRules{}, Request{Method: "POST", Path: "/"}, "job", nil); len(got) != 0 {
		t.Errorf("DynamoDB without a body: %q", got)
	}
}

func TestScopesClickHouse(t *testing.T) {
	f := func(query string, h http.Header, body string, want ...string) {
		t.Helper()
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		got := scopesOf(ClickHouse, ScopeRules{}, Request{Method: "POST", Path: "/", RawQuery: query, Header: h}, "job", b)
		if !slices.Equal(got, want) {
			t.Errorf("ClickHouse ?%s %.60q: %q, want %q", query, body, got, want)
		}
	}
	f("query=INSERT%20INTO%20db.t%20FORMAT%20JSONEachRow", nil, `{"a":1}`, "db.t")
	f("query=insert+into+table+%60db%60.%60hits+v2%60+format+CSV", nil, "1,2\n", "db.hits v2")
	f("", nil, "INSERT INTO db.t FORMAT TSV\n1\t2\n", "db.t")
	f("", nil, "  -- nightly load\n/* batch 7 */ INSERT INTO \"db\".\"t\" (a, b) VALUES (1, 2)", "db.t")
	f("database=analytics", nil, "INSERT INTO events FORMAT CSV\n", "analytics.events")
	f("", http.Header{"X-Clickhouse-Database": {"analytics"}}, "INSERT INTO events FORMAT CSV\n", "analytics.events")
	f("", nil, "INSERT INTO events FORMAT CSV\n", "events")
	f("", nil, "INSERT INTO FUNCTION s3('…') FORMAT CSV\n")
	f("", nil, "SELECT 1")
	f("query=SELECT%201", nil, "INSERT INTO db.t FORMAT CSV\n") // the query decides
	f("", nil, strings.Repeat(" ", scopeBodyPrefix)+"INSERT INTO db.t FORMAT CSV\n")
	f("", nil, "INSERTINTO db.t")
	f("", nil, "INSERT INTO db.")
}

func TestScopesElasticsearchGenericVictoria(t *testing.T) {
	f := func(p Profile, rules ScopeRules, path, job string, want ...string) {
		t.Helper()
		got := scopesOf(p, rules, Request{Method: "POST", Path: path}, job, nil)
		if !slices.Equal(got, want) {
			t.Errorf("%v %+v %q job %q: %q, want %q", p, rules, path, job, got, want)
		}
	}
	f(Elasticsearch, ScopeRules{}, "/logs-2024.05/_bulk", "j", "logs-2024.05")
	f(Elasticsearch, ScopeRules{}, "/logs/_doc/17", "j", "logs")
	f(Elasticsearch, ScopeRules{}, "/_bulk", "j")
	f(Generic, ScopeRules{PathDepth: 1}, "/a/write", "j", "a")
	f(Generic, ScopeRules{PathDepth: 2}, "/a/b/c", "j", "a/b")
	f(Generic, ScopeRules{PathDepth: 2}, "/a", "j", "a")
	f(Generic, ScopeRules{PathDepth: 1}, "/", "j")
	f(Generic, ScopeRules{PathDepth: 1, ByJob: true}, "/a/write", "nightly", "nightly")
	f(Generic, ScopeRules{}, "/a/write", "j")
	f(VictoriaMetrics, ScopeRules{PathDepth: 1, ByJob: true}, "/api/v1/import", "j")
}

func TestScopeLengthAndUTF8(t *testing.T) {
	long := strings.Repeat("é", MaxScopeLen) // 2 bytes each
	got := scopesOf(Generic, ScopeRules{PathDepth: 1}, Request{Path: "/" + long}, "", nil)
	if len(got) != 1 || len(got[0]) > MaxScopeLen || !utf8.ValidString(got[0]) {
		t.Errorf("long scope: %d bytes, valid %v", len(got[0]), utf8.ValidString(got[0]))
	}
	if got := scopesOf(Generic, ScopeRules{PathDepth: 1}, Request{Path: "/\xff/x"}, "", nil); len(got) != 0 {
		t.Errorf("invalid UTF-8 scope kept: %q", got)
	}
}

func TestScopedThrottle(t *testing.T) {
	f := func(p Profile, status int, h http.Header, body string, scoped bool) {
		t.Helper()
		var b []byte
		if p.WantsBody(status, h) {
			b = []byte(body)
		}
		r := p.Classify(status, h, b, testNow)
		if r.Kind != Throttled || r.Scoped != scoped {
			t.Errorf("%v %d %.50q: %v %s scoped=%v, want throttled scoped=%v", p, status, body, r.Kind, r.Reason, r.Scoped, scoped)
		}
	}
	ra := hdr("Retry-After", "1")
	f(Generic, 429, nil, "", true)
	f(Generic, 503, ra, "", false) // a 503 names no scope
	f(S3, 503, nil, s3SlowDown, true)
	f(DynamoDB, 400, hdr("X-Amzn-ErrorType", "ProvisionedThroughputExceededException"), "", true)
	f(DynamoDB, 400, hdr("X-Amzn-ErrorType", "RequestLimitExceeded"), "", false) // the account's
	f(ClickHouse, 500, nil, "Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)", true)
	f(ClickHouse, 500, nil, "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)", false)
	f(Elasticsearch, 429, nil, `{"error":{"type":"es_rejected_execution_exception"},"status":429}`, false) // a node's queue
	f(Elasticsearch, 429, nil, `{"error":{"type":"cluster_block_exception","reason":"index [logs] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark]"}}`, true)
	f(GCS, 429, nil, gcsObjectRateLimit, true)
	f(VictoriaMetrics, 429, nil, "", false)
	if o := Generic.Classify(503, nil, nil, testNow); o.Scoped {
		t.Errorf("an overload is scoped: %+v", o)
	}
	if ProfileOutOfRange := Profile(200); ProfileOutOfRange.ScopedThrottle("status_429") {
		t.Error("an unknown profile has scoped throttles")
	}
}

func FuzzScopes(f *testing.F) {
	f.Add(uint8(S3), "/logs/2024/05/a.parquet", "", "", 1)
	f.Add(uint8(GCS), "/upload/storage/v1/b/ev/o", "name=a%2Fb%2Fc", "", 1)
	f.Add(uint8(DynamoDB), "/", "", `{"RequestItems":{"orders":[{"PutRequest":{"Item":{}}}],"customers":[]}}`, 0)
	f.Add(uint8(DynamoDB), "/", "", `{"TransactItems":[{"Put":{"TableName":"a_t"}}]}`, 0)
	f.Add(uint8(ClickHouse), "/", "query=INSERT%20INTO%20db.t%20FORMAT%20CSV", "", 0)
	f.Add(uint8(ClickHouse), "/", "database=x", "/* c */ INSERT INTO `t` FORMAT CSV\n1", 0)
	f.Add(uint8(Elasticsearch), "/logs/_bulk", "", "", 0)
	f.Add(uint8(Generic), "/a/b/c", "", "", 2)
	f.Fuzz(func(t *testing.T, profile uint8, path, query, body string, depth int) {
		p := Profile(profile % uint8(numProfiles))
		rules := ScopeRules{KeyDepth: depth % 8, PathDepth: depth % 8, ByJob: depth < 0}
		if depth%2 != 0 {
			rules.Bucket = "events"
		}
		bodyBytes := []byte(body)
		before := string(bodyBytes)
		var ws WriteScopes
		p.Scopes(rules, Request{Method: "POST", Path: path, RawQuery: query}, "job", bodyBytes, &ws)
		if string(bodyBytes) != before {
			t.Fatal("Scopes changed the body")
		}
		if ws.Len() > MaxWriteScopes {
			t.Fatalf("%d scopes", ws.Len())
		}
		for i := range ws.Len() {
			s := ws.At(i)
			if s == "" || len(s) > MaxScopeLen || !utf8.ValidString(s) {
				t.Fatalf("scope %q: empty, too long or not UTF-8", s)
			}
			if i > 0 && ws.At(i-1) >= s {
				t.Fatalf("scopes not sorted and distinct: %q then %q", ws.At(i-1), s)
			}
		}
		var again WriteScopes
		p.Scopes(rules, Request{Method: "POST", Path: path, RawQuery: query}, "job", bodyBytes, &again)
		if again != ws {
			t.Fatal("Scopes is not deterministic")
		}
	})
}

// BenchmarkScopes is the per-write cost of reading a write's scopes, which
// the proxy pays on every write while scopes are on.
func BenchmarkScopes(b *testing.B) {
	var batch strings.Builder
	batch.WriteString(`{"RequestItems":{"orders":[`)
	for i := range 25 {
		if i > 0 {
			batch.WriteByte(',')
		}
		batch.WriteString(`{"PutRequest":{"Item":{"id":{"S":"order-000` + string(rune('a'+i)) + `"},"note":{"S":"a short note of some forty bytes..."}}}}`)
	}
	batch.WriteString(`],"customers":[{"DeleteRequest":{"Key":{"id":{"S":"7"}}}}]}}`)
	for _, bc := range []struct {
		name  string
		p     Profile
		rules ScopeRules
		req   Request
		body  []byte
	}{
		{"generic", Generic, ScopeRules{PathDepth: 1}, Request{Method: "POST", Path: "/a/write"}, nil},
		{"s3", S3, ScopeRules{KeyDepth: 1}, Request{Method: "PUT", Path: "/logs/2024/05/01/part-0001.parquet"}, nil},
		{"elasticsearch", Elasticsearch, ScopeRules{}, Request{Method: "POST", Path: "/logs-2024.05/_bulk"}, nil},
		{"dynamodb_batch_26_writes", DynamoDB, ScopeRules{}, Request{Method: "POST", Path: "/"}, []byte(batch.String())},
		{"clickhouse_query", ClickHouse, ScopeRules{}, Request{Method: "POST", Path: "/", RawQuery: "query=INSERT%20INTO%20db.t%20FORMAT%20CSV"}, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var ws WriteScopes
			for b.Loop() {
				bc.p.Scopes(bc.rules, bc.req, "job", bc.body, &ws)
			}
			if ws.Len() == 0 {
				b.Fatal("no scope")
			}
		})
	}
}
