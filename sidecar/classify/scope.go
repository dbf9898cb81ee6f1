package classify

import (
	"bytes"
	"net"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Scopes. Stores throttle per part of themselves: DynamoDB per table, S3
// per bucket prefix, GCS per bucket and object, ClickHouse's
// TOO_MANY_PARTS per table, an Elasticsearch flood-stage block per index.
// A write's scopes are the parts it touches, as its profile reads them
// from the request ([Profile.Scopes]); a throttle is scoped
// ([Result.Scoped]) when it concerns those parts only, and store-wide
// otherwise (overload, a concurrency cap, a node's full queue, timeouts,
// refused connections). The proxy keeps a limiter per throttled scope on
// top of the store's, so that one table's throttling slows the writes to
// that table, not every write.

// MaxWriteScopes is the most scopes one write may take from. A write that
// names more (a DynamoDB BatchWriteItem over many tables) has no scope at
// all: it passes the store-wide limiter only, and a scoped throttle of it
// counts store-wide.
const MaxWriteScopes = 8

// MaxScopeLen bounds a scope's name, in bytes: it becomes a metric label
// and a key kept in memory. A longer name is cut at the last whole UTF-8
// character within the bound (two scopes that differ only past it share a
// limiter).
const MaxScopeLen = 200

// scopeBodyPrefix is the most of a body read for a ClickHouse INSERT
// statement: the statement comes first, its data after it.
const scopeBodyPrefix = 4 << 10

// ScopeRules are the operator's choices of how writes map to scopes
// (SLUICE_SCOPE_*). The zero value groups S3 and GCS writes by bucket and
// gives generic writes no scope.
type ScopeRules struct {
	// KeyDepth is how many directory segments of an S3 or GCS object key,
	// after the bucket, name the scope: with 1, "bucket/logs/2024/a.json"
	// is in scope "bucket/logs/"; with 0, in "bucket/". The object's own
	// name never counts.
	KeyDepth int
	// PathDepth is how many leading segments of a generic write's path
	// name its scope: with 1, "/a/write" is in scope "a". A path with fewer
	// segments is its own scope. 0 with ByJob false: generic writes have
	// no scope.
	PathDepth int
	// ByJob makes a generic write's job (X-Sluice-Job) its scope, in place
	// of its path.
	ByJob bool
	// Bucket is the bucket of an S3 or GCS XML API upstream addressed
	// virtual-hosted style ("BUCKET.s3.REGION.amazonaws.com"; see
	// [BucketOfHost]): the bucket is in the host, not the path, so the
	// whole path is the object's key. Empty: paths are path-style,
	// "/bucket/key".
	Bucket string
}

// WriteScopes is the set of scopes one write takes from: sorted,
// without duplicates, at most MaxWriteScopes. The zero value is empty. It
// is a value (no allocation of its own) so that the proxy can keep it in
// the write's exchange.
type WriteScopes struct {
	n     int
	names [MaxWriteScopes]string
	over  bool // more than MaxWriteScopes were named: the set is empty
}

// Len is the number of scopes.
func (s *WriteScopes) Len() int { return s.n }

// At returns the i-th scope in sorted order.
func (s *WriteScopes) At(i int) string { return s.names[i] }

// add puts name in the set, in order, unless it is empty, not valid
// UTF-8, already there, or one too many (then the set empties for good).
func (s *WriteScopes) add(name string) {
	if s.over || !utf8.ValidString(name) {
		return
	}
	if name = cutScope(name); name == "" {
		return
	}
	i := 0
	for i < s.n && s.names[i] < name {
		i++
	}
	if i < s.n && s.names[i] == name {
		return
	}
	if s.n == MaxWriteScopes {
		*s = WriteScopes{over: true}
		return
	}
	copy(s.names[i+1:s.n+1], s.names[i:s.n])
	s.names[i] = name
	s.n++
}

// cutScope cuts name to MaxScopeLen bytes at a character boundary.
func cutScope(name string) string {
	if len(name) <= MaxScopeLen {
		return name
	}
	i := MaxScopeLen
	for i > 0 && !utf8.RuneStart(name[i]) {
		i--
	}
	return name[:i]
}

// Scopes puts in dst (emptied first) the scopes of one write under profile
// p: req is the request (its method, its URL's path and query, its
// headers), job its job, and body its body when sluice holds it in memory,
// nil when it streams. What each profile reads:
//   - S3: path-style "/bucket/key": the bucket and the first
//     rules.KeyDepth directories of the key ("bucket/logs/"). With
//     rules.Bucket (a virtual-hosted upstream) the path is the key, and the
//     scope the same: "/logs/a.json" is in "bucket/logs/", "/a.json" in
//     "bucket/".
//   - GCS: the JSON API's "/storage/v1/b/BUCKET/o/OBJECT" and
//     "/upload/storage/v1/b/BUCKET/o?name=OBJECT", or the XML API's path as
//     for S3; the scope is the bucket and key directories as for S3.
//   - DynamoDB: every table the body names: a "TableName" at any depth
//     (PutItem, UpdateItem, TransactWriteItems…) and the keys of
//     "RequestItems" (BatchWriteItem). Needs the body: a streamed body has
//     no scope.
//   - ClickHouse: the table of the INSERT statement, from the "query"
//     parameter, else from the first 4 KiB of the body ("INSERT INTO db.t
//     FORMAT …" and the data after it); an unqualified table takes the
//     "database" parameter or X-ClickHouse-Database header. A streamed
//     body is not read: without the parameter, no scope.
//   - Elasticsearch: the index of the path ("/logs-2024/_bulk",
//     "/logs/_doc/1"); a "/_bulk" without one has no scope.
//   - Generic: the first rules.PathDepth segments of the path, or the job
//     with rules.ByJob.
//   - VictoriaMetrics: none: its limits are the whole store's.
//
// Scopes never changes req or body and never allocates for path-style S3,
// Elasticsearch and generic paths (scopes are substrings of the path); it
// copies DynamoDB table names and ClickHouse tables, which come from the
// body or an escaped query, and joins rules.Bucket to a key's directories.
func (p Profile) Scopes(rules ScopeRules, req Request, job string, body []byte, dst *WriteScopes) {
	*dst = WriteScopes{}
	switch p {
	case S3:
		if rules.Bucket != "" {
			keyScope(rules.Bucket, req.Path, rules.KeyDepth, dst)
		} else {
			objectScope(req.Path, rules.KeyDepth, dst)
		}
	case GCS:
		gcsScope(rules, req, dst)
	case DynamoDB:
		if body != nil {
			dynamoTables(body, func(name []byte) {
				if validDynamoName(name) {
					dst.add(string(name))
				}
			})
		}
	case ClickHouse:
		clickhouseScope(req, body, dst)
	case Elasticsearch:
		if seg, _ := firstSegment(req.Path); seg != "" && seg[0] != '_' {
			dst.add(seg)
		}
	case Generic:
		switch {
		case rules.ByJob:
			dst.add(job)
		case rules.PathDepth > 0:
			dst.add(leadingSegments(req.Path, rules.PathDepth))
		}
	}
}

// scopedReasons are the reasons of throttles that concern the write's
// scopes only, per profile; every other throttle is store-wide.
var scopedReasons = [numProfiles][]string{
	// A 429 from a generic store or its gateway: a quota of the path (or
	// of the job) the write went to.
	Generic: {"status_429"},
	// A plain 429 is an index's block (the flood-stage disk watermark
	// makes an index read-only with TOO_MANY_REQUESTS/12). A rejected
	// execution, a tripped circuit breaker and bulk items refused with
	// 429 are a node's queue or memory: store-wide.
	Elasticsearch: {"status_429"},
	// SlowDown: S3 throttles per prefix, 3,500 writes/s each, and splits a
	// busy prefix's partition.
	S3: {"s3_slowdown"},
	// rateLimitExceeded is a bucket's or object's mutation rate; the
	// user's rate limit (userRateLimitExceeded) is the project's.
	GCS: {"gcs_rate_limit_exceeded", "status_429"},
	// Provisioned or on-demand throughput is a table's (or its
	// partition's); RequestLimitExceeded is the account's.
	DynamoDB: {"dynamodb_provisioned_throughput_exceeded", "dynamodb_throttling",
		"dynamodb_transaction_throttled", "dynamodb_unprocessed_items", "dynamodb_statement_throttled"},
	// TOO_MANY_PARTS is a table's merges falling behind; a cap on
	// concurrent queries is the server's.
	ClickHouse: {"clickhouse_too_many_parts"},
}

// ScopedThrottle reports whether a Throttled result with this reason
// under profile p concerns the write's scopes only (see Result.Scoped).
func (p Profile) ScopedThrottle(reason string) bool {
	if p >= numProfiles {
		return false
	}
	for _, r := range scopedReasons[p] {
		if r == reason {
			return true
		}
	}
	return false
}

// firstSegment returns the first segment of path ("a" of "/a/b") and the
// rest after its slash.
func firstSegment(path string) (seg, rest string) {
	path = strings.TrimPrefix(path, "/")
	if i := strings.IndexByte(path, '/'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return path, ""
}

// leadingSegments returns the first n segments of path, without its
// leading slash, or all of it when it has fewer.
func leadingSegments(path string, n int) string {
	path = strings.TrimPrefix(path, "/")
	end := 0
	for range n {
		i := strings.IndexByte(path[end:], '/')
		if i < 0 {
			return strings.TrimSuffix(path, "/")
		}
		end += i + 1
	}
	return path[:end-1]
}

// objectScope adds the scope of a path-style object path "/bucket/key":
// "bucket/" and up to depth directories of the key, each with its slash.
func objectScope(path string, depth int, dst *WriteScopes) {
	path = strings.TrimPrefix(path, "/")
	i := strings.IndexByte(path, '/')
	if i == 0 {
		return // no bucket
	}
	if i < 0 {
		if path != "" {
			dst.add(path + "/") // the bucket itself (a listing, a bucket operation)
		}
		return
	}
	end := i + 1
	for range depth {
		j := strings.IndexByte(path[end:], '/')
		if j < 0 {
			break // the rest is the object's name
		}
		end += j + 1
	}
	dst.add(path[:end])
}

// keyScope adds the scope of a virtual-hosted object path "/key" in
// bucket: "bucket/" and up to depth directories of the key, each with its
// slash.
func keyScope(bucket, path string, depth int, dst *WriteScopes) {
	key := strings.TrimPrefix(path, "/")
	end := 0
	for range depth {
		j := strings.IndexByte(key[end:], '/')
		if j < 0 {
			break // the rest is the object's name
		}
		end += j + 1
	}
	dst.add(bucket + "/" + key[:end])
}

// BucketOfHost returns the bucket a virtual-hosted S3 or GCS XML API host
// names: "logs" of "logs.s3.eu-west-1.amazonaws.com",
// "logs.s3-accelerate.amazonaws.com", "logs.vpce-0a1b.s3.eu-west-1.vpce.amazonaws.com"
// or "logs.storage.googleapis.com" (for either profile); "" for a path-style host
// ("s3.eu-west-1.amazonaws.com", "storage.googleapis.com") and for any
// other host, whose style its name does not tell (MinIO, Ceph). host may
// carry a port.
func BucketOfHost(p Profile, host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	switch p {
	case S3:
		if bucket, ok := strings.CutSuffix(host, ".storage.googleapis.com"); ok {
			return bucket // GCS's XML API, which S3 clients speak
		}
		if !strings.HasSuffix(host, ".amazonaws.com") && !strings.HasSuffix(host, ".amazonaws.com.cn") {
			return ""
		}
		// A bucket's name may hold dots, and even ".s3.": the service's
		// label is the last one.
		i := max(strings.LastIndex(host, ".s3."), strings.LastIndex(host, ".s3-"))
		if i <= 0 {
			return "" // "s3.REGION.amazonaws.com": path-style
		}
		bucket := host[:i]
		// An interface endpoint: "vpce-ID.s3…" is path-style,
		// "BUCKET.vpce-ID.s3…" virtual-hosted.
		if strings.HasPrefix(bucket, "vpce-") {
			return ""
		}
		if j := strings.LastIndex(bucket, ".vpce-"); j > 0 {
			bucket = bucket[:j]
		}
		return bucket
	case GCS:
		bucket, ok := strings.CutSuffix(host, ".storage.googleapis.com")
		if !ok {
			return ""
		}
		return bucket
	}
	return ""
}

// gcsScope adds the scope of a GCS request (see Profile.Scopes).
func gcsScope(rules ScopeRules, req Request, dst *WriteScopes) {
	depth := rules.KeyDepth
	rest, ok := strings.CutPrefix(req.Path, "/upload/storage/v1/b/")
	if !ok {
		rest, ok = strings.CutPrefix(req.Path, "/storage/v1/b/")
	}
	if !ok { // the XML API
		if rules.Bucket != "" {
			keyScope(rules.Bucket, req.Path, depth, dst)
		} else {
			objectScope(req.Path, depth, dst)
		}
		return
	}
	bucket, rest := firstSegment(rest)
	if bucket == "" {
		return
	}
	name, ok := strings.CutPrefix(rest, "o/")
	if !ok {
		name = queryParam(req.RawQuery, "name")
	}
	objectScope("/"+bucket+"/"+name, depth, dst)
}

// queryParam returns the first value of key in a raw query, unescaped, ""
// when absent or badly escaped.
func queryParam(rawQuery, key string) string {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != key {
			continue
		}
		v, err := url.QueryUnescape(v)
		if err != nil {
			return ""
		}
		return v
	}
	return ""
}

// dynamoTables calls add with every table name a DynamoDB request body
// names: the string value of a "TableName" key at any depth, and each key
// of a "RequestItems" object. It is lexical like eachJSONString: it
// honours strings and escapes, and stops quietly at malformed or cut
// input.
func dynamoTables(b []byte, add func(name []byte)) {
	depth, reqDepth := 0, -1
	pendingReq := false // "RequestItems": was the last key; its object comes next
	for i := 0; i < len(b); {
		switch c := b[i]; c {
		case '{':
			depth++
			if pendingReq {
				reqDepth, pendingReq = depth, false
			}
			i++
		case '[':
			depth++
			pendingReq = false
			i++
		case '}', ']':
			if depth == reqDepth {
				reqDepth = -1
			}
			depth--
			i++
		case '"':
			pendingReq = false
			end, ok := jsonStringEnd(b, i+1)
			if !ok {
				return
			}
			s := b[i+1 : end]
			j := skipJSONSpace(b, end+1)
			i = end + 1
			if j >= len(b) || b[j] != ':' {
				continue // a value
			}
			i = j + 1
			switch {
			case depth == reqDepth:
				add(s)
			case string(s) == "RequestItems":
				pendingReq = true
			case string(s) == "TableName":
				k := skipJSONSpace(b, j+1)
				if k < len(b) && b[k] == '"' {
					e, ok := jsonStringEnd(b, k+1)
					if !ok {
						return
					}
					add(b[k+1 : e])
					i = e + 1
				}
			}
		case ' ', '\t', '\r', '\n', ':', ',':
			i++
		default:
			pendingReq = false
			i++
		}
	}
}

// validDynamoName reports whether name is a DynamoDB table name (3 to 255
// of a-z, A-Z, 0-9, '_', '-', '.'); anything else (an escape, say) is
// left to the store-wide limiter.
func validDynamoName(name []byte) bool {
	if len(name) < 3 || len(name) > 255 {
		return false
	}
	for _, c := range name {
		if !isIdentByte(c) && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// clickhouseScope adds the table of a ClickHouse INSERT (see
// Profile.Scopes).
func clickhouseScope(req Request, body []byte, dst *WriteScopes) {
	var db, table string
	if q := queryParam(req.RawQuery, "query"); q != "" {
		db, table = insertTable([]byte(q))
	} else if body != nil {
		db, table = insertTable(body[:min(len(body), scopeBodyPrefix)])
	}
	if table == "" {
		return
	}
	if db == "" {
		db = queryParam(req.RawQuery, "database")
		if db == "" && req.Header != nil {
			db = req.Header.Get("X-Clickhouse-Database")
		}
		if !validIdent(db) {
			db = ""
		}
	}
	if db != "" {
		table = db + "." + table
	}
	dst.add(table)
}

// insertTable parses the start of a ClickHouse statement "INSERT INTO
// [TABLE] [db.]table …" (keywords in any case, identifiers bare or quoted
// with ` or "). It returns "" for anything else: another statement, a
// table function (INSERT INTO FUNCTION), a name it cannot read.
func insertTable(s []byte) (db, table string) {
	s = skipSQLSpace(s)
	var ok bool
	if s, ok = cutKeyword(s, "INSERT"); !ok {
		return "", ""
	}
	if s, ok = cutKeyword(s, "INTO"); !ok {
		return "", ""
	}
	if rest, ok := cutKeyword(s, "TABLE"); ok {
		s = rest
	}
	if _, ok := cutKeyword(s, "FUNCTION"); ok {
		return "", ""
	}
	first, s := sqlIdent(s)
	if first == "" {
		return "", ""
	}
	if len(s) > 0 && s[0] == '.' {
		second, _ := sqlIdent(s[1:])
		if second == "" {
			return "", ""
		}
		return first, second
	}
	return "", first
}

// skipSQLSpace skips white space and comments ("-- …" to the end of the
// line, "/* … */").
func skipSQLSpace(s []byte) []byte {
	for len(s) > 0 {
		switch {
		case s[0] == ' ' || s[0] == '\t' || s[0] == '\r' || s[0] == '\n':
			s = s[1:]
		case bytes.HasPrefix(s, []byte("--")):
			i := bytes.IndexByte(s, '\n')
			if i < 0 {
				return nil
			}
			s = s[i+1:]
		case bytes.HasPrefix(s, []byte("/*")):
			i := bytes.Index(s[2:], []byte("*/"))
			if i < 0 {
				return nil
			}
			s = s[2+i+2:]
		default:
			return s
		}
	}
	return s
}

// cutKeyword cuts keyword kw (any case) and the space after it from the
// start of s.
func cutKeyword(s []byte, kw string) ([]byte, bool) {
	if len(s) <= len(kw) || !bytes.EqualFold(s[:len(kw)], []byte(kw)) {
		return s, false
	}
	if c := s[len(kw)]; c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '/' && c != '-' {
		return s, false
	}
	return skipSQLSpace(s[len(kw):]), true
}

// sqlIdent reads one identifier from the start of s: bare
// ([A-Za-z0-9_]+), or quoted with ` or " (no escapes inside: a name that
// needs them is not read). It returns "" when there is none.
func sqlIdent(s []byte) (string, []byte) {
	if len(s) == 0 {
		return "", s
	}
	if q := s[0]; q == '`' || q == '"' {
		i := bytes.IndexByte(s[1:], q)
		if i <= 0 {
			return "", s
		}
		name := s[1 : 1+i]
		if bytes.IndexByte(name, '\\') >= 0 || !utf8.Valid(name) {
			return "", s
		}
		return string(name), s[2+i:]
	}
	i := 0
	for i < len(s) && isIdentByte(s[i]) {
		i++
	}
	return string(s[:i]), s[i:]
}

// validIdent reports whether s is a bare SQL identifier.
func validIdent(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isIdentByte(s[i]) {
			return false
		}
	}
	return true
}
