package proxy

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"strconv"

	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// Pushback in the store's words. An AWS SDK decides whether to retry by
// the error code in the body, not by the status alone: in standard mode a
// bare 429 is final, and sluice's JSON body names no code it knows. Under
// the S3 and DynamoDB profiles sluice's pushback therefore carries the
// store's own throttling error (S3's SlowDown, DynamoDB's
// ThrottlingException), which every retry mode retries as a throttle (and
// the adaptive mode slows for), with its status still
// SLUICE_PUSHBACK_STATUS and its Retry-After also in milliseconds in
// x-amz-retry-after, which newer SDKs read. Sluice's own code, message and
// details stay in the body for whoever reads it.

// isPushback reports whether code is one of sluice's pushback answers:
// the loader is to send the write again later.
func isPushback(code string) bool {
	switch code {
	case "backpressure", "shutting_down", "job_backoff", "too_many_jobs":
		return true
	}
	return false
}

// errorWriter is how a proxy for profile answers its own errors: in the
// store's words for a pushback under S3 and DynamoDB, apierror.Write
// otherwise.
func errorWriter(profile classify.Profile) apierror.Writer {
	var dialect apierror.Writer
	switch profile {
	case classify.S3:
		dialect = s3Pushback
	case classify.DynamoDB:
		dialect = dynamoPushback
	default:
		return apierror.Write
	}
	return func(w http.ResponseWriter, status int, code, msg string, details map[string]any) {
		if !isPushback(code) {
			apierror.Write(w, status, code, msg, details)
			return
		}
		// x-amz-retry-after: the Retry-After already set, in milliseconds.
		h := w.Header()
		if secs, err := strconv.ParseInt(h.Get("Retry-After"), 10, 64); err == nil && secs > 0 {
			h.Set("X-Amz-Retry-After", strconv.FormatInt(secs*1000, 10))
		}
		dialect(w, status, code, msg, details)
	}
}

// s3Error is S3's error document, with sluice's code and reason added.
type s3Error struct {
	XMLName      xml.Name `xml:"Error"`
	Code         string   `xml:"Code"`
	Message      string   `xml:"Message"`
	SluiceError  string   `xml:"SluiceError"`
	SluiceReason string   `xml:"SluiceReason,omitempty"`
	SluiceJob    string   `xml:"SluiceJob,omitempty"`
}

func s3Pushback(w http.ResponseWriter, status int, code, msg string, details map[string]any) {
	reason, _ := details["reason"].(string)
	job, _ := details["job"].(string)
	apierror.SetHeader(w.Header(), "application/xml")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(s3Error{Code: "SlowDown", Message: msg, SluiceError: code, SluiceReason: reason, SluiceJob: job})
}

// dynamoError is DynamoDB's error body, with sluice's own fields
// (apierror.Body's) beside its type.
type dynamoError struct {
	Type    string         `json:"__type"`
	Message string         `json:"message"`
	Error   string         `json:"error"`
	Details map[string]any `json:"details,omitempty"`
}

func dynamoPushback(w http.ResponseWriter, status int, code, msg string, details map[string]any) {
	apierror.SetHeader(w.Header(), "application/x-amz-json-1.0")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(dynamoError{Type: "com.amazonaws.dynamodb.v20120810#ThrottlingException", Message: msg, Error: code, Details: details})
}
