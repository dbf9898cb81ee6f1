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

	// A DeleteObjects answer (<DeleteResult>) lists a <Deleted> or an
	// <Error> for each key, the errors possibly SlowDown: a 200 that is a
	// partial throttle. Up to 1,000 keys, past what is kept: the tags are
	// counted as the answer streams (tail holds the end of the last write,
	// for a tag cut between two).
	tags      tagCounter
	requested int // keys the DeleteObjects request named (Request.Items), 0 unknown
}

// s3DeleteTags are what a DeleteResult's entries are counted by: each key
// deleted, each key not, and each of those that S3 throttled.
var s3DeleteTags = [3][]byte{[]byte("<Deleted>"), []byte("<Error>"), []byte("<Code>SlowDown")}

const s3TagMax = len("<Code>SlowDown")

const s3DeleteRoot = "<DeleteResult"

func (s *s3Scanner) Write(p []byte) (int, error) {
	if r := s.kept[:min(len(s.kept), len(s3DeleteRoot))]; bytes.Equal(r, []byte(s3DeleteRoot[:len(r)])) {
		// A DeleteResult, or a root not read far enough to tell: an
		// answer known to be another document is not searched.
		s.tags.count(s3DeleteTags[:], p)
	}
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

// tagCounter counts tags in a stream written in parts, those cut between
// two parts too.
type tagCounter struct {
	n    [3]int // per tag, in the order given to count
	tail []byte // the end of the last part: a tag may start in it
}

// count counts tags (at most 3, none longer than s3TagMax) in p.
func (c *tagCounter) count(tags [][]byte, p []byte) {
	if len(p) == 0 {
		return
	}
	var j [2 * s3TagMax]byte
	for i, tag := range tags {
		c.n[i] += bytes.Count(p, tag)
		if len(c.tail) > 0 {
			// Only a tag that starts in the tail ends in p's first bytes.
			l := len(tag) - 1
			junction := append(append(j[:0], c.tail[max(0, len(c.tail)-l):]...), p[:min(l, len(p))]...)
			c.n[i] += bytes.Count(junction, tag)
		}
	}
	if len(p) >= s3TagMax-1 {
		c.tail = append(c.tail[:0], p[len(p)-(s3TagMax-1):]...)
	} else {
		c.tail = append(c.tail, p...)
		c.tail = c.tail[max(0, len(c.tail)-(s3TagMax-1)):]
	}
}

// s3DeleteCounter counts the keys of a DeleteObjects request: its
// <Object> elements, once its </Delete> was written.
type s3DeleteCounter struct{ tags tagCounter }

var s3DeleteRequestTags = [...][]byte{[]byte("<Object>"), []byte("</Delete>")}

func (c *s3DeleteCounter) Write(p []byte) (int, error) {
	c.tags.count(s3DeleteRequestTags[:], p)
	return len(p), nil
}

// Items implements ItemCounter.
func (c *s3DeleteCounter) Items() int {
	if c.tags.n[1] == 0 {
		return -1
	}
	return c.tags.n[0]
}

// isS3DeleteObjects reports whether req is a DeleteObjects request: POST
// to a bucket with ?delete.
func isS3DeleteObjects(req Request) bool {
	if req.Method != http.MethodPost {
		return false
	}
	q, err := url.ParseQuery(req.RawQuery)
	return err == nil && q.Has("delete")
}

// deleteResult is Result for a <DeleteResult> root: a throttle of the
// share of keys S3 answered SlowDown, the keys deleted counted as taken.
// Quiet mode lists only the keys not deleted: the others are the request's
// less those, when its count is known; an answer that lists no key took
// them all, of a count perhaps not known.
func (s *s3Scanner) deleteResult() Result {
	// A SlowDown code counts only as one of the errors: a document with
	// more codes than errors is not S3's, and must not make a share
	// over 1 or a negative count.
	deleted, failed, slow := s.tags.n[0], s.tags.n[1], min(s.tags.n[2], s.tags.n[1])
	if deleted == 0 && s.requested >= failed {
		deleted = s.requested - failed // Quiet mode
	}
	r := Result{Kind: OK, Reason: statusReason(s.status), Items: deleted, Failed: failed - slow}
	if deleted+failed == 0 {
		r.Items = -1
	}
	if slow > 0 {
		r.Kind, r.Reason, r.Scoped = Throttled, "s3_slowdown", true
		r.Rejected, r.Share = slow, float64(slow)/float64(deleted+failed)
	}
	return r
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
	switch {
	case len(s.kept) == 0 && (s.lt || s.inDecl):
		return ok // cut inside the prolog
	case len(s.kept) == 0 && !s.deferred:
		return ok
	case len(s.kept) == 0:
		return broken
	case isRoot(s.kept, s3DeleteRoot):
		return s.deleteResult()
	case !isRoot(s.kept, "<Error"):
		return ok // another document (<ErrorDocument>, say), or one cut in its root's name
	}
	if code, found := xmlElement(s.kept, "<Code>", "</Code>"); found && bytes.HasPrefix(code, []byte("SlowDown")) {
		return Result{Kind: Throttled, Reason: "s3_slowdown", Share: 1, Items: -1, Scoped: true}
	}
	return broken
}

// isRoot reports whether kept starts with the element name (its '<'
// included), whole: followed by '>', '/' or a space, not a longer name.
func isRoot(kept []byte, name string) bool {
	if len(kept) <= len(name) || !bytes.HasPrefix(kept, []byte(name)) {
		return false
	}
	switch kept[len(name)] {
	case '>', '/', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}
