package classify

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"net/http"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func TestKind(t *testing.T) {
	f := func(k Kind, name string, congestion, retryable bool) {
		t.Helper()
		if got := k.String(); got != name {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, name)
		}
		if got := k.Congestion(); got != congestion {
			t.Errorf("%s.Congestion() = %v, want %v", name, got, congestion)
		}
		if got := k.Retryable(); got != retryable {
			t.Errorf("%s.Retryable() = %v, want %v", name, got, retryable)
		}
	}
	f(OK, "ok", false, false)
	f(Throttled, "throttled", true, true)
	f(Overloaded, "overloaded", true, true)
	f(ClientError, "client_error", false, false)
	f(ServerError, "server_error", false, true)
	f(Timeout, "timeout", true, true)
	f(Unreachable, "unreachable", false, true)
	f(Kind(42), "kind(42)", false, false)
}

func TestParseProfile(t *testing.T) {
	f := func(s string, want Profile) {
		t.Helper()
		got, err := ParseProfile(s)
		if err != nil {
			t.Fatalf("ParseProfile(%q): %v", s, err)
		}
		if got != want {
			t.Errorf("ParseProfile(%q) = %v, want %v", s, got, want)
		}
	}
	f("generic", Generic)
	f("elasticsearch", Elasticsearch)
	f("opensearch", Elasticsearch)
	f("s3", S3)
	f("gcs", GCS)
	f("dynamodb", DynamoDB)
	f("victoriametrics", VictoriaMetrics)
	f("clickhouse", ClickHouse)
	f(" OpenSearch\n", Elasticsearch)

	for p := Profile(0); p < numProfiles; p++ {
		f(p.String(), p)
	}

	for _, bad := range []string{"", "redis", "s4", "elastic"} {
		_, err := ParseProfile(bad)
		if err == nil {
			t.Errorf("ParseProfile(%q): no error", bad)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "classify: ") || !strings.Contains(msg, "victoriametrics") || !strings.Contains(msg, `"`+bad+`"`) {
			t.Errorf("ParseProfile(%q) error %q should name the package, the value and the valid values", bad, msg)
		}
	}
	if got := Profile(99).String(); got != "profile(99)" {
		t.Errorf("Profile(99).String() = %q", got)
	}
}

// resp is one upstream response in a classification table.
type resp struct {
	status int
	header http.Header
	body   string
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// checkClassify classifies r under p, giving the body only when WantsBody
// asks for it, as the proxy does.
func checkClassify(t *testing.T, p Profile, r resp, want Result) {
	t.Helper()
	var body []byte
	if p.WantsBody(r.status, r.header) {
		body = []byte(r.body)
	} else if r.body != "" {
		t.Fatalf("%v: the test gives a body for status %d but WantsBody is false", p, r.status)
	}
	got := p.Classify(r.status, r.header, body, testNow)
	if want.Items == 0 {
		want.Items = -1
	}
	// Which throttles are scoped is TestScopedThrottle's; here it follows
	// the table.
	want.Scoped = want.Kind == Throttled && p.ScopedThrottle(want.Reason)
	if got != want {
		t.Errorf("%v.Classify(%d, %v, %.60q)\n got %+v\nwant %+v", p, r.status, r.header, r.body, got, want)
	}
}

func TestClassifyGeneric(t *testing.T) {
	f := func(r resp, k Kind, reason string, retryAfter time.Duration) {
		t.Helper()
		share := 1.0
		if k == OK {
			share = 0
		}
		checkClassify(t, Generic, r, Result{Kind: k, Reason: reason, RetryAfter: retryAfter, Share: share})
	}
	ra := func(v string) http.Header { return hdr("Retry-After", v) }

	f(resp{status: 200}, OK, "status_200", 0)
	f(resp{status: 201}, OK, "status_201", 0)
	f(resp{status: 204}, OK, "status_204", 0)
	f(resp{status: 101}, OK, "status_101", 0)
	f(resp{status: 304}, OK, "status_304", 0)
	f(resp{status: 301, header: ra("5")}, OK, "status_301", 5*time.Second)
	f(resp{status: 200, header: ra("5")}, OK, "status_200", 0)

	f(resp{status: 429}, Throttled, "status_429", 0)
	f(resp{status: 429, header: ra("7")}, Throttled, "status_429", 7*time.Second)
	f(resp{status: 429, header: ra("0.25")}, Throttled, "status_429", 250*time.Millisecond)
	f(resp{status: 429, header: ra(testNow.Add(30 * time.Second).Format(http.TimeFormat))}, Throttled, "status_429", 30*time.Second)
	f(resp{status: 429, header: ra("soon")}, Throttled, "status_429", 0)
	f(resp{status: 429, header: ra("-3")}, Throttled, "status_429", 0)
	f(resp{status: 429, header: ra("17400000")}, Throttled, "status_429", 0) // absurd

	f(resp{status: 503}, Overloaded, "status_503", 0)
	f(resp{status: 503, header: ra("120")}, Throttled, "status_503_retry_after", 2*time.Minute)
	f(resp{status: 503, header: ra("0")}, Throttled, "status_503_retry_after", 0)
	f(resp{status: 503, header: ra("garbage")}, Overloaded, "status_503", 0)
	f(resp{status: 502}, Overloaded, "status_502", 0)
	f(resp{status: 504, header: ra("2")}, Overloaded, "status_504", 2*time.Second)
	f(resp{status: 408}, Overloaded, "status_408", 0)
	f(resp{status: 408, header: ra("1")}, Overloaded, "status_408", time.Second)

	f(resp{status: 501}, ClientError, "status_501", 0)
	f(resp{status: 505}, ClientError, "status_505", 0)
	f(resp{status: 500}, ServerError, "status_500", 0)
	f(resp{status: 500, header: ra("3")}, ServerError, "status_500", 3*time.Second)
	f(resp{status: 507}, ServerError, "status_507", 0)
	f(resp{status: 599}, ServerError, "status_599", 0)

	f(resp{status: 400}, ClientError, "status_400", 0)
	f(resp{status: 401}, ClientError, "status_401", 0)
	f(resp{status: 404}, ClientError, "status_404", 0)
	f(resp{status: 409}, ClientError, "status_409", 0)
	f(resp{status: 413, header: ra("60")}, ClientError, "status_413", 0) // a 4xx Retry-After is not a pacing hint

	f(resp{status: 0}, ServerError, "status_invalid", 0)
	f(resp{status: 99}, ServerError, "status_invalid", 0)
	f(resp{status: 600}, ServerError, "status_invalid", 0)
	f(resp{status: 999, header: ra("4")}, ServerError, "status_invalid", 0)
	f(resp{status: -1}, ServerError, "status_invalid", 0)
}

const (
	s3SlowDown = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>4442587FB7D0A2F9</RequestId><HostId>kY9F2gN3k0yXq2xT0mLzE1oTQ3n0jQh1fWlY7b+G1jV1tLJxwq2Yq4xG3lI5oC4q1C3o8wYyJ1E=</HostId></Error>`
	s3ServiceUnavailable = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>ServiceUnavailable</Code><Message>Service is unable to handle request.</Message><RequestId>8D5F1E2A3B4C5D6E</RequestId><HostId>Zm9vYmFy</HostId></Error>`
	s3RequestTimeout = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.</Message><RequestId>0B1C2D3E4F5A6B7C</RequestId><HostId>YmF6cXV4</HostId></Error>`
	s3AccessDenied = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>1A2B3C4D5E6F7A8B</RequestId><HostId>cXV1eA==</HostId></Error>`
	minioSlowDownWrite = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SlowDownWrite</Code><Message>Resource requested is unwritable, please reduce your request rate</Message><Key>batch/f8123.json</Key><BucketName>ingest</BucketName><Resource>/ingest/batch/f8123.json</Resource><RequestId>17F1A2B3C4D5E6F7</RequestId><HostId>dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8</HostId></Error>`
)

func TestClassifyS3(t *testing.T) {
	f := func(r resp, k Kind, reason string) {
		t.Helper()
		checkClassify(t, S3, r, Result{Kind: k, Reason: reason, Share: 1})
	}
	f(resp{status: 503, body: s3SlowDown}, Throttled, "s3_slowdown")
	f(resp{status: 503, body: minioSlowDownWrite}, Throttled, "s3_slowdown")
	f(resp{status: 503, body: s3ServiceUnavailable}, Overloaded, "s3_service_unavailable")
	f(resp{status: 400, body: s3RequestTimeout}, ServerError, "s3_request_timeout")
	f(resp{status: 403, body: ""}, ClientError, "status_403")
	f(resp{status: 400, body: s3AccessDenied}, ClientError, "status_400")
	// A HEAD gets no body: the status alone decides.
	f(resp{status: 503}, Overloaded, "status_503")
	// The prefix was cut inside the code.
	f(resp{status: 503, body: s3SlowDown[:50]}, Overloaded, "status_503")
	// SlowDown in a 500 is not what S3 sends; the status decides.
	checkClassify(t, S3, resp{status: 500}, Result{Kind: ServerError, Reason: "status_500", Share: 1})
	// Generic rules still apply, Retry-After included.
	checkClassify(t, S3, resp{status: 503, header: hdr("Retry-After", "2"), body: s3SlowDown},
		Result{Kind: Throttled, Reason: "s3_slowdown", Share: 1, RetryAfter: 2 * time.Second})
	checkClassify(t, S3, resp{status: 503, header: hdr("Retry-After", "2"), body: s3ServiceUnavailable},
		Result{Kind: Overloaded, Reason: "s3_service_unavailable", Share: 1, RetryAfter: 2 * time.Second})
}

const (
	gcsObjectRateLimit = `{
  "error": {
    "code": 429,
    "message": "The object ckpt-bucket/pipelines/7/latest.json exceeded the rate limit for object mutation operations (create, update, and delete). Please reduce your request rate. See https://cloud.google.com/storage/docs/gcs429.",
    "errors": [
      {
        "message": "The object ckpt-bucket/pipelines/7/latest.json exceeded the rate limit for object mutation operations (create, update, and delete). Please reduce your request rate. See https://cloud.google.com/storage/docs/gcs429.",
        "domain": "usageLimits",
        "reason": "rateLimitExceeded"
      }
    ]
  }
}`
	gcsUserRateLimit = `{"error":{"errors":[{"domain":"usageLimits","reason":"userRateLimitExceeded","message":"User Rate Limit Exceeded"}],"code":403,"message":"User Rate Limit Exceeded"}}`
	gcsForbidden     = `{"error":{"code":403,"message":"loader@proj.iam.gserviceaccount.com does not have storage.objects.create access to the Google Cloud Storage object. Permission 'storage.objects.create' denied on resource (or it may not exist).","errors":[{"message":"loader@proj.iam.gserviceaccount.com does not have storage.objects.create access to the Google Cloud Storage object.","domain":"global","reason":"forbidden"}]}}`
	gcsBackendError  = `{"error":{"code":503,"message":"We encountered an internal error. Please try again.","errors":[{"message":"We encountered an internal error. Please try again.","domain":"global","reason":"backendError"}]}}`
	// The reason word appears, but only inside a message string.
	gcsQuotedReason = `{"error":{"code":403,"message":"not \"reason\": \"rateLimitExceeded\" but forbidden","errors":[{"domain":"global","reason":"forbidden"}]}}`
)

func TestClassifyGCS(t *testing.T) {
	f := func(r resp, k Kind, reason string) {
		t.Helper()
		checkClassify(t, GCS, r, Result{Kind: k, Reason: reason, Share: 1})
	}
	f(resp{status: 429, body: gcsObjectRateLimit}, Throttled, "gcs_rate_limit_exceeded")
	f(resp{status: 403, body: gcsUserRateLimit}, Throttled, "gcs_user_rate_limit_exceeded")
	f(resp{status: 503, body: `{"error":{"code":503,"errors":[{"domain":"usageLimits","reason":"rateLimitExceeded"}]}}`}, Throttled, "gcs_rate_limit_exceeded")
	f(resp{status: 403, body: gcsForbidden}, ClientError, "status_403")
	f(resp{status: 403, body: gcsQuotedReason}, ClientError, "status_403")
	f(resp{status: 503, body: gcsBackendError}, Overloaded, "status_503")
	f(resp{status: 429, body: gcsObjectRateLimit[:200]}, Throttled, "status_429") // cut before the reason: still a 429
	f(resp{status: 404}, ClientError, "status_404")
}

const (
	ddbProvisioned = `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}`
	ddbThrottling  = `{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}`
	ddbRequestLim  = `{"__type":"com.amazonaws.dynamodb.v20120810#RequestLimitExceeded","message":"Throughput exceeds the current throughput limit for your account. Please contact AWS Support at https://aws.amazon.com/support request a limit increase"}`
	ddbLimit       = `{"__type":"com.amazonaws.dynamodb.v20120810#LimitExceededException","message":"Subscriber limit exceeded: Only 10 tables can be created, updated, or deleted simultaneously"}`
	ddbValidation  = `{"__type":"com.amazon.coral.validate#ValidationException","message":"One or more parameter values were invalid: Missing the key pk in the item"}`
	ddbCondition   = `{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}`
	ddbTxThrottled = `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","CancellationReasons":[{"Code":"None"},{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity for one or more global secondary indexes. DynamoDB is automatically scaling your index so please try again shortly."}],"Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, ThrottlingError]"}`
	ddbTxCondition = `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","CancellationReasons":[{"Code":"ConditionalCheckFailed","Message":"The conditional request failed"},{"Code":"None"}],"Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [ConditionalCheckFailed, None]"}`
	ddbInternal    = `{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}`
)

func TestClassifyDynamoDB(t *testing.T) {
	f := func(r resp, k Kind, reason string) {
		t.Helper()
		checkClassify(t, DynamoDB, r, Result{Kind: k, Reason: reason, Share: 1})
	}
	f(resp{status: 400, body: ddbProvisioned}, Throttled, "dynamodb_provisioned_throughput_exceeded")
	f(resp{status: 400, body: ddbThrottling}, Throttled, "dynamodb_throttling")
	f(resp{status: 400, body: ddbRequestLim}, Throttled, "dynamodb_request_limit_exceeded")
	f(resp{status: 400, body: ddbLimit}, Throttled, "dynamodb_limit_exceeded")
	f(resp{status: 400, body: ddbTxThrottled}, Throttled, "dynamodb_transaction_throttled")
	f(resp{status: 400, body: ddbValidation}, ClientError, "status_400")
	f(resp{status: 400, body: ddbCondition}, ClientError, "status_400")
	f(resp{status: 400, body: ddbTxCondition}, ClientError, "status_400")
	f(resp{status: 400, body: `{"code":"ThrottlingException","message":"Rate exceeded"}`}, Throttled, "dynamodb_throttling")
	f(resp{status: 400, body: ddbProvisioned[:40]}, ClientError, "status_400") // cut inside the type
	f(resp{status: 500}, ServerError, "status_500")
	f(resp{status: 503}, Overloaded, "status_503")

	// The header names the type; the body is not read. It comes in the
	// three shapes AWS uses.
	for _, v := range []string{
		"ThrottlingException",
		"ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/",
		"com.amazon.coral.availability#ThrottlingException",
	} {
		f(resp{status: 400, header: hdr("x-amzn-ErrorType", v)}, Throttled, "dynamodb_throttling")
	}
	f(resp{status: 400, header: hdr("X-Amzn-ErrorType", "ProvisionedThroughputExceededException:")}, Throttled, "dynamodb_provisioned_throughput_exceeded")
	f(resp{status: 400, header: hdr("X-Amzn-ErrorType", "ValidationException:http://internal.amazon.com/coral/com.amazon.coral.validate/")}, ClientError, "status_400")
	// A cancelled transaction's throttling is in the body even when the
	// header names the type.
	txHdr := hdr("X-Amzn-ErrorType", "TransactionCanceledException:http://internal.amazon.com/coral/com.amazonaws.dynamodb.v20120810/")
	f(resp{status: 400, header: txHdr, body: ddbTxThrottled}, Throttled, "dynamodb_transaction_throttled")
	f(resp{status: 400, header: txHdr, body: ddbTxCondition}, ClientError, "status_400")

	// The header wins over the body, as in the AWS SDKs.
	got := DynamoDB.Classify(400, hdr("X-Amzn-ErrorType", "ValidationException"), []byte(ddbProvisioned), testNow)
	if got.Kind != ClientError {
		t.Errorf("header ValidationException with a throttling body: got %v, want client_error", got)
	}
}

const (
	esRejected = `{"error":{"root_cause":[{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1138656, max_coordinating_and_primary_bytes=107374182]"}],"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1138656, max_coordinating_and_primary_bytes=107374182]"},"status":429}`
	osRejected = `{"error":{"root_cause":[{"type":"rejected_execution_exception","reason":"rejected execution of coordinating operation [shard_detail=[solutions][2][C], shard_coordinating_and_primary_bytes=29490684, shard_operation_bytes=434882, shard_max_coordinating_and_primary_bytes=34694922]"}],"type":"rejected_execution_exception","reason":"rejected execution of coordinating operation [shard_detail=[solutions][2][C]]"},"status":429}`
	esBreaker  = `{"error":{"root_cause":[{"type":"circuit_breaking_exception","reason":"[parent] Data too large, data for [<http_request>] would be [1024611432/977.1mb], which is larger than the limit of [1020054732/972.7mb]","bytes_wanted":1024611432,"bytes_limit":1020054732,"durability":"TRANSIENT"}],"type":"circuit_breaking_exception","reason":"[parent] Data too large","bytes_wanted":1024611432,"bytes_limit":1020054732,"durability":"TRANSIENT"},"status":429}`
	esMapping  = `{"error":{"root_cause":[{"type":"mapper_parsing_exception","reason":"failed to parse field [ts] of type [date]"}],"type":"mapper_parsing_exception","reason":"failed to parse field [ts] of type [date]"},"status":400}`
	nginx429   = "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)

func TestClassifyElasticsearch(t *testing.T) {
	f := func(r resp, k Kind, reason string) {
		t.Helper()
		share := 1.0
		if k == OK {
			share = 0
		}
		checkClassify(t, Elasticsearch, r, Result{Kind: k, Reason: reason, Share: share})
	}
	f(resp{status: 429, body: esRejected}, Throttled, "es_rejected_execution")
	f(resp{status: 429, body: osRejected}, Throttled, "es_rejected_execution")
	f(resp{status: 429, body: esBreaker}, Throttled, "es_circuit_breaking")
	f(resp{status: 429, body: nginx429}, Throttled, "status_429")
	f(resp{status: 429}, Throttled, "status_429")
	f(resp{status: 400}, ClientError, "status_400")
	f(resp{status: 503}, Overloaded, "status_503")
	f(resp{status: 200}, OK, "status_200")
	// Classify uses a body it was given even where WantsBody would not
	// have asked: a rejected execution is a throttle whatever its status.
	if got := Elasticsearch.Classify(503, nil, []byte(esRejected), testNow); got.Reason != "es_rejected_execution" {
		t.Errorf("503 with a rejected execution body: %+v", got)
	}
	if got := Elasticsearch.Classify(400, nil, []byte(esMapping), testNow); got.Kind != ClientError {
		t.Errorf("400 mapping error: %+v", got)
	}
}

const (
	vmInsertLimit    = `remoteAddr: "10.0.3.7:51234"; requestURI: /api/v1/import; cannot process insert request for 60.000 seconds because 16 concurrent insert requests are executed. Possible solutions: to reduce workload; to increase compute resources at the server; to increase -insert.maxQueueDuration; to increase -maxConcurrentInserts`
	vmInsertLimitOld = "cannot handle more than 16 concurrent inserts during 1m0s; possible solutions: increase `-insert.maxQueueDuration`, increase `-maxConcurrentInserts`, increase server capacity"
	vmStreamReaders  = `cannot process insert request for 60.000 seconds because 8 concurrent insert requests already have allocated read buffers. Possible solutions: to reduce the number of concurrent insert requests over streaming protocols; to increase -insert.maxConcurrentStreamReaders; to increase -insert.maxQueueDuration`
	vmReadOnly       = `remoteAddr: "10.0.3.7:51240"; requestURI: /api/v1/import; cannot add rows to storage: the storage is in read-only mode because of lack of free disk space at -storageDataPath="/victoria-metrics-data"`
)

func TestClassifyVictoriaMetrics(t *testing.T) {
	f := func(r resp, k Kind, reason string) {
		t.Helper()
		// Only the insert limit says the store caps concurrency.
		conc := reason == "victoriametrics_insert_limit"
		checkClassify(t, VictoriaMetrics, r, Result{Kind: k, Reason: reason, Share: 1, Concurrency: conc})
	}
	f(resp{status: 503, body: vmInsertLimit}, Throttled, "victoriametrics_insert_limit")
	f(resp{status: 503, body: vmInsertLimitOld}, Throttled, "victoriametrics_insert_limit")
	f(resp{status: 503, body: vmStreamReaders}, Throttled, "victoriametrics_insert_limit")
	f(resp{status: 503, body: vmReadOnly}, Overloaded, "status_503")
	f(resp{status: 503}, Overloaded, "status_503")
	f(resp{status: 400}, ClientError, "status_400")
	f(resp{status: 429}, Throttled, "status_429")
}

const (
	chTooManyParts     = "Code: 252. DB::Exception: Too many parts (300 with average size of 1.53 MiB) in table 'default.events (5d7c1f6e-2a7b-4c3d-9e8f-0a1b2c3d4e5f)'. Merges are processing significantly slower than inserts. (TOO_MANY_PARTS) (version 23.8.1.94 (official build))\n"
	chTooManyPartsOld  = "Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts (version 20.8.11.17 (official build))\n"
	chTooManyQueries   = "Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 100. (TOO_MANY_SIMULTANEOUS_QUERIES) (version 24.3.2.23 (official build))\n"
	chTooManyQueriesJS = "[\n{\"exception\": \"Code: 202. DB::Exception: Too many simultaneous queries for user loader. Current: 4, maximum: 4. (TOO_MANY_SIMULTANEOUS_QUERIES) (version 25.9.4.58 (official build))\"}\n]\n"
	chTooManyPartitons = "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). The limit is controlled by 'max_partitions_per_insert_block' setting. Large number of partitions is a common misconception. (TOO_MANY_PARTS) (version 24.3.2.23 (official build))\n"
	chMemoryLimit      = "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 28.01 GiB (attempt to allocate chunk of 4194304 bytes), maximum: 28.00 GiB. (MEMORY_LIMIT_EXCEEDED) (version 24.3.2.23 (official build))\n"
	chCode2520         = "Code: 2520. DB::Exception: not a real code\n"
)

func TestClassifyClickHouse(t *testing.T) {
	f := func(r resp, k Kind, reason string) {
		t.Helper()
		// TOO_MANY_PARTS is about the rate of inserts, not how many run
		// at once.
		conc := reason == "clickhouse_too_many_simultaneous_queries"
		checkClassify(t, ClickHouse, r, Result{Kind: k, Reason: reason, Share: 1, Concurrency: conc})
	}
	code := func(c string) http.Header { return hdr("X-ClickHouse-Exception-Code", c) }
	f(resp{status: 500, header: code("252"), body: chTooManyParts}, Throttled, "clickhouse_too_many_parts")
	f(resp{status: 500, body: chTooManyParts}, Throttled, "clickhouse_too_many_parts")
	f(resp{status: 500, body: chTooManyPartsOld}, Throttled, "clickhouse_too_many_parts")
	f(resp{status: 500, header: code("252")}, Throttled, "clickhouse_too_many_parts")
	f(resp{status: 500, header: code("202"), body: chTooManyQueries}, Throttled, "clickhouse_too_many_simultaneous_queries")
	f(resp{status: 500, body: chTooManyQueriesJS}, Throttled, "clickhouse_too_many_simultaneous_queries")
	f(resp{status: 500, header: code("202")}, Throttled, "clickhouse_too_many_simultaneous_queries")
	f(resp{status: 500, header: code("252"), body: chTooManyPartitons}, ClientError, "clickhouse_too_many_partitions")
	f(resp{status: 500, header: code("241"), body: chMemoryLimit}, ServerError, "status_500")
	f(resp{status: 500, body: chCode2520}, ServerError, "status_500")
	f(resp{status: 503, header: code("439")}, Overloaded, "status_503")
	f(resp{status: 408, header: code("159")}, Overloaded, "status_408")
	f(resp{status: 404, header: code("60")}, ClientError, "status_404")
}

// TestClassifyClickHouseExceptionIn200: once ClickHouse has sent its
// status line (send_progress_in_http_headers sends it with the first
// X-ClickHouse-Progress header, long before an INSERT ends), an exception
// can no longer change the status: it comes as a 200 whose last header is
// X-ClickHouse-Exception-Code, with the exception's text as the body. That
// answer is the exception, never an acknowledged write.
func TestClassifyClickHouseExceptionIn200(t *testing.T) {
	code := func(c string) http.Header {
		return hdr("X-ClickHouse-Progress", `{"written_rows":"65505"}`, "X-ClickHouse-Exception-Code", c)
	}
	f := func(r resp, k Kind, reason string) {
		t.Helper()
		conc := reason == "clickhouse_too_many_simultaneous_queries"
		checkClassify(t, ClickHouse, r, Result{Kind: k, Reason: reason, Share: 1, Concurrency: conc})
	}
	f(resp{status: 200, header: code("252"), body: chTooManyParts}, Throttled, "clickhouse_too_many_parts")
	f(resp{status: 200, header: code("202"), body: chTooManyQueries}, Throttled, "clickhouse_too_many_simultaneous_queries")
	f(resp{status: 200, header: code("252"), body: chTooManyPartitons}, ClientError, "clickhouse_too_many_partitions")
	f(resp{status: 200, header: code("241"), body: chMemoryLimit}, ServerError, "clickhouse_exception_in_200")
	// Without the header a 200 is a success, whatever its body says: the
	// answer to a SELECT may well hold the text of an exception.
	checkClassify(t, ClickHouse, resp{status: 200, header: hdr("X-ClickHouse-Summary", "{}")}, Result{Kind: OK, Reason: "status_200"})
	if ClickHouse.WantsBody(200, hdr("X-ClickHouse-Summary", "{}")) {
		t.Error("ClickHouse wants the body of a plain 200")
	}
	// Only ClickHouse sends the header.
	if got := Generic.Classify(200, code("252"), nil, testNow); got.Kind != OK {
		t.Errorf("generic 200 with X-ClickHouse-Exception-Code: %+v, want OK", got)
	}
}

func TestWantsBody(t *testing.T) {
	f := func(p Profile, status int, h http.Header, want bool) {
		t.Helper()
		if got := p.WantsBody(status, h); got != want {
			t.Errorf("%v.WantsBody(%d, %v) = %v, want %v", p, status, h, got, want)
		}
	}
	for p := Profile(0); p <= numProfiles; p++ {
		for _, status := range []int{200, 201, 204, 206, 299} {
			f(p, status, nil, false)
		}
	}
	for _, status := range []int{400, 429, 500, 502, 503} {
		f(Generic, status, nil, false)
	}
	f(Elasticsearch, 429, nil, true)
	f(Elasticsearch, 503, nil, false)
	f(S3, 503, nil, true)
	f(S3, 400, nil, true)
	f(S3, 500, nil, false)
	f(GCS, 429, nil, true)
	f(GCS, 403, nil, true)
	f(GCS, 503, nil, true)
	f(GCS, 400, nil, false)
	f(DynamoDB, 400, nil, true)
	f(DynamoDB, 400, hdr("X-Amzn-ErrorType", "ThrottlingException"), false)
	f(DynamoDB, 400, hdr("X-Amzn-ErrorType", "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"), true)
	f(DynamoDB, 500, nil, false)
	f(VictoriaMetrics, 503, nil, true)
	f(VictoriaMetrics, 500, nil, false)
	f(ClickHouse, 500, nil, true)
	f(ClickHouse, 500, hdr("X-ClickHouse-Exception-Code", "252"), true)
	f(ClickHouse, 503, nil, true)
	f(ClickHouse, 404, nil, false)
}

// TestProfilesFallBackToGeneric checks that every profile applies the
// generic rules to what it does not recognise.
func TestProfilesFallBackToGeneric(t *testing.T) {
	ra := hdr("Retry-After", "3")
	for p := Profile(0); p <= numProfiles; p++ {
		for status := 100; status <= 599; status++ {
			for _, h := range []http.Header{nil, ra} {
				for _, body := range [][]byte{nil, []byte(nginx429), []byte(`{"error":"boom"}`)} {
					want := Generic.Classify(status, h, nil, testNow)
					// Whether a 429 is scoped is the profile's own
					// (TestScopedThrottle).
					want.Scoped = want.Kind == Throttled && p.ScopedThrottle(want.Reason)
					if got := p.Classify(status, h, body, testNow); got != want {
						t.Fatalf("%v.Classify(%d, %v, %q) = %+v, want the generic %+v", p, status, h, body, got, want)
					}
				}
			}
		}
	}
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	cases := []struct {
		p      Profile
		status int
		h      http.Header
		body   string
	}{
		{Generic, 429, hdr("Retry-After", "3"), ""},
		{Generic, 503, hdr("Retry-After", testNow.Format(http.TimeFormat)), ""},
		{S3, 503, nil, s3SlowDown},
		{GCS, 429, nil, gcsObjectRateLimit},
		{DynamoDB, 400, nil, ddbTxThrottled},
		{DynamoDB, 400, hdr("X-Amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/"), ""},
		{Elasticsearch, 429, nil, esBreaker},
		{VictoriaMetrics, 503, nil, vmInsertLimitOld},
		{ClickHouse, 500, hdr("X-ClickHouse-Exception-Code", "252"), chTooManyParts},
	}
	for _, c := range cases {
		body := []byte(c.body)
		allocs := testing.AllocsPerRun(100, func() {
			c.p.Classify(c.status, c.h, body, testNow)
		})
		if allocs != 0 {
			t.Errorf("%v.Classify(%d): %v allocations, want 0", c.p, c.status, allocs)
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	body := []byte(ddbProvisioned)
	for b.Loop() {
		DynamoDB.Classify(400, nil, body, testNow)
	}
}

// TestClassifyCompressedBody: a store answers an error in the encoding the
// loader accepted (Elasticsearch's http.compression is on by default, and a
// Go loader sends Accept-Encoding: gzip on every request), and sluice
// forwards the answer as it came. The code in it is read all the same:
// unread, a node's full write queue would count as the index's block, a
// DynamoDB throttle as the loader's own 400, never cut nor retried.
func TestClassifyCompressedBody(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return b.Bytes()
	}
	zl := func(s string) []byte {
		var b bytes.Buffer
		w := zlib.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return b.Bytes()
	}
	f := func(p Profile, status int, encoding string, body []byte, k Kind, reason string) {
		t.Helper()
		h := hdr("Content-Encoding", encoding)
		if !p.WantsBody(status, h) {
			t.Fatalf("%v.WantsBody(%d) is false", p, status)
		}
		got := p.Classify(status, h, body, testNow)
		if got.Kind != k || got.Reason != reason {
			t.Errorf("%v.Classify(%d, Content-Encoding: %s) = %v %q, want %v %q", p, status, encoding, got.Kind, got.Reason, k, reason)
		}
	}
	f(Elasticsearch, 429, "gzip", gz(esRejected), Throttled, "es_rejected_execution")
	f(DynamoDB, 400, "gzip", gz(ddbProvisioned), Throttled, "dynamodb_provisioned_throughput_exceeded")
	f(GCS, 403, "gzip", gz(gcsUserRateLimit), Throttled, "gcs_user_rate_limit_exceeded")
	f(VictoriaMetrics, 503, "deflate", zl(vmInsertLimit), Throttled, "victoriametrics_insert_limit")
	f(S3, 503, "x-gzip", gz(s3SlowDown), Throttled, "s3_slowdown")
	// Cut at the prefix's bound, it is read as far as it goes.
	cut := gz(esRejected)
	f(Elasticsearch, 429, "gzip", cut[:len(cut)-8], Throttled, "es_rejected_execution")
	// Bytes that are not what their encoding says: the generic rules.
	f(DynamoDB, 400, "gzip", gz(ddbProvisioned)[4:], ClientError, "status_400")
}
