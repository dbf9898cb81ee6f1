package classify

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

const (
	xmlDecl      = `<?xml version="1.0" encoding="UTF-8"?>`
	s3CompleteOK = `<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Location>https://ingest.s3.amazonaws.com/batch/1.parquet</Location><Bucket>ingest</Bucket><Key>batch/1.parquet</Key><ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag></CompleteMultipartUploadResult>`
	s3InternalError = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>656c76696e6727732072657175657374</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>`
)

func TestNewScannerS3(t *testing.T) {
	complete := Request{Method: http.MethodPost, Path: "/ingest/batch/1.parquet", RawQuery: "uploadId=VXBsb2FkIElE"}
	copyObj := Request{Method: http.MethodPut, Path: "/ingest/b", Header: hdr("X-Amz-Copy-Source", "/ingest/a")}
	partCopy := Request{Method: http.MethodPut, Path: "/ingest/b", RawQuery: "partNumber=2&uploadId=VXBsb2FkIElE", Header: hdr("X-Amz-Copy-Source", "/ingest/a")}
	xml := hdr("Content-Type", "application/xml")
	f := func(p Profile, req Request, status int, h http.Header, want bool) {
		t.Helper()
		wantScanner(t, p, req, status, h, want)
	}
	f(S3, complete, 200, xml, true)
	f(S3, complete, 200, nil, true)
	f(S3, copyObj, 200, xml, true)
	f(S3, partCopy, 200, xml, true)

	// Every other write, too: its 200 may carry an <Error> document.
	f(S3, Request{Method: http.MethodPost, Path: "/ingest/k", RawQuery: "uploads"}, 200, xml, true) // CreateMultipartUpload
	f(S3, Request{Method: http.MethodPut, Path: "/ingest/k"}, 200, nil, true)                       // PutObject
	f(S3, Request{Method: http.MethodPut, Path: "/ingest/k", RawQuery: "partNumber=1&uploadId=x"}, 200, nil, true)
	f(S3, Request{Method: http.MethodPost, Path: "/ingest", RawQuery: "delete"}, 200, xml, true) // DeleteObjects
	f(S3, Request{Method: http.MethodDelete, Path: "/ingest/k"}, 200, nil, true)

	f(S3, complete, 204, xml, false)
	f(S3, complete, 503, xml, false)
	f(S3, complete, 200, hdr("Content-Encoding", "gzip"), false)
	// A GET's answer is the object itself.
	f(S3, Request{Method: http.MethodGet, Path: "/ingest/k", RawQuery: "uploadId=x"}, 200, xml, false)
	f(S3, Request{Method: http.MethodHead, Path: "/ingest/k"}, 200, xml, false)
	for p := Profile(0); p <= numProfiles; p++ {
		if p != S3 {
			f(p, complete, 200, xml, false)
			f(p, copyObj, 200, xml, false)
		}
	}
	// Only the operations answered before the work is done take an empty
	// answer for an error.
	for _, tc := range []struct {
		req      Request
		deferred bool
	}{
		{complete, true}, {copyObj, true}, {partCopy, true},
		{Request{Method: http.MethodPut, Path: "/ingest/k"}, false},
		{Request{Method: http.MethodPost, Path: "/ingest/k", RawQuery: "uploads"}, false},
		{Request{Method: http.MethodPost, Path: "/ingest/k", RawQuery: "%zz&uploadId=x"}, false},
	} {
		if s, ok := S3.NewScanner(tc.req, 200, nil).(*s3Scanner); !ok || s.deferred != tc.deferred {
			t.Errorf("S3.NewScanner(%s ?%s): %#v, want an S3 scanner, deferred %v", tc.req.Method, tc.req.RawQuery, s, tc.deferred)
		}
	}
}

func TestS3ErrorIn200(t *testing.T) {
	ok := Result{Kind: OK, Reason: "status_200", Items: -1}
	broken := Result{Kind: ServerError, Reason: "s3_error_in_200", Share: 1, Items: -1}
	slow := Result{Kind: Throttled, Reason: "s3_slowdown", Share: 1, Items: -1, Scoped: true}
	keepAlive := strings.Repeat(" ", 100_000) + "\n"
	for _, tc := range []struct {
		name, body string
		want       Result
	}{
		{"success", s3CompleteOK, ok},
		{"success after minutes of spaces", keepAlive + s3CompleteOK, ok},
		{"copy result without declaration", `<CopyObjectResult><ETag>"9b2cf535f27731c974343645a3985328"</ETag></CopyObjectResult>`, ok},
		{"internal error", keepAlive + s3InternalError, broken},
		{"error with attributes", `<Error xmlns="x"><Code>InternalError</Code></Error>`, broken},
		{"slow down", keepAlive + s3SlowDown, slow},
		{"minio slow down", minioSlowDownWrite, slow},
		{"nothing", "", broken},
		{"only spaces", keepAlive, broken},
		{"only the declaration", keepAlive + `<?xml version="1.0" encoding="UTF-8"?>` + "\n", broken},
		{"declaration cut", `<?xml version="1.0" enc`, ok},
		{"root cut", `<?xml version="1.0"?><Err`, ok},
		{"an element named like it", `<ErrorDocument><Code>SlowDown</Code></ErrorDocument>`, ok},
		{"error without a code", `<Error><Message>x</Message></Error>`, broken},
		// S3 and MinIO send the declaration first, then the keep-alive
		// spaces, then the root.
		{"success, spaces after the declaration", xmlDecl + keepAlive + s3CompleteOK[len(xmlDecl):], ok},
		{"error, spaces after the declaration", xmlDecl + keepAlive + s3InternalError[len(xmlDecl):], broken},
		{"slow down, spaces after the declaration", xmlDecl + keepAlive + s3SlowDown[len(xmlDecl):], slow},
		{"root tag on two lines", "<Error\n><Code>InternalError</Code></Error>", broken},
		{"empty error element", xmlDecl + "<Error/>", broken},
		{"cut after the root's name", xmlDecl + "  <Error", ok},
		{"cut at a bracket", "   <", ok},
		{"not XML", "  internal error", ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			for _, chunk := range []int{len(body) + 1, 1, 7, 4096} {
				s := &s3Scanner{status: 200, deferred: true}
				for rest := body; len(rest) > 0; {
					n := min(chunk, len(rest))
					if k, err := s.Write(rest[:n]); k != n || err != nil {
						t.Fatalf("Write = %d, %v", k, err)
					}
					rest = rest[n:]
				}
				if got := s.Result(); got != tc.want {
					t.Errorf("chunks of %d: %+v, want %+v", chunk, got, tc.want)
				}
				if len(s.kept) > s3KeepMax {
					t.Errorf("kept %d bytes, at most %d", len(s.kept), s3KeepMax)
				}
				checkResultInvariants(t, s.Result())
			}
		})
	}
	// A long success document is kept only up to the bound.
	s := &s3Scanner{status: 200, deferred: true}
	s.Write([]byte("<CompleteMultipartUploadResult>" + strings.Repeat("x", 1<<20)))
	if len(s.kept) != s3KeepMax || s.Result() != ok {
		t.Errorf("kept %d bytes, result %+v", len(s.kept), s.Result())
	}
}

func TestS3ErrorIn200OtherWrites(t *testing.T) {
	// PutObject, UploadPart and the like answer 200 with no document: that
	// is their success. An <Error> document is still an error.
	ok := Result{Kind: OK, Reason: "status_200", Items: -1}
	broken := Result{Kind: ServerError, Reason: "s3_error_in_200", Share: 1, Items: -1}
	slow := Result{Kind: Throttled, Reason: "s3_slowdown", Share: 1, Items: -1, Scoped: true}
	for _, tc := range []struct {
		name, body string
		want       Result
	}{
		{"nothing", "", ok},
		{"only spaces", "  \n", ok},
		{"only the declaration", xmlDecl + "\n", ok},
		{"a result", `<InitiateMultipartUploadResult><UploadId>x</UploadId></InitiateMultipartUploadResult>`, ok},
		{"internal error", s3InternalError, broken},
		{"slow down", s3SlowDown, slow},
	} {
		for _, chunk := range []int{len(tc.body) + 1, 1} {
			s := &s3Scanner{status: 200}
			for rest := []byte(tc.body); len(rest) > 0; rest = rest[min(chunk, len(rest)):] {
				s.Write(rest[:min(chunk, len(rest))])
			}
			if got := s.Result(); got != tc.want {
				t.Errorf("%s, chunks of %d: %+v, want %+v", tc.name, chunk, got, tc.want)
			}
		}
	}
}

// TestS3DeleteObjects: a DeleteObjects answer is a 200 that lists, key by
// key, what was deleted and what was not, SlowDown among the latter: the
// keys S3 throttled are a throttle of their share, the keys deleted are
// taken, whatever the chunks the answer streams in.
func TestS3DeleteObjects(t *testing.T) {
	entries := func(deleted, slow, denied int) string {
		var b strings.Builder
		b.WriteString(xmlDecl + `<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`)
		for i := range deleted {
			fmt.Fprintf(&b, "<Deleted><Key>logs/%d.json</Key></Deleted>", i)
		}
		for i := range slow {
			fmt.Fprintf(&b, "<Error><Key>logs/s%d.json</Key><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>", i)
		}
		for i := range denied {
			fmt.Fprintf(&b, "<Error><Key>logs/d%d.json</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>", i)
		}
		b.WriteString("</DeleteResult>")
		return b.String()
	}
	for _, tc := range []struct {
		name, body string
		want       Result
	}{
		{"all deleted", entries(1000, 0, 0), Result{Kind: OK, Reason: "status_200", Items: 1000}},
		{"some throttled", entries(700, 200, 100), Result{Kind: Throttled, Reason: "s3_slowdown", Share: 0.2, Items: 700, Rejected: 200, Failed: 100, Scoped: true}},
		{"all throttled", entries(0, 3, 0), Result{Kind: Throttled, Reason: "s3_slowdown", Share: 1, Items: 0, Rejected: 3, Scoped: true}},
		{"some denied", entries(2, 0, 1), Result{Kind: OK, Reason: "status_200", Items: 2, Failed: 1}},
		// Quiet mode lists only the keys that were not deleted.
		{"quiet, all deleted", xmlDecl + `<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></DeleteResult>`, Result{Kind: OK, Reason: "status_200", Items: -1}},
		{"quiet, empty element", "<DeleteResult/>", Result{Kind: OK, Reason: "status_200", Items: -1}},
		{"codes without errors", `<DeleteResult><Deleted><Key>a</Key></Deleted><Code>SlowDown</Code></DeleteResult>`, Result{Kind: OK, Reason: "status_200", Items: 1}},
		// Of a request whose keys were not counted (a body streamed in
		// parts sluice did not see whole), nothing is proven taken.
		{"quiet, some throttled, keys not counted", entries(0, 5, 0), Result{Kind: Throttled, Reason: "s3_slowdown", Share: 1, Items: 0, Rejected: 5, Scoped: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			for _, chunk := range []int{len(body) + 1, 1, 5, 13, 14, 4096} {
				s := S3.NewScanner(Request{Method: http.MethodPost, Path: "/logs", RawQuery: "delete"}, 200, hdr("Content-Type", "application/xml")).(*s3Scanner)
				for rest := body; len(rest) > 0; {
					n := min(chunk, len(rest))
					_, _ = s.Write(rest[:n])
					rest = rest[n:]
				}
				if got := s.Result(); got != tc.want {
					t.Errorf("chunks of %d: %+v, want %+v", chunk, got, tc.want)
				}
				checkResultInvariants(t, s.Result())
			}
		})
	}
}

// TestS3DeleteObjectsQuiet: in Quiet mode S3 lists only the keys it did not
// delete; the others are the request's keys less those, counted from the
// request as it went out, so that 5 keys throttled of 1,000 are a throttle
// of 0.5%, with 995 taken, not of the whole request.
func TestS3DeleteObjectsQuiet(t *testing.T) {
	var body strings.Builder
	body.WriteString(xmlDecl + `<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>`)
	for i := range 1000 {
		fmt.Fprintf(&body, "<Object><Key>logs/%d.json</Key></Object>", i)
	}
	body.WriteString("</Delete>")
	req := Request{Method: http.MethodPost, Path: "/logs", RawQuery: "delete"}
	// Counted in any parts, a tag cut between two too.
	c := S3.NewItemCounter(req)
	for rest := []byte(body.String()); len(rest) > 0; {
		n := min(7, len(rest))
		_, _ = c.Write(rest[:n])
		rest = rest[n:]
	}
	if got := c.Items(); got != 1000 {
		t.Fatalf("keys counted in parts: %d, want 1000", got)
	}
	req.Items = S3.RequestItems(req, []byte(body.String()))
	if req.Items != 1000 {
		t.Fatalf("keys counted: %d, want 1000", req.Items)
	}
	if got := S3.RequestItems(req, []byte(body.String()[:body.Len()-3])); got != -1 {
		t.Errorf("keys of a request cut short: %d, want -1 (not known)", got)
	}
	if got := S3.RequestItems(Request{Method: http.MethodPut, Path: "/logs/a"}, []byte(body.String())); got != -1 {
		t.Errorf("keys of a PutObject: %d, want -1", got)
	}
	answer := xmlDecl + `<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`
	for i := range 5 {
		answer += fmt.Sprintf("<Error><Key>logs/%d.json</Key><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>", i)
	}
	answer += "</DeleteResult>"
	s := S3.NewScanner(req, 200, hdr("Content-Type", "application/xml"))
	_, _ = s.Write([]byte(answer))
	want := Result{Kind: Throttled, Reason: "s3_slowdown", Share: 0.005, Items: 995, Rejected: 5, Scoped: true}
	if got := s.Result(); got != want {
		t.Errorf("quiet answer of 5 keys throttled of 1000: %+v, want %+v", got, want)
	}
	checkResultInvariants(t, s.Result())
	quiet := S3.NewScanner(req, 200, nil)
	_, _ = quiet.Write([]byte(`<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></DeleteResult>`))
	if got := quiet.Result(); got.Kind != OK || got.Items != 1000 {
		t.Errorf("quiet answer with no key listed: %+v, want all 1000 taken", got)
	}
}

// BenchmarkS3Scanner: what reading an S3 write's 200 costs, per byte, for
// a document that is not a DeleteResult (searched only until its root is
// read) and for a DeleteResult (its entries counted to the end).
func BenchmarkS3Scanner(b *testing.B) {
	var del strings.Builder
	del.WriteString(`<DeleteResult>`)
	for i := 0; del.Len() < 512<<10; i++ {
		fmt.Fprintf(&del, "<Deleted><Key>logs/%d.json</Key></Deleted>", i)
	}
	del.WriteString(`</DeleteResult>`)
	for _, bc := range []struct {
		name string
		req  Request
		body []byte
	}{
		{"other", Request{Method: http.MethodPost, Path: "/b/k", RawQuery: "uploadId=1"}, []byte(`<CompleteMultipartUploadResult>` + strings.Repeat("<a>x</a>", 1<<16))},
		{"delete", Request{Method: http.MethodPost, Path: "/b", RawQuery: "delete"}, []byte(del.String())},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for range b.N {
				s := S3.NewScanner(bc.req, 200, nil)
				for i := 0; i < len(bc.body); i += 32 << 10 {
					_, _ = s.Write(bc.body[i:min(i+32<<10, len(bc.body))])
				}
				_ = s.Result()
			}
		})
	}
}
