// Package classify turns one upstream attempt's response into a signal for
// the rate and concurrency controller: did the store accept the write, ask
// us to slow down, struggle, or reject the request as the loader's fault?
//
// The model: every attempt yields exactly one [Result]. Its [Kind] says what
// to do with the attempt (count it, slow down, retry, drop); its Reason is a
// stable snake_case word from a small fixed set, fit for a metric label; its
// RetryAfter carries the store's own pacing hint; its Share says how much of
// the attempt's work was rejected, so a bulk response that refused 3 items out
// of 1000 weighs 0.003 of a whole-request 429.
//
// Classification reads the status code and headers first. A [Profile] names
// the store behind the sidecar and adds what only that store says: S3's
// SlowDown code in a 503, DynamoDB's ProvisionedThroughputExceededException in
// a 400, VictoriaMetrics' insert limit in a 503, ClickHouse's TOO_MANY_PARTS
// in a 500 (or in a 200 whose status line went out before the exception).
// For those the caller reads at most [BodyPrefixMax] bytes of the
// error body when [Profile.WantsBody] asks for it. Elasticsearch and
// OpenSearch `_bulk` answer 200 even when some items were rejected with 429,
// DynamoDB's BatchWriteItem answers 200 handing back the writes it did not
// take under UnprocessedItems, and S3 may put an error inside the 200 of a
// write (minutes late for a CompleteMultipartUpload or a copy);
// [Profile.NewScanner] returns a
// streaming [Scanner] that reads them while the body flows to the loader, in
// constant memory.
//
// Everything here is pure: no I/O, no clocks (time is a parameter), no
// shared state. All functions and methods are safe for concurrent use except
// a [Scanner], which belongs to one response, and an [ItemCounter], which
// belongs to one request.
package classify

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kind is what an attempt's outcome means for the controller.
type Kind uint8

const (
	// OK: the store accepted the attempt (2xx). 1xx and 3xx are passed
	// through to the loader unchanged and also count as OK: they are not a
	// capacity signal.
	OK Kind = iota
	// Throttled: the store explicitly asked us to slow down: 429, S3
	// SlowDown, DynamoDB ProvisionedThroughputExceededException and its
	// relatives, Elasticsearch es_rejected_execution_exception, bulk items
	// rejected with 429, GCS rateLimitExceeded, VictoriaMetrics' concurrent
	// insert limit, ClickHouse TOO_MANY_PARTS, and a 503 that names a
	// Retry-After. Cut the rate, honour RetryAfter, retry.
	Throttled
	// Overloaded: the store (or the gateway in front of it) is struggling
	// without saying "slow down": 503 without a store code or Retry-After,
	// 502, 504, 408. Back off and retry.
	Overloaded
	// ClientError: the request itself is wrong (other 4xx, and the
	// permanent 501 and 505). The loader's fault, not a capacity signal,
	// never retried by sluice.
	ClientError
	// ServerError: another 5xx (500, 507, …), or an answer that broke off.
	// Retryable, but not a capacity signal.
	ServerError
	// Timeout: no response within the attempt's deadline (a connection
	// that could not be set up in time included). Never returned by
	// Classify: the proxy sets it itself when there is no response to
	// classify.
	Timeout
	// Unreachable: no store answered at all: the connection was refused,
	// or reset before any answer, or the store's name did not resolve.
	// Not a capacity signal (nothing was learned of the store's load), but
	// no use sending more writes into either: the controller probes the
	// store with one write at a time until it answers. Retryable. Never
	// returned by Classify, like Timeout.
	Unreachable
)

var kindNames = [...]string{
	OK:          "ok",
	Throttled:   "throttled",
	Overloaded:  "overloaded",
	ClientError: "client_error",
	ServerError: "server_error",
	Timeout:     "timeout",
	Unreachable: "unreachable",
}

// String returns the kind's stable snake_case name ("ok", "throttled",
// "overloaded", "client_error", "server_error", "timeout",
// "unreachable"), or "kind(N)" for a value outside the enum.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Congestion reports whether the kind is a capacity signal that should
// lower the send rate or concurrency: Throttled, Overloaded and Timeout.
func (k Kind) Congestion() bool {
	return k == Throttled || k == Overloaded || k == Timeout
}

// Retryable reports whether an attempt of this kind may be sent again:
// Throttled, Overloaded, ServerError, Timeout and Unreachable. OK needs no
// retry and a ClientError would fail the same way again.
func (k Kind) Retryable() bool {
	return k == Throttled || k == Overloaded || k == ServerError || k == Timeout || k == Unreachable
}

// Result is the classification of one attempt.
type Result struct {
	// Kind is what the outcome means for the controller.
	Kind Kind

	// Reason names why, in stable snake_case from a fixed set, so it can be
	// a metric label: "status_NNN" (the status decided; NNN in 100..599),
	// "status_invalid" (status outside 100..599), "status_503_retry_after",
	// "s3_slowdown", "s3_service_unavailable", "s3_request_timeout",
	// "s3_error_in_200",
	// "dynamodb_provisioned_throughput_exceeded", "dynamodb_throttling",
	// "dynamodb_request_limit_exceeded", "dynamodb_limit_exceeded",
	// "dynamodb_transaction_throttled", "es_rejected_execution",
	// "dynamodb_unprocessed_items", "es_circuit_breaking",
	// "es_bulk_item_429", "gcs_rate_limit_exceeded",
	// "gcs_user_rate_limit_exceeded", "victoriametrics_insert_limit",
	// "clickhouse_too_many_parts", "clickhouse_too_many_simultaneous_queries",
	// "clickhouse_too_many_partitions", "clickhouse_exception_in_200".
	Reason string

	// RetryAfter is the store's Retry-After hint relative to the classify
	// time, zero when absent, unparsable, in the past or above
	// [MaxRetryAfter]. Read on 3xx, 5xx and on every Throttled or
	// Overloaded outcome.
	RetryAfter time.Duration

	// Share is the fraction of the attempt's work that was rejected, in
	// [0, 1]: 0 for OK, 1 for a whole-request rejection, and for an
	// Elasticsearch bulk response Rejected/(Items+Rejected+Failed), for a
	// DynamoDB BatchWriteItem one Rejected/(Items+Rejected) (at least
	// Rejected/25 when the request's count is unknown).
	Share float64

	// Concurrency reports that the store refused because it had too many
	// requests in flight at once, not because they came too fast:
	// VictoriaMetrics' insert limit (-maxConcurrentInserts) and ClickHouse's
	// TOO_MANY_SIMULTANEOUS_QUERIES (max_concurrent_queries). Fewer requests
	// in flight help; a lower send rate does not.
	Concurrency bool

	// Scoped reports, for a Throttled result, that the throttle concerns
	// the write's scopes only (its table, bucket prefix, index: see
	// [Profile.Scopes] and [Profile.ScopedThrottle]), not the whole store:
	// it should slow the writes to those scopes, not every write. False
	// for every other kind, and for store-wide throttles (a node's full
	// queue, a cap on concurrency, an account's limit).
	Scoped bool

	// Items is the number of items the store acknowledged (bulk: items with
	// a 2xx status), or -1 when the response cannot be counted in items,
	// including a bulk body that is not one complete JSON object (garbage,
	// or cut short): nothing unproven is reported as acknowledged.
	Items int

	// Rejected is the number of items rejected with 429, or handed back
	// unprocessed by DynamoDB (bulk only).
	Rejected int

	// Failed is the number of items that failed for another reason (bulk
	// only: non-2xx, non-429 statuses such as a 400 mapping error, or an
	// item with no status). They are the loader's problem, not a capacity
	// signal.
	Failed int
}

// Profile names the store behind the sidecar, which decides what
// store-specific codes Classify looks for. The zero value is Generic.
// Every profile applies the generic status rules to whatever it does not
// recognise.
type Profile uint8

const (
	// Generic uses the status code and Retry-After only.
	Generic Profile = iota
	// Elasticsearch also covers OpenSearch: es_rejected_execution_exception
	// (OpenSearch: rejected_execution_exception) and circuit_breaking_exception
	// in a 429, and per-item 429s in a `_bulk` 200 via NewScanner.
	Elasticsearch
	// S3 also covers S3-compatible stores (MinIO, Ceph RGW): the XML error
	// Code of a 503 (SlowDown, SlowDownRead, SlowDownWrite,
	// ServiceUnavailable) and of a 400 (RequestTimeout).
	S3
	// GCS is Google Cloud Storage's JSON API: error reasons
	// rateLimitExceeded and userRateLimitExceeded in a 429, 403 or 503.
	GCS
	// DynamoDB reads the AWS JSON error type from the X-Amzn-ErrorType
	// header or the body's "__type" of a 400, and the UnprocessedItems of a
	// BatchWriteItem 200 via NewScanner.
	DynamoDB
	// VictoriaMetrics reads the plain-text 503 it sends when more than
	// -maxConcurrentInserts requests wait longer than
	// -insert.maxQueueDuration.
	VictoriaMetrics
	// ClickHouse reads the X-ClickHouse-Exception-Code header and the
	// exception text of a 5xx, and of a 2xx that carries that header: an
	// exception raised after the status line went out.
	ClickHouse

	numProfiles
)

var profileNames = [...]string{
	Generic:         "generic",
	Elasticsearch:   "elasticsearch",
	S3:              "s3",
	GCS:             "gcs",
	DynamoDB:        "dynamodb",
	VictoriaMetrics: "victoriametrics",
	ClickHouse:      "clickhouse",
}

// String returns the profile's configuration name, or "profile(N)" for a
// value outside the enum.
func (p Profile) String() string {
	if p < numProfiles {
		return profileNames[p]
	}
	return "profile(" + strconv.Itoa(int(p)) + ")"
}

// ParseProfile returns the profile named s: "generic", "elasticsearch",
// "opensearch" (an alias of elasticsearch), "s3", "gcs", "dynamodb",
// "victoriametrics" or "clickhouse". Case and surrounding spaces are
// ignored. An empty string is an error, not Generic, so that a missing
// setting is noticed.
func ParseProfile(s string) (Profile, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	if name == "opensearch" {
		return Elasticsearch, nil
	}
	for p, n := range profileNames {
		if name == n {
			return Profile(p), nil
		}
	}
	return Generic, fmt.Errorf("classify: unknown profile %q (valid: generic, elasticsearch, opensearch, s3, gcs, dynamodb, victoriametrics, clickhouse)", s)
}

// BodyPrefixMax is the most of an error response body the caller should
// read for Classify. Store error bodies are a few hundred bytes; the bound
// keeps a misbehaving upstream from making the proxy buffer a large body.
const BodyPrefixMax = 64 << 10

// WantsBody reports whether Classify needs a prefix of the body (at most
// BodyPrefixMax bytes) to classify a response with this status and these
// headers under profile p. It is false for every 2xx (the Elasticsearch bulk
// case uses NewScanner instead) and for every response the headers already
// decide.
func (p Profile) WantsBody(status int, h http.Header) bool {
	switch p {
	case Elasticsearch:
		// The error type tells an overloaded write pool from a tripped
		// circuit breaker.
		return status == http.StatusTooManyRequests
	case S3:
		// SlowDown and ServiceUnavailable share 503; RequestTimeout is a 400.
		return status == http.StatusServiceUnavailable || status == http.StatusBadRequest
	case GCS:
		return status == http.StatusTooManyRequests || status == http.StatusForbidden ||
			status == http.StatusServiceUnavailable
	case DynamoDB:
		// Throttling is a 400 like any validation error; the header, when
		// sent, names the type without the body, except for a cancelled
		// transaction, whose throttling is in the body's cancellation
		// reasons.
		if status != http.StatusBadRequest {
			return false
		}
		t := h.Get(hdrAmznErrorType)
		return t == "" || awsErrorCode(t) == "TransactionCanceledException"
	case VictoriaMetrics:
		return status == http.StatusServiceUnavailable
	case ClickHouse:
		// Even with X-ClickHouse-Exception-Code the body is needed: code 252
		// is both the retryable "Too many parts" and the permanent "Too many
		// partitions for single INSERT block". So for a 200 carrying that
		// header (see clickHouseExceptionIn2xx).
		return status >= 500 && status <= 599 || clickHouseExceptionIn2xx(status, h)
	}
	return false
}

// Classify classifies one response under profile p from its status code,
// headers and body prefix (nil when WantsBody was false or the body was
// empty), in the answer's Content-Encoding: gzip and deflate are decoded
// to be read. now is the time the response arrived; it anchors an HTTP-date
// Retry-After. Classify tolerates a body cut anywhere (a prefix that ends
// mid-token simply does not match), never panics, and never returns
// Timeout. The Result's Items is -1: whole responses are not counted in
// items.
func (p Profile) Classify(status int, h http.Header, bodyPrefix []byte, now time.Time) Result {
	retryAfter, hasRetryAfter := ParseRetryAfter(h.Get("Retry-After"), now)

	var k Kind
	var reason string
	matched := false
	if status >= 400 || p == ClickHouse && clickHouseExceptionIn2xx(status, h) {
		bodyPrefix = decodedPrefix(h, bodyPrefix)
		switch p {
		case Elasticsearch:
			k, reason, matched = classifyElasticsearch(status, bodyPrefix)
		case S3:
			k, reason, matched = classifyS3(status, bodyPrefix)
		case GCS:
			k, reason, matched = classifyGCS(bodyPrefix)
		case DynamoDB:
			k, reason, matched = classifyDynamoDB(h, bodyPrefix)
		case VictoriaMetrics:
			k, reason, matched = classifyVictoriaMetrics(bodyPrefix)
		case ClickHouse:
			k, reason, matched = classifyClickHouse(status, h, bodyPrefix)
		}
	}
	if !matched {
		k, reason = classifyStatus(status, hasRetryAfter)
	}

	r := Result{Kind: k, Reason: reason, Items: -1, Concurrency: capsConcurrency(reason)}
	r.Scoped = k == Throttled && p.ScopedThrottle(reason)
	if k != OK {
		r.Share = 1
	}
	if hasRetryAfter && (k == Throttled || k == Overloaded || (status >= 300 && status <= 399) || (status >= 500 && status <= 599)) {
		r.RetryAfter = retryAfter
	}
	return r
}

// decodedPrefix returns body, a prefix of an answer with header h, as
// text: decoded when its Content-Encoding is gzip or deflate, as far as the
// prefix goes and at most BodyPrefixMax bytes, nil for another encoding or
// bytes that are not what it says. The proxy forwards the loader's
// Accept-Encoding (the answer goes back as it came), and a store answers its
// errors in it too (Elasticsearch compresses by default): read compressed,
// their codes would never match.
func decodedPrefix(h http.Header, body []byte) []byte {
	if len(body) == 0 || !Compressed(h) {
		return body
	}
	var r io.Reader
	switch ce := strings.TrimSpace(h.Get("Content-Encoding")); {
	case strings.EqualFold(ce, "gzip"), strings.EqualFold(ce, "x-gzip"):
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil
		}
		r = zr
	case strings.EqualFold(ce, "deflate"):
		// The zlib format (RFC 9110 §8.4.1.2); some servers send raw
		// deflate under that name.
		if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(body))
		}
	default:
		return nil // br, zstd, a list of codings: not read
	}
	// A prefix ends mid-stream: what came before the cut is kept.
	text, _ := io.ReadAll(io.LimitReader(r, BodyPrefixMax))
	return text
}

// capsConcurrency reports whether reason names a store's limit on
// concurrent requests (see Result.Concurrency).
func capsConcurrency(reason string) bool {
	return reason == "victoriametrics_insert_limit" || reason == "clickhouse_too_many_simultaneous_queries"
}

// classifyStatus applies the generic rules: the status code alone, plus
// whether a valid Retry-After came with it.
func classifyStatus(status int, hasRetryAfter bool) (Kind, string) {
	switch status {
	case http.StatusTooManyRequests:
		// The store's own rate limiter answered: slow down, honour
		// Retry-After, retry the attempt.
		return Throttled, statusReason(status)
	case http.StatusServiceUnavailable:
		if hasRetryAfter {
			// RFC 9110 §15.6.4: the server says when to come back. That is
			// an explicit request to slow down, as strong as a 429.
			return Throttled, "status_503_retry_after"
		}
		// Temporarily unable to serve, cause unknown (overload,
		// maintenance, a node restarting): back off and retry.
		return Overloaded, statusReason(status)
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		// The gateway in front of the store got no answer, or none in time:
		// the store is slow or down. Back off and retry.
		return Overloaded, statusReason(status)
	case http.StatusRequestTimeout:
		// The server gave up waiting on the request (ClickHouse maps its
		// TIMEOUT_EXCEEDED here). Our pace outran the store: back off and
		// retry, the same as a timeout on our side.
		return Overloaded, statusReason(status)
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		// Permanent (RFC 9110 §15.6.2, §15.6.6): the server cannot do this
		// at all, so a retry only burns budget, and it says nothing about
		// capacity (Vector's ARC also excludes 501). Drop, like a 4xx.
		return ClientError, statusReason(status)
	}
	switch {
	case status >= 100 && status <= 399:
		// 1xx, 2xx and 3xx go back to the loader as they are: accepted or
		// for the loader to follow; no capacity signal.
		return OK, statusReason(status)
	case status >= 400 && status <= 499:
		// The request is wrong (400, 401, 403, 404, 409, 413, …): the
		// loader must fix it; retrying would fail the same way. Drop.
		return ClientError, statusReason(status)
	case status >= 500 && status <= 599:
		// The store failed on this request (500, 507, …): retry, but it is
		// not evidence that we send too fast.
		return ServerError, statusReason(status)
	}
	// Not an HTTP status (Go's client accepts any three digits): not a
	// success, not known to be permanent. Retry without slowing down.
	return ServerError, "status_invalid"
}

// statusReasons holds "status_NNN" for 100..599 so that classifying never
// allocates.
var statusReasons = func() (t [500]string) {
	for i := range t {
		t[i] = "status_" + strconv.Itoa(i+100)
	}
	return t
}()

func statusReason(status int) string {
	if status < 100 || status > 599 {
		return "status_invalid"
	}
	return statusReasons[status-100]
}
