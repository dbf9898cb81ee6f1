package classify

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Scanner watches a response body on its way to the loader and classifies
// it once the body has ended. The proxy tees the body through Write (the
// loader still receives the bytes unchanged) and calls Result after the
// last Write.
//
// Write never fails and never keeps the bytes: it returns len(p), nil for
// any input, so it cannot break the copy, and a Scanner holds O(1) memory
// whatever the body size. Result may be called at any time and does not
// change the Scanner. A Scanner is not safe for concurrent use.
type Scanner interface {
	io.Writer
	// Result classifies what has been written so far: Throttled with
	// Reason "es_bulk_item_429" and Share = Rejected/(Items+Rejected+Failed)
	// if any item had status 429 or 503 ("es_bulk_item_503" if all of
	// those had 503), or with Reason
	// "dynamodb_unprocessed_items" if any write came back unprocessed;
	// for S3, ServerError "s3_error_in_200" or Throttled "s3_slowdown" (see
	// NewScanner); otherwise OK with the counts.
	Result() Result
}

// Request is what a Scanner needs to know of the request a response
// answers.
type Request struct {
	Method string
	// Path is the URL path; a query string in it is ignored.
	Path string
	// RawQuery is the URL's query string: S3's uploadId names
	// CompleteMultipartUpload.
	RawQuery string
	// Header is the request's header: DynamoDB's X-Amz-Target names the
	// operation, S3's X-Amz-Copy-Source a copy.
	Header http.Header
	// Items is the number of writes the request carried, as an
	// [ItemCounter] (or [Profile.RequestItems]) counted them; 0 or less
	// when unknown.
	Items int
}

// NewScanner returns a Scanner for a response that can report partial
// throttling, or an error, inside a 2xx, or nil when there is nothing to
// scan:
//   - Elasticsearch/OpenSearch `_bulk`: profile Elasticsearch, method POST
//     or PUT, a path equal to "_bulk" or ending in "/_bulk" (a query string
//     or one trailing slash is ignored). Items rejected with 429 are the
//     throttle.
//   - DynamoDB BatchWriteItem: profile DynamoDB, method POST, X-Amz-Target
//     naming BatchWriteItem. The writes under "UnprocessedItems" are the
//     throttle (DynamoDB's answer to a batch past its table's capacity is a
//     200 that hands them back); req.Items, when known, gives its share.
//     BatchExecuteStatement (PartiQL) the same way: the statements whose
//     "Error" has Code ThrottlingError, ProvisionedThroughputExceeded or
//     RequestLimitExceeded are the throttle, of all it lists.
//   - S3 writes (PUT, POST, DELETE; never a GET, whose answer is the
//     object): an <Error> document in the 200 is an error. For
//     CompleteMultipartUpload (POST with an uploadId query parameter),
//     CopyObject and UploadPartCopy (PUT with X-Amz-Copy-Source), which S3
//     answers before the work is done, so is no document at all. Its
//     Result is then ServerError "s3_error_in_200", or Throttled
//     "s3_slowdown" for a SlowDown code; such an answer is no progress. Its
//     Content-Type is not checked (S3 sends application/xml, or none).
//
// The first two need status 2xx and a JSON body (a Content-Type naming
// json, or none), the last status 200. A body with a Content-Encoding other
// than identity is not scanned: it would have to be decompressed, so a
// proxy that wants the scan does not forward the loader's Accept-Encoding
// on a request for which [Profile.ScansAnswer] is true (sluice keeps it
// where the loader signed it). When NewScanner returns a Scanner,
// its Result is the classification of the response, in place of
// Classify's.
func (p Profile) NewScanner(req Request, status int, h http.Header) Scanner {
	if status < 200 || status > 299 || !p.ScansAnswer(req) {
		return nil
	}
	if Compressed(h) {
		return nil
	}
	if p == S3 {
		if status != http.StatusOK {
			return nil
		}
		return &s3Scanner{status: status, deferred: isS3Deferred(req), requested: max(req.Items, 0)}
	}
	if ct := h.Get("Content-Type"); ct != "" && !strings.Contains(strings.ToLower(ct), "json") {
		return nil // CBOR, SMILE or YAML on request
	}
	if p == DynamoDB && isBatchExecuteStatement(req.Header) {
		return &bulkScanner{status: status, partiql: true}
	}
	if p == DynamoDB {
		return &bulkScanner{status: status, dynamo: true, listKey: "UnprocessedItems", requested: max(req.Items, 0)}
	}
	return &bulkScanner{status: status, errorsOnly: filterListsErrorsOnly(req.RawQuery), requested: max(req.Items, 0)}
}

// filterListsErrorsOnly reports whether a _bulk request's query asks
// Elasticsearch for the failed items only, without their status:
// filter_path=items.*.error (the bulk API reference's advice "to return
// only information about failed operations"), with other fields of the
// answer or not. A filter that keeps the items' status, or whose reach is
// not plain (wildcards over items, exclusions), is not taken for it.
func filterListsErrorsOnly(rawQuery string) bool {
	if !strings.Contains(rawQuery, "filter_path") {
		return false // the common case, without parsing the query for each _bulk
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return false
	}
	// Elasticsearch keeps the last of a repeated parameter (RestUtils
	// decodeQueryString), url.Values.Get the first: a repeated filter_path
	// is not read.
	fps := q["filter_path"]
	if len(fps) != 1 || fps[0] == "" {
		return false
	}
	errorsOnly := false
	for _, f := range strings.Split(fps[0], ",") {
		switch f = strings.TrimSpace(f); {
		case f == "items.*.error":
			errorsOnly = true
		case strings.HasPrefix(f, "-"), strings.Contains(f, "*"), strings.HasPrefix(f, "items"):
			// An exclusion, a wildcard that may reach the items' status
			// (**.status, *.*.status), or another filter over the items.
			return false
		}
	}
	return errorsOnly
}

// Compressed reports whether a response with header h has a body in a
// Content-Encoding other than identity, which NewScanner does not read.
func Compressed(h http.Header) bool {
	ce := h.Get("Content-Encoding")
	return ce != "" && !strings.EqualFold(ce, "identity")
}

// ScansAnswer reports whether the answer to req is one whose body
// NewScanner reads (see there): an Elasticsearch _bulk, a DynamoDB
// BatchWriteItem, an S3 write. Only req's Method, Path, RawQuery and Header
// are read.
func (p Profile) ScansAnswer(req Request) bool {
	switch p {
	case Elasticsearch:
		return (req.Method == http.MethodPost || req.Method == http.MethodPut) && IsBulkPath(req.Path)
	case DynamoDB:
		return req.Method == http.MethodPost && (isBatchWriteItem(req.Header) || isBatchExecuteStatement(req.Header))
	case S3:
		return isS3Write(req)
	}
	return false
}

// IsBulkPath reports whether path (a query string allowed) is an
// Elasticsearch or OpenSearch _bulk endpoint: "/_bulk" or
// "/<index>/_bulk".
func IsBulkPath(path string) bool {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	path = strings.TrimSuffix(path, "/")
	return path == "_bulk" || strings.HasSuffix(path, "/_bulk")
}

// The bulk response looks like
//
//	{"took":30,"errors":true,"items":[
//	  {"index":{"_index":"t","_id":"1","status":201,"result":"created",...}},
//	  {"create":{"_index":"t","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"..."}}}]}
//
// An item is an object element of the array under the top-level key
// "items" (depth 3); its status is the integer under key "status" in an
// object directly inside it (depth 4). Numbers elsewhere (in an error, a
// returned _source) and text inside strings (an _id that reads
// `"status":429`) are not statuses. The scanner is a byte-level state
// machine: nesting depth, the kind of container at the five depths that
// matter, in-string and escape flags, and the last key at depths 1, 4
// and 5.
//
// A _bulk sent with filter_path (the bulk API reference recommends
// filter_path=items.*.error "to return only information about failed
// operations") may drop what the scanner counts: an item without a status
// whose error (the object under key "error" at depth 4) has the "type"
// es_rejected_execution_exception (OpenSearch: rejected_execution_exception)
// was rejected with 429 all the same; and a body with no "items" array at
// all, whose "errors" is not true and that has no top-level "error", had
// none fail: all the request's actions were taken (Items -1 when their
// count is unknown, as it is under any filter but that one). An answer
// whose listed items carry a status is read as an unfiltered one.
//
// The same machine reads DynamoDB's BatchWriteItem, whose answer looks like
//
//	{"UnprocessedItems":{"Forum":[{"PutRequest":{"Item":{...}}}]},
//	 "ItemCollectionMetrics":{...},"ConsumedCapacity":[...]}
//
// and whose request has the same shape under "RequestItems": a write is an
// object element of an array that is a value of the object under that
// top-level key (depth 4). Attribute maps nested inside a write, and
// ItemCollectionMetrics, which has the same shape under another key, are
// not writes.

const (
	maxTracked = 5 // deepest level whose container kind is tracked

	// container kinds, per tracked depth
	ctArray = 1 // inside an array
	ctKey   = 2 // inside an object, a key comes next
	ctValue = 3 // inside an object, after a key's colon

	// keys that matter
	keyOther  = 0
	keyItems  = 1 // "items" at depth 1 (Elasticsearch)
	keyStatus = 2 // "status" at depth 4 (Elasticsearch)
	keyWrites = 3 // DynamoDB: listKey at depth 1
	keyErrors = 4 // "errors" at depth 1 (Elasticsearch)
	keyError  = 5 // "error" at depth 1, or at depth 4 (an item's error)
	keyType   = 6 // "type" at depth 5 (an item's error's type)

	noStatus  = -1 // item without an integer status yet
	badStatus = -2 // status is a number but not an integer (429.0, -1, 4e2)
)

type bulkScanner struct {
	status int // HTTP status, for an OK Result's Reason

	// DynamoDB BatchWriteItem instead of Elasticsearch _bulk: the writes
	// counted are the objects in the arrays of the object under the
	// top-level key listKey (depth 4): "UnprocessedItems" in an answer,
	// "RequestItems" in a request. The last such key counts, as for a JSON
	// decoder.
	dynamo  bool
	listKey string
	// partiql: a DynamoDB BatchExecuteStatement answer instead, read
	// with the Elasticsearch walk one level up: its "Responses" are the
	// items, each element the action object (depth 3), an element's
	// "Error" its error (depth 4), whose "Code" is read as a type.
	partiql   bool
	requested int  // writes the request carried; 0 when unknown
	inList    bool // inside the top-level listKey object (depth 2)
	listed    int  // writes counted there
	sawList   bool // the body had one

	depth int                   // open containers; 0 between top-level values
	ct    [maxTracked + 1]uint8 // container kind at depths 1..maxTracked

	inStr bool // inside a string
	esc   bool // the previous string byte was a backslash

	// The key being read, when it is at depth 1, 4 or 5, or the string
	// value of an item's error's "type" (valOn). keyLen -1 means it can no
	// longer be a string that matters (too long, or not ASCII).
	keyOn  bool
	valOn  bool
	keyLen int8
	key    [32]byte
	uLeft  int8   // hex digits still due in a \uXXXX escape inside a key
	uVal   uint16 // the escape's value so far
	key1   uint8  // last key read at depth 1
	key4   uint8  // last key read at depth 4
	key5   uint8  // last key read at depth 5, inside an item's error

	inItems  bool // inside the top-level "items" array (depth 2)
	inItem   bool // inside an item object (depth 3)
	inErr    bool // inside an item's error object (depth 5)
	sawItems bool // the body had a top-level "items" array
	failed1  bool // the body says something failed: "errors":true, or a top-level "error"

	itemRejectedType bool // the current item's error type is a rejected execution
	itemErr          bool // the current item has an error object
	itemAccount      bool // PartiQL: its error is the account's request limit
	bareRejected     int  // items without a status whose error is a rejected execution
	bareFailed       int  // other items without a status
	// errorsOnly: the request's filter_path lists only the failed items,
	// without their status (see filterListsErrorsOnly).
	errorsOnly bool

	numOn  bool // reading the number after a depth-4 "status" key
	numBad bool // it is not a plain non-negative integer
	num    int  // its value so far, capped at 1000

	itemStatus int // the current item's status, or noStatus / badStatus

	items, rejected, failed int
	unavailable             int // of rejected, those with status 503
	accountLimited          int // PartiQL: of rejected, those refused by the account's request limit

	// The counts are reported only for a body that is one complete JSON
	// object: opened is set at its '{', closed when depth returns to 0, and
	// junk when a byte outside strings cannot be JSON or a closer does not
	// match its opener. A garbage or cut body acknowledges no items.
	opened, closed, junk bool
}

func (s *bulkScanner) Write(p []byte) (int, error) {
	n := len(p)
	act := s.actionDepth()
	for i := 0; i < n; {
		if s.inStr {
			if s.esc {
				s.esc = false
				if s.keyOn {
					s.keyEscape(p[i])
				}
				i++
				continue
			}
			if s.uLeft > 0 {
				if c := p[i]; c != '"' && c != '\\' {
					s.keyHex(c)
					i++
					continue
				}
				// A quote or backslash cuts a \uXXXX escape short: not
				// JSON, but the string ends (or escapes) here all the same.
				s.uLeft = 0
				s.keyLen = -1
			}
			// Most bytes are inside strings (ids, index names, error
			// reasons) and only a quote or a backslash matters there.
			j := i
			for j < n && p[j] != '"' && p[j] != '\\' {
				j++
			}
			if s.keyOn {
				s.keyBytes(p[i:j])
			}
			if j == n {
				break
			}
			if p[j] == '\\' {
				s.esc = true
			} else {
				s.inStr = false
				if s.keyOn {
					s.keyOn = false
					s.endKey()
				}
			}
			i = j + 1
			continue
		}
		c := p[i]
		i++
		if s.numOn {
			if isNumberByte(c) {
				s.numberByte(c)
				continue
			}
			s.endNumber()
		}
		switch c {
		case ' ', '\t', '\n', '\r', ':', ',', '"', '{', '[', '}', ']':
		default:
			if !isNumberByte(c) && !isLiteralByte(c) || s.depth == 0 {
				s.junk = true
			}
		}
		switch c {
		case '"':
			s.inStr = true
			switch d := s.depth; {
			case (d == 1 || (d == act && s.inItem) || (d == act+1 && s.inErr)) && s.ct[d] == ctKey:
				s.keyOn = true
				s.keyLen = 0
			case d == act+1 && s.inErr && s.ct[d] == ctValue && s.key5 == keyType:
				s.keyOn, s.valOn = true, true
				s.keyLen = 0
			}
		case ':':
			if d := s.depth; d >= 1 && d <= maxTracked && s.ct[d] == ctKey {
				s.ct[d] = ctValue
			}
		case ',':
			if d := s.depth; d >= 1 && d <= maxTracked && s.ct[d] == ctValue {
				s.ct[d] = ctKey
			}
		case '{', '[':
			d := s.depth
			if d == 0 {
				if s.opened || c != '{' {
					s.junk = true // a second top-level value, or not an object
				}
				s.opened = true
			}
			switch {
			case d == 1 && c == '[' && s.ct[1] == ctValue && s.key1 == keyItems:
				s.inItems, s.sawItems = true, true
			case d == 2 && c == '{' && s.inItems:
				s.inItem = true
				s.itemStatus = noStatus
				s.itemRejectedType, s.itemErr, s.itemAccount = false, false, false
				s.key4 = keyOther
			case d == act && c == '{' && s.inItem && s.ct[d] == ctValue && s.key4 == keyError:
				s.inErr, s.itemErr = true, true
				s.key5 = keyOther
			case d == 1 && c == '{' && s.ct[1] == ctValue && s.key1 == keyWrites:
				s.inList, s.sawList = true, true
				s.listed = 0
			case d == 3 && c == '{' && s.inList && s.ct[2] == ctValue && s.ct[3] == ctArray:
				s.listed++
			}
			d++
			s.depth = d
			if d <= maxTracked {
				if c == '{' {
					s.ct[d] = ctKey
				} else {
					s.ct[d] = ctArray
				}
			}
		case '}', ']':
			d := s.depth
			if d == 0 {
				s.junk = true // stray closer: not JSON, keep going
				break
			}
			if d <= maxTracked && (c == ']') != (s.ct[d] == ctArray) {
				s.junk = true // '}' closing an array or ']' an object
			}
			if d == 1 {
				s.closed = true
			}
			switch {
			case d == act+1 && s.inErr:
				s.inErr = false
			case d == 3 && s.inItem:
				s.countItem()
				s.inItem = false
			case d == 2 && s.inItems:
				s.inItems = false
			case d == 2 && s.inList:
				s.inList = false
			}
			s.depth = d - 1
		default:
			if c == 't' && s.depth == 1 && s.ct[1] == ctValue && s.key1 == keyErrors {
				s.failed1 = true // "errors":true
			}
			if (c >= '0' && c <= '9' || c == '-') && s.depth == 4 && s.inItem &&
				s.ct[4] == ctValue && s.key4 == keyStatus {
				s.numOn = true
				s.numBad = c == '-'
				s.num = int(c - '0')
			}
		}
	}
	return n, nil
}

// keyHex takes one hex digit of a \uXXXX escape inside a key.
func (s *bulkScanner) keyHex(c byte) {
	s.uLeft--
	if h := hexValue(c); h < 0 {
		s.keyLen = -1
	} else {
		s.uVal = s.uVal<<4 | uint16(h)
	}
	if s.uLeft > 0 {
		return
	}
	if s.uVal < 0x80 {
		s.keyByte(byte(s.uVal))
	} else {
		s.keyLen = -1 // not ASCII: neither "items" nor "status"
	}
}

// keyEscape decodes the byte after a backslash inside a key.
func (s *bulkScanner) keyEscape(c byte) {
	switch c {
	case 'u':
		s.uLeft = 4
		s.uVal = 0
	case '"', '\\', '/':
		s.keyByte(c)
	case 'b', 'f', 'n', 'r', 't':
		s.keyLen = -1 // a control character: neither "items" nor "status"
	default:
		s.keyLen = -1
	}
}

func (s *bulkScanner) keyBytes(b []byte) {
	if s.keyLen < 0 {
		return
	}
	if int(s.keyLen)+len(b) > len(s.key) {
		s.keyLen = -1
		return
	}
	s.keyLen += int8(copy(s.key[s.keyLen:], b))
}

func (s *bulkScanner) keyByte(c byte) {
	if s.keyLen < 0 {
		return
	}
	if int(s.keyLen) == len(s.key) {
		s.keyLen = -1
		return
	}
	s.key[s.keyLen] = c
	s.keyLen++
}

func (s *bulkScanner) endKey() {
	k := uint8(keyOther)
	key := s.key[:max(s.keyLen, 0)] // compared as string(key): no allocation
	if s.valOn {
		s.valOn = false
		switch string(key) {
		case "es_rejected_execution_exception", "rejected_execution_exception":
			s.itemRejectedType = !s.partiql
		case "ThrottlingError", "ProvisionedThroughputExceeded":
			s.itemRejectedType = s.partiql
		case "RequestLimitExceeded":
			// The account's limit, not a table's.
			s.itemRejectedType, s.itemAccount = s.partiql, s.partiql
		}
		return
	}
	switch {
	case s.dynamo:
		if string(key) == s.listKey {
			k = keyWrites
		}
	case s.partiql:
		switch string(key) {
		case "Responses":
			k = keyItems
		case "Error":
			k = keyError
		case "Code":
			k = keyType
		}
	case string(key) == "items":
		k = keyItems
	case string(key) == "status":
		k = keyStatus
	case string(key) == "errors":
		k = keyErrors
	case string(key) == "error":
		k = keyError
	case string(key) == "type":
		k = keyType
	}
	switch s.depth {
	case 1:
		s.key1 = k
		if k == keyError {
			s.failed1 = true // a top-level error object
		}
	case s.actionDepth():
		s.key4 = k
	default:
		s.key5 = k
	}
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

func (s *bulkScanner) numberByte(c byte) {
	if c < '0' || c > '9' {
		s.numBad = true
		return
	}
	if s.num < 1000 {
		s.num = min(s.num*10+int(c-'0'), 1000)
	}
}

func (s *bulkScanner) endNumber() {
	s.numOn = false
	if s.numBad {
		s.itemStatus = badStatus
	} else {
		s.itemStatus = s.num
	}
}

// actionDepth is the depth of an item's action object, whose keys are
// read: an Elasticsearch item's {"index":{...}} (4), a PartiQL element (3);
// the action's error object is one deeper.
func (s *bulkScanner) actionDepth() int {
	if s.partiql {
		return 3
	}
	return 4
}

func (s *bulkScanner) countItem() {
	if s.partiql {
		switch {
		case !s.itemErr:
			s.items++
		case s.itemRejectedType:
			s.rejected++
			if s.itemAccount {
				s.accountLimited++
			}
		default:
			s.failed++ // a condition that failed, a duplicate, a bad statement
		}
		return
	}
	switch st := s.itemStatus; {
	case st == noStatus && s.itemRejectedType:
		s.bareRejected++
	case st == noStatus:
		s.bareFailed++
	case st >= 200 && st <= 299:
		s.items++
	case st == http.StatusTooManyRequests:
		s.rejected++
	case st == http.StatusServiceUnavailable:
		// A shard that could not take it in time (unavailable_shards_
		// exception: a primary not active, a node that did not act
		// within the bulk's timeout): refused without being done, and to
		// be sent again, as a 429; Logstash retries these two alone.
		s.rejected++
		s.unavailable++
	default:
		s.failed++
	}
}

func (s *bulkScanner) Result() Result {
	if !s.closed || s.junk || s.inStr {
		// Not one complete JSON object: a garbage or cut body says nothing
		// about its items, so none are counted or taken as throttled.
		return Result{Kind: OK, Reason: statusReason(s.status), Items: -1}
	}
	if s.dynamo {
		return s.dynamoResult()
	}
	if s.partiql {
		return s.partiqlResult()
	}
	r := Result{
		Kind:     OK,
		Reason:   statusReason(s.status),
		Items:    s.items,
		Rejected: s.rejected,
		Failed:   s.failed + s.bareRejected + s.bareFailed,
	}
	listed := s.bareRejected + s.bareFailed // items without a status
	if s.errorsOnly && s.items+s.rejected+s.failed == 0 {
		// Only the failed items are listed, without their status: what
		// was taken is what the request carried less what is listed,
		// which needs the request's count.
		switch {
		case s.requested > 0 && listed <= s.requested && (s.sawItems || !s.failed1):
			r.Items = s.requested - listed
			r.Rejected, r.Failed = s.bareRejected, s.bareFailed
		case !s.sawItems && !s.failed1:
			r.Items = -1 // `{}`: nothing failed, of a count not known
		case listed > 0:
			// See below: the count is not known.
			r.Items, r.Failed = -1, 0
		}
		if r.Rejected > 0 {
			r.Kind = Throttled
			r.Reason = "es_bulk_item_429"
			r.Share = float64(r.Rejected) / float64(s.requested)
		}
		return r
	}
	if !s.sawItems && !s.failed1 {
		// A filter_path that drops the items (took, errors): a 200 that
		// says none failed, or nothing, took the bulk, of a count not
		// known. Items 0 would be an empty bulk, which is no progress:
		// a load sent that way would stall while the store took it all.
		r.Items = -1
		return r
	}
	if s.items+s.rejected+s.failed == 0 && listed > 0 {
		// Failed items listed without their status, the others left out
		// (filter_path=items.index.error, items.*.error,items.*._id, or
		// items.*.error without the request's count: a compressed body):
		// the answer does not say how many the store took, so nothing is
		// counted. Items 0 would read as every item failed, and a load
		// whose bulks each carry one bad document would show no progress
		// while the store took nearly all of it. Their 429s, which this
		// leaves unseen, are not worth a cut as deep as a whole bulk's,
		// which they would get without their share.
		r.Items, r.Failed = -1, 0
		return r
	}
	// Not under an errors-only filter, or the answer kept the items'
	// statuses all the same: they are read as they are.
	if s.rejected > 0 {
		r.Kind = Throttled
		r.Reason = "es_bulk_item_429"
		if s.unavailable == s.rejected {
			r.Reason = "es_bulk_item_503"
		}
		r.Share = float64(s.rejected) / float64(s.items+s.rejected+r.Failed)
	}
	return r
}

// maxBatchWrites is the most writes a DynamoDB BatchWriteItem request may
// carry.
const maxBatchWrites = 25

func (s *bulkScanner) dynamoResult() Result {
	unprocessed := s.listed
	r := Result{Kind: OK, Reason: statusReason(s.status), Items: -1}
	if s.requested >= unprocessed && s.requested > 0 {
		r.Items = s.requested - unprocessed
	}
	if unprocessed == 0 {
		return r
	}
	r.Kind, r.Reason, r.Rejected = Throttled, "dynamodb_unprocessed_items", unprocessed
	r.Scoped = true // the tables' capacity (see scopedReasons)
	if r.Items >= 0 {
		r.Share = float64(unprocessed) / float64(s.requested)
	} else {
		// The request's count is unknown: the share is at least this.
		r.Share = min(1, float64(unprocessed)/maxBatchWrites)
	}
	return r
}

// partiqlResult is Result for a BatchExecuteStatement answer: one element
// of "Responses" per statement, with an "Error" when it failed, whose Code
// ThrottlingError or ProvisionedThroughputExceeded is its table's throttle
// (partial: the others went through), RequestLimitExceeded the account's.
func (s *bulkScanner) partiqlResult() Result {
	r := Result{Kind: OK, Reason: statusReason(s.status), Items: -1}
	if !s.sawItems {
		return r // not an answer that lists the statements
	}
	r.Items, r.Rejected, r.Failed = s.items, s.rejected, s.failed
	if s.rejected > 0 {
		r.Kind, r.Reason, r.Scoped = Throttled, "dynamodb_statement_throttled", true
		if s.accountLimited > 0 {
			r.Reason, r.Scoped = "dynamodb_request_limit_exceeded", false
		}
		r.Share = float64(s.rejected) / float64(s.items+s.rejected+s.failed)
	}
	return r
}

// isBatchExecuteStatement reports whether the request headers name
// DynamoDB's BatchExecuteStatement, PartiQL's batch of writes.
func isBatchExecuteStatement(h http.Header) bool {
	t := h.Get("X-Amz-Target")
	return strings.HasPrefix(t, "DynamoDB_") && strings.HasSuffix(t, ".BatchExecuteStatement")
}

// isBatchWriteItem reports whether the request headers name DynamoDB's
// BatchWriteItem ("X-Amz-Target: DynamoDB_20120810.BatchWriteItem").
func isBatchWriteItem(h http.Header) bool {
	t := h.Get("X-Amz-Target")
	return strings.HasPrefix(t, "DynamoDB_") && strings.HasSuffix(t, ".BatchWriteItem")
}

// ItemCounter counts the writes in a request body written to it, in
// constant memory, like a Scanner: Write never fails and keeps nothing. It
// belongs to one request and is not safe for concurrent use.
type ItemCounter interface {
	io.Writer
	// Items is the count once the body written so far is one complete JSON
	// object with the list, -1 before that, without the list, or for a
	// body that is not one JSON object.
	Items() int
}

// NewItemCounter returns an ItemCounter for a request whose answer
// [Profile.NewScanner] reads against its count of writes, or nil: the
// PutRequest and DeleteRequest objects under "RequestItems" of a DynamoDB
// BatchWriteItem (profile DynamoDB, its header naming the operation), and
// the actions of an Elasticsearch (or OpenSearch) _bulk whose answer lists
// the failed items only (see filterListsErrorsOnly), and the keys of an S3
// DeleteObjects, whose answer in Quiet mode lists the failed keys only:
// any other _bulk's answer counts its items itself, and its body is not
// walked.
func (p Profile) NewItemCounter(req Request) ItemCounter {
	switch {
	case p == DynamoDB && isBatchWriteItem(req.Header):
		return &bulkScanner{dynamo: true, listKey: "RequestItems"}
	case p == Elasticsearch && IsBulkPath(req.Path) && filterListsErrorsOnly(req.RawQuery):
		return &actionCounter{lineStart: true}
	case p == S3 && isS3DeleteObjects(req):
		return &s3DeleteCounter{}
	}
	return nil
}

// RequestItems counts the writes of a whole request body with
// NewItemCounter: -1 for any other request, and for a body that is not
// one JSON object (DynamoDB) or whole action lines (a _bulk).
func (p Profile) RequestItems(req Request, body []byte) int {
	c := p.NewItemCounter(req)
	if c == nil {
		return -1
	}
	_, _ = c.Write(body)
	return c.Items()
}

// Items implements ItemCounter.
func (s *bulkScanner) Items() int {
	if !s.closed || s.junk || s.inStr || !s.sawList {
		return -1
	}
	return s.listed
}

// isLiteralByte reports whether c can be part of true, false or null.
func isLiteralByte(c byte) bool {
	switch c {
	case 't', 'r', 'u', 'e', 'f', 'a', 'l', 's', 'n':
		return true
	}
	return false
}

func hexValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// actionCounter counts the actions of a _bulk request body as it streams:
// newline-delimited JSON, each action a line whose object's first key is
// index, create, update or delete, the first three followed by a line of
// source. It reads the first key of each action line and skips the rest,
// in constant memory.
type actionCounter struct {
	lineStart bool // at the start of a line
	source    bool // the line that starts next is an action's source
	inSource  bool // reading a source line, skipped
	inAction  bool // reading an action line
	keyOn     bool // reading the action line's first key
	keyDone   bool // the first key is read
	key       [8]byte
	keyLen    int
	seen      byte // in an action line before the key: 0, '{' once its brace came
	actions   int
	junk      bool // a line that is no action where one was due
}

// Write implements ItemCounter.
func (c *actionCounter) Write(p []byte) (int, error) {
	for i := 0; i < len(p) && !c.junk; i++ {
		b := p[i]
		if b == '\n' {
			c.endLine()
			continue
		}
		if !c.lineStart && (c.inSource || c.keyDone) {
			// The rest of a source, or of an action past its key, is
			// not read: on to the line's end.
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				break
			}
			i += j - 1
			continue
		}
		if c.lineStart {
			c.lineStart = false
			if c.source {
				c.inSource, c.source = true, false
			} else {
				c.inAction, c.seen, c.keyOn, c.keyDone, c.keyLen = true, 0, false, false, 0
			}
		}
		if !c.inAction || c.keyDone {
			continue
		}
		switch {
		case c.keyOn && b == '"':
			c.keyOn, c.keyDone = false, true
		case c.keyOn:
			if c.keyLen == len(c.key) {
				c.junk = true
				break
			}
			c.key[c.keyLen] = b
			c.keyLen++
		case b == ' ' || b == '\t' || b == '\r':
		case b == '{' && c.seen == 0:
			c.seen = '{'
		case b == '"' && c.seen == '{':
			c.keyOn = true
		default:
			c.junk = true
		}
	}
	return len(p), nil
}

// endLine ends the line being read. A blank line is skipped where an
// action is due.
func (c *actionCounter) endLine() {
	switch {
	case c.inSource:
		c.inSource = false
	case c.source:
		// An empty line where a source was due is that source, as
		// Elasticsearch reads it (and a "\r" alone, trimmed, already was).
		c.source = false
	case c.inAction && c.keyDone:
		switch string(c.key[:c.keyLen]) {
		case "index", "create", "update":
			c.source = true
		case "delete":
		default:
			c.junk = true
		}
		c.actions++
	case c.inAction && c.seen != 0:
		c.junk = true // an action line cut before its key
	}
	c.inAction = false
	c.lineStart = true
}

// Items implements ItemCounter: the actions counted, or -1 when the body
// was not whole action lines (the last line unterminated, a line that is
// no action, an action without its source).
func (c *actionCounter) Items() int {
	if c.junk || !c.lineStart || c.source || c.actions == 0 {
		return -1
	}
	return c.actions
}
