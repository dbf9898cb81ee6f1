package classify

import (
	"bytes"
	"net/http"
	"strings"
)

// Store-specific classifiers. Each returns matched=false when it does not
// recognise the response, and Classify then applies the generic status
// rules. They are called only for status >= 400 and must cope with any
// body: nil, truncated at BodyPrefixMax, or not what the store usually
// sends (an HTML page from a load balancer).

// classifyElasticsearch reads the error type of a whole-request rejection:
//
//	{"error":{"root_cause":[{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation [...]"}],"type":"es_rejected_execution_exception",...},"status":429}
//
// OpenSearch names the same exception rejected_execution_exception.
func classifyElasticsearch(status int, body []byte) (Kind, string, bool) {
	var rejected, breaker bool
	eachJSONString(body, "type", func(v []byte) bool {
		switch string(v) {
		case "es_rejected_execution_exception", "rejected_execution_exception":
			rejected = true
			return true
		case "circuit_breaking_exception":
			breaker = true
		}
		return false
	})
	switch {
	case rejected:
		// A full write thread pool queue or indexing pressure limit: the
		// cluster asks for fewer concurrent bulk requests.
		return Throttled, "es_rejected_execution", true
	case breaker && status == http.StatusTooManyRequests:
		// A transient memory circuit breaker (a permanent one is a 500):
		// less in flight lets it recover.
		return Throttled, "es_circuit_breaking", true
	}
	return 0, "", false
}

// classifyS3 reads the Code of an S3 XML error:
//
//	<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>...</Error>
func classifyS3(status int, body []byte) (Kind, string, bool) {
	code, ok := xmlElement(body, "<Code>", "</Code>")
	if !ok {
		return 0, "", false
	}
	switch {
	case status == http.StatusServiceUnavailable && bytes.HasPrefix(code, []byte("SlowDown")):
		// S3 partitions a prefix while its request rate grows; MinIO adds
		// SlowDownRead and SlowDownWrite. All mean: fewer requests.
		return Throttled, "s3_slowdown", true
	case status == http.StatusServiceUnavailable && string(code) == "ServiceUnavailable":
		return Overloaded, "s3_service_unavailable", true
	case status == http.StatusBadRequest && string(code) == "RequestTimeout":
		// "Your socket connection to the server was not read from or
		// written to within the timeout period": the upload stalled on our
		// side of the link, not in S3. Retry without slowing down.
		return ServerError, "s3_request_timeout", true
	}
	return 0, "", false
}

// classifyGCS reads the reasons of a Google JSON API error:
//
//	{"error":{"code":429,"message":"...","errors":[{"domain":"usageLimits","reason":"rateLimitExceeded","message":"..."}]}}
func classifyGCS(body []byte) (Kind, string, bool) {
	reason := ""
	eachJSONString(body, "reason", func(v []byte) bool {
		switch string(v) {
		case "rateLimitExceeded":
			reason = "gcs_rate_limit_exceeded"
			return true
		case "userRateLimitExceeded":
			reason = "gcs_user_rate_limit_exceeded"
			return true
		}
		return false
	})
	if reason == "" {
		return 0, "", false
	}
	return Throttled, reason, true
}

// hdrAmznErrorType is X-Amzn-ErrorType in canonical form, so that
// http.Header.Get does not allocate to canonicalise it.
const hdrAmznErrorType = "X-Amzn-Errortype"

// dynamoThrottleReasons maps the AWS error codes that mean "slow down" (the
// subset of aws-sdk-go-v2's DefaultThrottleErrorCodes that DynamoDB sends)
// to their reasons.
var dynamoThrottleReasons = map[string]string{
	"ProvisionedThroughputExceededException": "dynamodb_provisioned_throughput_exceeded",
	"ThrottlingException":                    "dynamodb_throttling",
	"RequestLimitExceeded":                   "dynamodb_request_limit_exceeded",
	"LimitExceededException":                 "dynamodb_limit_exceeded",
}

// classifyDynamoDB reads the AWS JSON 1.0 error type the way the AWS SDKs
// do: the X-Amzn-ErrorType header first ("ThrottlingException:http://…"),
// else the body's "__type" ("com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"),
// else its "code". A TransactionCanceledException whose cancellation
// reasons include ThrottlingError or ProvisionedThroughputExceeded is a
// throttle too.
func classifyDynamoDB(h http.Header, body []byte) (Kind, string, bool) {
	if v := h.Get(hdrAmznErrorType); v != "" {
		return classifyDynamoDBCode(awsErrorCode(v), body)
	}
	var code []byte
	for _, key := range [...]string{"__type", "code"} {
		found := eachJSONString(body, key, func(v []byte) bool {
			code = awsErrorCode(v)
			return true
		})
		if found {
			break
		}
	}
	return classifyDynamoDBCode(code, body)
}

func classifyDynamoDBCode[T string | []byte](code T, body []byte) (Kind, string, bool) {
	if reason, ok := dynamoThrottleReasons[string(code)]; ok {
		return Throttled, reason, true
	}
	if string(code) == "TransactionCanceledException" {
		throttled := eachJSONString(body, "Code", func(v []byte) bool {
			return string(v) == "ThrottlingError" || string(v) == "ProvisionedThroughputExceeded"
		})
		if throttled {
			return Throttled, "dynamodb_transaction_throttled", true
		}
	}
	return 0, "", false
}

// awsErrorCode strips the URI suffix and namespace prefix AWS puts around
// an error code ("com.amazon.coral.availability#ThrottlingException",
// "ThrottlingException:http://internal.amazon.com/coral/…"), as smithy-go's
// SanitizeErrorCode does.
func awsErrorCode[T string | []byte](s T) T {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			s = s[:i]
			break
		}
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '#' {
			s = s[i+1:]
			break
		}
	}
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// classifyVictoriaMetrics recognises the 503 VictoriaMetrics sends when
// more than -maxConcurrentInserts requests waited -insert.maxQueueDuration:
//
//	cannot process insert request for 60.000 seconds because 16 concurrent insert requests are executed. Possible solutions: ...
//
// and, before v1.80 (still in Debian), "cannot handle more than 16
// concurrent inserts during 1m0s; possible solutions: ...". It is a
// concurrency limit the store enforces on us, so it is Throttled, not
// Overloaded, though it comes without Retry-After.
func classifyVictoriaMetrics(body []byte) (Kind, string, bool) {
	if bytes.Contains(body, []byte("cannot process insert request")) ||
		(bytes.Contains(body, []byte("cannot handle more than ")) && bytes.Contains(body, []byte(" concurrent inserts"))) {
		return Throttled, "victoriametrics_insert_limit", true
	}
	return 0, "", false
}

// ClickHouse exception codes (src/Common/ErrorCodes.cpp).
const (
	chCodeTooManySimultaneousQueries = "202"
	chCodeTooManyParts               = "252"
)

// classifyClickHouse reads the exception code from the
// X-ClickHouse-Exception-Code header or the body text, which looks like
//
//	Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts. (TOO_MANY_PARTS) (version 23.8.1.1)
//
// or, before 21.x, "Code: 252, e.displayText() = DB::Exception: …".
// ClickHouse answers both with 500, or with the 200 it had already sent
// (see clickHouseExceptionIn2xx). Code 252 is also raised for "Too many
// partitions for single INSERT block", which no amount of waiting fixes:
// that one is the loader's to fix.
func classifyClickHouse(status int, h http.Header, body []byte) (Kind, string, bool) {
	code := strings.TrimSpace(h.Get(hdrClickHouseExceptionCode))
	parts := code == chCodeTooManyParts || bytes.Contains(body, []byte("TOO_MANY_PARTS")) ||
		hasClickHouseCode(body, chCodeTooManyParts)
	if parts {
		if bytes.Contains(body, []byte("Too many partitions for single INSERT block")) {
			return ClientError, "clickhouse_too_many_partitions", true
		}
		// Inserts outran background merges: fewer, larger inserts let the
		// merges catch up.
		return Throttled, "clickhouse_too_many_parts", true
	}
	if code == chCodeTooManySimultaneousQueries || bytes.Contains(body, []byte("TOO_MANY_SIMULTANEOUS_QUERIES")) ||
		hasClickHouseCode(body, chCodeTooManySimultaneousQueries) {
		// max_concurrent_queries (or the user's limit) reached: lower
		// concurrency.
		return Throttled, "clickhouse_too_many_simultaneous_queries", true
	}
	if clickHouseExceptionIn2xx(status, h) {
		// Another exception after the status line: the query failed, and
		// which status it would have had is not said. Retryable, like a
		// 500, but not a capacity signal; never an acknowledged write.
		return ServerError, "clickhouse_exception_in_200", true
	}
	return 0, "", false
}

// hdrClickHouseExceptionCode is X-ClickHouse-Exception-Code in canonical
// form, so that http.Header.Get does not allocate to canonicalise it.
const hdrClickHouseExceptionCode = "X-Clickhouse-Exception-Code"

// clickHouseExceptionIn2xx reports whether a 2xx from ClickHouse carries
// X-ClickHouse-Exception-Code. Once ClickHouse has sent its status line
// (with send_progress_in_http_headers, at the first X-ClickHouse-Progress
// header, long before an INSERT ends), an exception can no longer change
// it: ClickHouse adds the code as the last header of that 200 and writes
// the exception's text as the body.
func clickHouseExceptionIn2xx(status int, h http.Header) bool {
	return status >= 200 && status <= 299 && h.Get(hdrClickHouseExceptionCode) != ""
}

// hasClickHouseCode reports whether body contains "Code: <code>" followed
// by a non-digit, so that "Code: 2520" does not match "252".
func hasClickHouseCode(body []byte, code string) bool {
	const prefix = "Code: "
	for i := 0; i < len(body); {
		j := bytes.Index(body[i:], []byte(prefix))
		if j < 0 {
			return false
		}
		rest := body[i+j+len(prefix):]
		if len(rest) > len(code) && string(rest[:len(code)]) == code && (rest[len(code)] < '0' || rest[len(code)] > '9') {
			return true
		}
		i += j + len(prefix)
	}
	return false
}

// eachJSONString calls fn with the raw bytes (escapes left as they are)
// of every string value whose key is exactly key, at any depth, in order,
// until fn returns true; it reports whether fn did. It is lexical, not a
// parser: strings and escapes are honoured, so a key quoted inside another
// string does not count, and truncated or malformed input ends the search
// quietly. Keys written with escapes do not match.
func eachJSONString(body []byte, key string, fn func(v []byte) bool) bool {
	for i := 0; i < len(body); {
		if body[i] != '"' {
			i++
			continue
		}
		end, ok := jsonStringEnd(body, i+1)
		if !ok {
			return false
		}
		s := body[i+1 : end]
		j := skipJSONSpace(body, end+1)
		i = end + 1
		if j >= len(body) || body[j] != ':' || string(s) != key {
			continue
		}
		j = skipJSONSpace(body, j+1)
		if j >= len(body) || body[j] != '"' {
			i = j
			continue
		}
		vEnd, ok := jsonStringEnd(body, j+1)
		if !ok {
			return false
		}
		if fn(body[j+1 : vEnd]) {
			return true
		}
		i = vEnd + 1
	}
	return false
}

// jsonStringEnd returns the index of the quote that closes the string whose
// content starts at i, skipping escaped characters; ok=false if the input
// ends first.
func jsonStringEnd(b []byte, i int) (int, bool) {
	for i < len(b) {
		switch b[i] {
		case '"':
			return i, true
		case '\\':
			i += 2
		default:
			i++
		}
	}
	return 0, false
}

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// xmlElement returns the trimmed text between the first open tag in b and
// the close tag after it, ok=false when there is none or it is cut off.
func xmlElement(b []byte, open, close string) ([]byte, bool) {
	i := bytes.Index(b, []byte(open))
	if i < 0 {
		return nil, false
	}
	rest := b[i+len(open):]
	j := bytes.Index(rest, []byte(close))
	if j < 0 {
		return nil, false
	}
	return bytes.TrimSpace(rest[:j]), true
}
