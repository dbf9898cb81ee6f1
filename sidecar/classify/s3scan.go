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
// as errors and retry; sluice must not count them as progress. Any other
// operation whose answer is not the object's data may also put an <Error>
// document in a 200 (the AWS SDKs check every such operation since 2024–26);
// for those an empty answer is the normal one (PutObject, UploadPart).

// s3KeepMax is how much of such an answer, from its root element on, an
// s3Scanner keeps: an S3 error document is a few hundred bytes.
const s3KeepMax = 4 << 10

// isS3Write reports whether req is an S3 request whose 200 answer is a
// document (or nothing), never the object's data: PUT, POST or DELETE. A
// GET's answer is the object, which may well be an XML file with an <Error>
// root.
func isS3Write(req Request) bool {
	return req.Method == http.MethodPut || req.Method == http.MethodPost || req.Method == http.MethodDelete
}

// isS3Deferred reports whether req is one of the S3 operations that answer
// 200 before the work is done, so that even an empty answer is an error:
// CompleteMultipartUpload (POST ?uploadId=) and CopyObject or
// UploadPartCopy (PUT with x-amz-copy-source).
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

// s3Scanner drops the answer's prolog (whitespace, and an XML declaration
// with the keep-alive spaces S3 and MinIO send after it) and keeps the
// start of its root element.
type s3Scanner struct {
	status   int
	deferred bool   // an answer without a root element is an error (isS3Deferred)
	lt       bool   // the prolog's last byte was '<': the next decides
	inDecl   bool   // inside <? … ?>
	q        bool   // inside it, the last byte was '?'
	kept     []byte // from the root element's '<' on, at most s3KeepMax bytes
}

func (s *s3Scanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(s.kept) == 0 && len(p) > 0 {
		c := p[0]
		p = p[1:]
		switch {
		case s.inDecl:
			s.inDecl = !(s.q && c == '>')
			s.q = c == '?'
		case s.lt:
			s.lt = false
			if c == '?' {
				s.inDecl, s.q = true, false
			} else {
				s.kept = append(s.kept, '<', c)
			}
		case c == '<':
			s.lt = true
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		default:
			s.kept = append(s.kept, c) // not XML: no <Error> either
		}
	}
	if room := s3KeepMax - len(s.kept); room > 0 && len(p) > 0 {
		s.kept = append(s.kept, p[:min(room, len(p))]...)
	}
	return n, nil
}

// Result is ServerError "s3_error_in_200" for an <Error> root, or for a
// deferred operation's answer with no root element (empty, or only
// whitespace and an XML declaration), Throttled "s3_slowdown" for an
// <Error> whose Code starts with SlowDown, and OK otherwise: another
// document, no document for another operation, or one cut before its root
// was read.
func (s *s3Scanner) Result() Result {
	ok := Result{Kind: OK, Reason: statusReason(s.status), Items: -1}
	broken := Result{Kind: ServerError, Reason: "s3_error_in_200", Share: 1, Items: -1}
	const root = "<Error"
	switch {
	case len(s.kept) == 0 && (s.lt || s.inDecl):
		return ok // cut inside the prolog
	case len(s.kept) == 0 && !s.deferred:
		return ok
	case len(s.kept) == 0:
		return broken
	case len(s.kept) <= len(root) || !bytes.HasPrefix(s.kept, []byte(root)):
		return ok
	}
	switch s.kept[len(root)] {
	case '>', '/', ' ', '\t', '\r', '\n':
	default:
		return ok // <ErrorDocument>, say
	}
	if code, found := xmlElement(s.kept, "<Code>", "</Code>"); found && bytes.HasPrefix(code, []byte("SlowDown")) {
		return Result{Kind: Throttled, Reason: "s3_slowdown", Share: 1, Items: -1, Scoped: true}
	}
	return broken
}
