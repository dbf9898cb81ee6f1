package classify_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/sidecar/classify"
)

// The proxy reads a bounded body prefix only when the profile asks for it.
func ExampleProfile_Classify() {
	profile, err := classify.ParseProfile("s3")
	if err != nil {
		panic(err)
	}
	resp := &http.Response{
		StatusCode: http.StatusServiceUnavailable,
		Header:     http.Header{"Retry-After": {"2"}},
		Body: io.NopCloser(strings.NewReader(`<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>`)),
	}
	var prefix []byte
	if profile.WantsBody(resp.StatusCode, resp.Header) {
		prefix, _ = io.ReadAll(io.LimitReader(resp.Body, classify.BodyPrefixMax))
	}
	r := profile.Classify(resp.StatusCode, resp.Header, prefix, time.Now())
	fmt.Println(r.Kind, r.Reason, r.RetryAfter, r.Share)
	fmt.Println("congestion:", r.Kind.Congestion(), "retry:", r.Kind.Retryable())
	// Output:
	// throttled s3_slowdown 2s 1
	// congestion: true retry: true
}

// The proxy tees a bulk response through the Scanner on its way to the
// loader and reads the Result once the body has ended.
func ExampleProfile_NewScanner() {
	body := `{"took":30,"errors":true,"items":[
{"index":{"_index":"logs","_id":"1","status":201}},
{"create":{"_index":"logs","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of primary operation"}}},
{"index":{"_index":"logs","_id":"3","status":201}},
{"index":{"_index":"logs","_id":"4","status":400,"error":{"type":"document_parsing_exception","reason":"failed to parse"}}}]}`
	h := http.Header{"Content-Type": {"application/json"}}
	s := classify.Elasticsearch.NewScanner(classify.Request{Method: http.MethodPost, Path: "/logs/_bulk"}, http.StatusOK, h)

	var loader bytes.Buffer // stands for the loader's ResponseWriter
	if _, err := io.Copy(io.MultiWriter(&loader, s), strings.NewReader(body)); err != nil {
		panic(err)
	}
	r := s.Result()
	fmt.Println(r.Kind, r.Reason, r.Items, r.Rejected, r.Failed, r.Share)
	fmt.Println("loader got every byte:", loader.String() == body)
	// Output:
	// throttled es_bulk_item_429 2 1 1 0.25
	// loader got every byte: true
}
