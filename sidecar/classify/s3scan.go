package classify

import (
	"bytes"
	"net/http"
	"net/url"
)

// S3 answers CopyObject, UploadPartCopy and CompleteMultipartUpload with a
// 200 as soon as it starts the work, sends spaces to keep the connection
// open while it lasts (minutes for a large CompleteMultipartUpload), and
// only then the result: a success document, an <Error> document, or
// nothing at all when the operation broke off. The SDKs read the latter two
// as errors and retry; sluice must not count them as progress.

// s3KeepMax is how much of such an answer, after its leading whitespace, an
// s3Scanner keeps: an S3 error document is a few hundred bytes.
const s3KeepMax = 4 << 10

// isS3Deferred reports whether req is one of the S3 operations whose 200
// may carry an error: CompleteMultipartUpload (POST ?uploadId=) and
// CopyObject or UploadPartCopy (PUT with x-amz-copy-source).
func isS3Deferred(req Request) bool {
	switch req.Method {
	case http.MethodPost:
		q, err := url.ParseQuery(req.RawQuery)
		return err == nil && q.Has("uploadId")
	case http.MethodPut:
		return req.Header.Get("X-Amz-Copy-Source") != ""
	}
	return false
}

// s3Scanner keeps the start of the answer after its leading whitespace.
type s3Scanner struct {
	status int
	kept   []byte // at most s3KeepMax bytes, from the first non-space byte
}

func (s *s3Scanner) Write(p []byte) (int, error) {
	n := len(p)
	if len(s.kept) == 0 {
		p = bytes.TrimLeft(p, " \t\r\n")
	}
	if room := s3KeepMax - len(s.kept); room > 0 && len(p) > 0 {
		s.kept = append(s.kept, p[:min(room, len(p))]...)
	}
	return n, nil
}

// Result is ServerError "s3_error_in_200" for an answer that is empty (or
// only an XML declaration) or an <Error> document, Throttled "s3_slowdown"
// for an <Error> whose Code starts with SlowDown, and OK otherwise, for
// whatever other document it is or a cut one whose root was not read.
func (s *s3Scanner) Result() Result {
	doc := s.kept
	if bytes.HasPrefix(doc, []byte("<?xml")) {
		end := bytes.Index(doc, []byte("?>"))
		if end < 0 {
			return Result{Kind: OK, Reason: statusReason(s.status), Items: -1}
		}
		doc = bytes.TrimLeft(doc[end+2:], " \t\r\n")
	}
	errDoc := bytes.HasPrefix(doc, []byte("<Error>")) || bytes.HasPrefix(doc, []byte("<Error "))
	switch {
	case len(doc) == 0:
		return Result{Kind: ServerError, Reason: "s3_error_in_200", Share: 1, Items: -1}
	case !errDoc:
		return Result{Kind: OK, Reason: statusReason(s.status), Items: -1}
	}
	if code, ok := xmlElement(doc, "<Code>", "</Code>"); ok && bytes.HasPrefix(code, []byte("SlowDown")) {
		return Result{Kind: Throttled, Reason: "s3_slowdown", Share: 1, Items: -1}
	}
	return Result{Kind: ServerError, Reason: "s3_error_in_200", Share: 1, Items: -1}
}
