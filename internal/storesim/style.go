package storesim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Style is how a store answers writes and signals throttling. The throttle
// bodies are byte for byte what the real stores send, so that classifiers
// can be tested against them.
type Style uint8

const (
	// StyleGeneric is a quota API: 429 Too Many Requests with Retry-After in
	// seconds; success is 204.
	StyleGeneric Style = iota
	// StyleS3 is Amazon S3: 503 with an XML <Error> whose Code is SlowDown;
	// success is 200 with an ETag.
	StyleS3
	// StyleElasticsearch is the _bulk API: 200 with "errors":true and a 429
	// es_rejected_execution_exception on each item over capacity; a write
	// rejected as a whole (concurrency limit, Refuse) is a 429 with the same
	// exception at top level.
	StyleElasticsearch
	// StyleDynamoDB is DynamoDB: 400 with a JSON
	// ProvisionedThroughputExceededException; success is 200 {}.
	StyleDynamoDB
	// StyleVictoriaMetrics is VictoriaMetrics single node: 503 text/plain
	// "cannot process insert request for …"; success is 204.
	StyleVictoriaMetrics
)

var styleNames = [...]string{"generic", "s3", "elasticsearch", "dynamodb", "victoriametrics"}

func (s Style) String() string {
	if int(s) < len(styleNames) {
		return styleNames[s]
	}
	return fmt.Sprintf("Style(%d)", uint8(s))
}

// ParseStyle parses a style name as printed by String.
func ParseStyle(name string) (Style, error) {
	for i, n := range styleNames {
		if strings.EqualFold(name, n) {
			return Style(i), nil
		}
	}
	return 0, fmt.Errorf("storesim: unknown style %q (want one of %s)", name, strings.Join(styleNames[:], ", "))
}

// partial reports whether the style admits part of a request.
func (s Style) partial() bool { return s == StyleElasticsearch }

// Exact bodies of the real stores' throttling answers.
const (
	// S3SlowDownMessage is S3's Message for Code SlowDown.
	S3SlowDownMessage = "Please reduce your request rate."
	// DynamoDBThroughputType is DynamoDB's __type for a throttled write.
	DynamoDBThroughputType = "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
	// DynamoDBThroughputMessage is DynamoDB's message for that exception.
	DynamoDBThroughputMessage = "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."
	// ESRejectedType is Elasticsearch's error type for a rejected write.
	ESRejectedType = "es_rejected_execution_exception"
	// ClientHeader carries a client identity that the store reports in
	// Event.Client (benchmarks use it to tell fleet members apart).
	ClientHeader = "X-Storesim-Client"
)

// VictoriaMetricsBody returns the exact text VictoriaMetrics sends (followed
// by a newline, as http.Error writes it) when a write waited
// -insert.maxQueueDuration for one of -maxConcurrentInserts slots.
func VictoriaMetricsBody(maxQueueDuration time.Duration, maxConcurrentInserts int) string {
	return fmt.Sprintf("cannot process insert request for %.3f seconds because %d concurrent insert requests are executed. "+
		"Possible solutions: to reduce workload; to increase compute resources at the server; "+
		"to increase -insert.maxQueueDuration; to increase -maxConcurrentInserts",
		maxQueueDuration.Seconds(), maxConcurrentInserts)
}

// S3ErrorBody returns an S3 XML error document.
func S3ErrorBody(code, message, requestID string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		"<Error><Code>" + code + "</Code><Message>" + message + "</Message><RequestId>" + requestID +
		"</RequestId><HostId>" + hostID(requestID) + "</HostId></Error>"
}

func hostID(requestID string) string {
	return "sim/" + requestID + "/storesim="
}

// esWriteRejectReason is the reason Elasticsearch gives for an item rejected
// by a full write thread pool queue.
func esWriteRejectReason(queued int64) string {
	return "rejected execution of org.elasticsearch.action.support.replication.TransportWriteAction$1/WrappedActionListener{org.elasticsearch.action.support.replication.TransportWriteAction$1@1f7d2d3a}" +
		"{org.elasticsearch.action.bulk.TransportShardBulkAction$2@6ea8b3f0} on EsThreadPoolExecutor[name = storesim/write, queue capacity = 10000, " +
		"org.elasticsearch.common.util.concurrent.EsThreadPoolExecutor@5c1b2a7e[Running, pool size = 8, active threads = 8, queued tasks = 10000, completed tasks = " +
		strconv.FormatInt(queued, 10) + "]]"
}

// esCoordinatingRejectReason is the reason for a whole bulk request rejected
// by indexing pressure on the coordinating node.
func esCoordinatingRejectReason(bytes int64) string {
	return fmt.Sprintf("rejected execution of coordinating operation [coordinating_and_primary_bytes=%d, replica_bytes=0, all_bytes=%d, "+
		"coordinating_operation_bytes=%d, max_coordinating_and_primary_bytes=107374182]", 107374182-bytes/2, 107374182-bytes/2, bytes)
}

// response is a fully formed answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// bulkAction is one action line of an Elasticsearch bulk request.
type bulkAction struct {
	op, index, id string
}

// verdict is how a write ended, as far as the response format cares.
type verdict uint8

const (
	verdictServed verdict = iota // admitted by capacity: Decision.AcceptedItems tells how much
	verdictWhole                 // rejected as a whole: concurrency limit or Refuse outage
	verdictFailed                // Fail outage: internal error
)

// answer builds the response for a write: d is the store's decision, items
// the write's item count, actions the parsed bulk actions (Elasticsearch
// only), reqID a unique request id, seq a sequence for generated ids and
// bodyBytes the request's size.
func (s Style) answer(cfg *Config, v verdict, d Decision, items int, actions []bulkAction, reqID string, seq int64, bodyBytes int64) response {
	failed := v == verdictFailed
	if v == verdictWhole {
		d.Refused = true
	}
	h := http.Header{}
	switch s {
	case StyleS3:
		h.Set("x-amz-request-id", reqID)
		h.Set("x-amz-id-2", hostID(reqID))
		h.Set("Server", "AmazonS3")
		switch {
		case failed:
			h.Set("Content-Type", "application/xml")
			return response{http.StatusInternalServerError, h, []byte(S3ErrorBody("InternalError", "We encountered an internal error. Please try again.", reqID))}
		case d.Refused:
			h.Set("Content-Type", "application/xml")
			return response{http.StatusServiceUnavailable, h, []byte(S3ErrorBody("SlowDown", S3SlowDownMessage, reqID))}
		}
		h.Set("ETag", fmt.Sprintf("%q", fmt.Sprintf("%032x", seq)))
		return response{http.StatusOK, h, nil}

	case StyleDynamoDB:
		h.Set("x-amzn-RequestId", reqID)
		h.Set("Content-Type", "application/x-amz-json-1.0")
		switch {
		case failed:
			return response{http.StatusInternalServerError, h, []byte(`{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}`)}
		case d.Refused:
			return response{http.StatusBadRequest, h, []byte(`{"__type":"` + DynamoDBThroughputType + `","message":"` + DynamoDBThroughputMessage + `"}`)}
		}
		return response{http.StatusOK, h, []byte("{}")}

	case StyleVictoriaMetrics:
		switch {
		case failed:
			return textResponse(http.StatusInternalServerError, "cannot process insert request: internal error")
		case d.Refused:
			n := cfg.MaxConcurrency
			if n == 0 {
				n = defaultVMConcurrency
			}
			return textResponse(http.StatusServiceUnavailable, VictoriaMetricsBody(cfg.MaxQueueDuration, n))
		}
		return response{http.StatusNoContent, h, nil}

	case StyleElasticsearch:
		h.Set("Content-Type", "application/json")
		h.Set("X-elastic-product", "Elasticsearch")
		switch {
		case failed:
			return response{http.StatusInternalServerError, h, esTopError("internal_server_error", "simulated internal failure", http.StatusInternalServerError)}
		case v == verdictWhole || len(actions) == 0:
			// Rejected as a whole: indexing pressure on the coordinating node.
			return response{http.StatusTooManyRequests, h, esTopError(ESRejectedType, esCoordinatingRejectReason(bodyBytes), http.StatusTooManyRequests)}
		}
		return response{http.StatusOK, h, esBulkBody(d, actions, seq)}
	}

	// StyleGeneric.
	switch {
	case failed:
		return textResponse(http.StatusInternalServerError, "internal server error")
	case d.Refused || d.AcceptedItems < items:
		r := textResponse(http.StatusTooManyRequests, "rate limit exceeded, retry later")
		r.header.Set("Retry-After", strconv.Itoa(int((d.RetryAfter+time.Second-1)/time.Second)))
		return r
	}
	return response{http.StatusNoContent, h, nil}
}

// defaultVMConcurrency is what the VictoriaMetrics body reports when the
// simulator has no concurrency cap (VictoriaMetrics' default is 2×CPUs).
const defaultVMConcurrency = 16

// textResponse mirrors http.Error.
func textResponse(status int, msg string) response {
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	return response{status, h, []byte(msg + "\n")}
}

func esTopError(typ, reason string, status int) []byte {
	type cause struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	}
	var body struct {
		Error struct {
			RootCause []cause `json:"root_cause"`
			cause
		} `json:"error"`
		Status int `json:"status"`
	}
	body.Error.RootCause = []cause{{typ, reason}}
	body.Error.cause = cause{typ, reason}
	body.Status = status
	b, err := json.Marshal(body)
	if err != nil {
		panic("BUG: storesim: marshal ES error: " + err.Error())
	}
	return b
}

// esBulkBody writes a _bulk response: the first d.AcceptedItems actions
// succeed, the rest are rejected with 429.
func esBulkBody(d Decision, actions []bulkAction, seq int64) []byte {
	var b bytes.Buffer
	b.Grow(64 + 200*len(actions))
	took := d.Latency.Milliseconds()
	fmt.Fprintf(&b, `{"took":%d,"errors":%t,"items":[`, took, d.AcceptedItems < len(actions))
	for i, a := range actions {
		if i > 0 {
			b.WriteByte(',')
		}
		id := a.id
		if id == "" {
			id = fmt.Sprintf("sim%016x%04x", seq, i)
		}
		index, _ := json.Marshal(a.index)
		idj, _ := json.Marshal(id)
		if i < d.AcceptedItems {
			status, result := 201, "created"
			switch a.op {
			case "update":
				status, result = 200, "updated"
			case "delete":
				status, result = 200, "deleted"
			case "index":
				if a.id != "" {
					status, result = 200, "updated"
				}
			}
			fmt.Fprintf(&b, `{%q:{"_index":%s,"_id":%s,"_version":1,"result":%q,"_shards":{"total":2,"successful":1,"failed":0},"_seq_no":%d,"_primary_term":1,"status":%d}}`,
				a.op, index, idj, result, seq+int64(i), status)
			continue
		}
		reason, _ := json.Marshal(esWriteRejectReason(seq))
		fmt.Fprintf(&b, `{%q:{"_index":%s,"_id":%s,"status":429,"error":{"type":%q,"reason":%s}}}`,
			a.op, index, idj, ESRejectedType, reason)
	}
	b.WriteString("]}")
	return b.Bytes()
}

// parseBulk returns the actions of an Elasticsearch NDJSON bulk body: an
// action line names the op and optional _index/_id; every op but delete is
// followed by a source line. Malformed action lines and unknown ops count as
// index actions so that the item count stays right.
func parseBulk(body []byte, defaultIndex string) []bulkAction {
	var out []bulkAction
	expectSource := false
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if expectSource {
			expectSource = false
			continue
		}
		var m map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		a := bulkAction{op: "index", index: defaultIndex}
		if err := json.Unmarshal(line, &m); err == nil && len(m) == 1 {
			for op, meta := range m {
				switch op {
				case "index", "create", "update", "delete":
					a.op = op
				}
				if meta.Index != "" {
					a.index = meta.Index
				}
				a.id = meta.ID
			}
		}
		expectSource = a.op != "delete"
		out = append(out, a)
	}
	return out
}

// countLines returns the number of non-empty lines, at least 1.
func countLines(body []byte) int {
	n := 0
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		if len(bytes.TrimSpace(line)) > 0 {
			n++
		}
	}
	return max(n, 1)
}
