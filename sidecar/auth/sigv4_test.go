package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

const (
	exampleKeyID  = "AKIAIOSFODNN7EXAMPLE"
	exampleSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

// sigv4Auth returns an aws-sigv4 Authenticator for service with static
// credentials, a clock fixed at now (zero: the wall clock), and a fetched
// credential.
func sigv4Auth(t *testing.T, service string, creds aws.Credentials, now time.Time, mod func(*Options)) *harness {
	t.Helper()
	c := testConfig(SourceAWSSigV4)
	c.AWSService = service
	h := newHarness(t, c, nil, func(o *Options) {
		o.AWSCredentials = credentials.StaticCredentialsProvider{Value: creds}
		if !now.IsZero() {
			o.Now = func() time.Time { return now }
		}
		if mod != nil {
			mod(o)
		}
	})
	h.a.fetch(context.Background())
	if !h.a.Ready() {
		t.Fatalf("not ready: %+v", h.a.Status())
	}
	return h
}

// The example from the Amazon S3 documentation ("Signature Calculations
// for the Authorization Header", GET Object): an independent, published
// signature for a fixed credential and time.
func TestSigV4S3DocumentedExample(t *testing.T) {
	now := time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)
	h := sigv4Auth(t, "s3", aws.Credentials{AccessKeyID: exampleKeyID, SecretAccessKey: exampleSecret}, now, nil)
	req := newRequest(t, "GET", "https://examplebucket.s3.amazonaws.com/test.txt", "")
	req.Header.Set("Range", "bytes=0-9")
	if err := h.a.Apply(req); err != nil {
		t.Fatal(err)
	}
	want := "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
		"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, " +
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
	if got := req.Header.Get("Authorization"); got != want {
		t.Errorf("Authorization =\n%s\nwant\n%s", got, want)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Requests signed by Apply carry exactly the headers the SDK's signer
// produces for the same request, credential, payload hash and time.
func TestSigV4MatchesSDK(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 34, 56, 0, time.UTC)
	static := aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "s3cr3t-static-key"}
	session := aws.Credentials{AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "s3cr3t-session-key", SessionToken: "s3ss10n-token-value"}
	bulk := "{\"index\":{}}\n{\"a\":1}\n"
	for _, tc := range []struct {
		name, service, method, url, body string
		headers                          map[string]string
		creds                            aws.Credentials
		wantHash                         string
	}{
		{"es bulk", "es", "POST", "https://search-x.us-east-1.es.amazonaws.com/_bulk", bulk,
			map[string]string{"Content-Type": "application/x-ndjson"}, static, sha256Hex(bulk)},
		{"aoss with session token", "aoss", "POST", "https://abc.us-east-1.aoss.amazonaws.com/idx/_doc?refresh=false", `{"a":1}`,
			map[string]string{"Content-Type": "application/json"}, session, sha256Hex(`{"a":1}`)},
		{"dynamodb", "dynamodb", "POST", "https://dynamodb.us-east-1.amazonaws.com/", `{"RequestItems":{}}`,
			map[string]string{"X-Amz-Target": "DynamoDB_20120810.BatchWriteItem", "Content-Type": "application/x-amz-json-1.0"}, static, sha256Hex(`{"RequestItems":{}}`)},
		{"s3 put unsigned", "s3", "PUT", "https://bucket.s3.us-east-1.amazonaws.com/dir/a%20key.json?partNumber=1&uploadId=x%2By", "object body",
			nil, session, unsignedPayload},
		{"s3 get", "s3", "GET", "https://bucket.s3.us-east-1.amazonaws.com/k?list-type=2&prefix=a+b", "",
			nil, static, emptyPayloadHash},
		{"loader's stale signature replaced", "es", "PUT", "https://search-x.us-east-1.es.amazonaws.com/idx", `{}`,
			map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=LOADER/...", "X-Amz-Date": "20000101T000000Z", "X-Amz-Security-Token": "old"}, static, sha256Hex(`{}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := sigv4Auth(t, tc.service, tc.creds, now, nil)
			req := newRequest(t, tc.method, tc.url, tc.body)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			want := req.Clone(context.Background())
			want.Header.Del("Authorization")
			want.Header.Del("X-Amz-Date")
			want.Header.Del("X-Amz-Security-Token")
			want.Header.Set("X-Amz-Content-Sha256", tc.wantHash)
			// The SDK's S3 client signs with DisableURIPathEscaping.
			s3Opt := func(o *v4.SignerOptions) { o.DisableURIPathEscaping = tc.service == "s3" }
			if err := v4.NewSigner().SignHTTP(context.Background(), tc.creds, want, tc.wantHash, tc.service, "us-east-1", now, s3Opt); err != nil {
				t.Fatal(err)
			}

			if err := h.a.Apply(req); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(req.Header, want.Header) {
				t.Errorf("headers\n%v\nwant (SDK)\n%v", req.Header, want.Header)
			}
			if req.URL.String() != want.URL.String() {
				t.Errorf("URL %s, want %s", req.URL, want.URL)
			}
			if tc.body != "" {
				if b, _ := io.ReadAll(req.Body); string(b) != tc.body {
					t.Errorf("body after signing = %q", b)
				}
			}
			// A retry of the same request is signed again, not kept.
			if err := h.a.Apply(req); err != nil || !reflect.DeepEqual(req.Header, want.Header) {
				t.Errorf("re-applied: %v, headers %v", err, req.Header)
			}
		})
	}
}

// verifySigV4 is an S3-compatible store's check of a header-signed request,
// written from the SigV4 specification, independently of the SDK.
func verifySigV4(r *http.Request, body []byte, keys map[string]string, now time.Time) error {
	const prefix = "AWS4-HMAC-SHA256 "
	authz := r.Header.Get("Authorization")
	if !strings.HasPrefix(authz, prefix) {
		return fmt.Errorf("no SigV4 Authorization: %q", authz)
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(authz, prefix), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		fields[k] = v
	}
	scope := strings.SplitN(fields["Credential"], "/", 2)
	if len(scope) != 2 {
		return fmt.Errorf("bad Credential %q", fields["Credential"])
	}
	secret, ok := keys[scope[0]]
	if !ok {
		return fmt.Errorf("unknown access key %q", scope[0])
	}
	parts := strings.Split(scope[1], "/") // date/region/service/aws4_request
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || len(parts) != 4 || !strings.HasPrefix(amzDate, parts[0]) {
		return fmt.Errorf("bad date %q for scope %q", amzDate, scope[1])
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return fmt.Errorf("request time %s too far from %s", t, now)
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload != "UNSIGNED-PAYLOAD" && payload != "STREAMING-UNSIGNED-PAYLOAD-TRAILER" && payload != sha256Hex(string(body)) {
		return fmt.Errorf("x-amz-content-sha256 %q does not match the body", payload)
	}

	signed := strings.Split(fields["SignedHeaders"], ";")
	var ch strings.Builder
	for _, name := range signed {
		var v string
		switch name {
		case "host":
			v = r.Host
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			vals := r.Header.Values(name)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		fmt.Fprintf(&ch, "%s:%s\n", name, v)
	}
	q := r.URL.Query()
	keysQ := make([]string, 0, len(q))
	for k := range q {
		keysQ = append(keysQ, k)
	}
	sort.Strings(keysQ)
	var qs []string
	enc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	for _, k := range keysQ {
		vs := slices.Clone(q[k])
		sort.Strings(vs)
		for _, v := range vs {
			qs = append(qs, enc(k)+"="+enc(v))
		}
	}
	// The path is URI-encoded once for S3 and twice for other services.
	// S3 encodes the key it decoded from the request line, not the bytes
	// that came on the wire: "a=b" and "a%3Db" name one object and both
	// canonicalize to "a%3Db".
	uri := r.URL.EscapedPath()
	// Other services resolve the path's empty, "." and ".." segments
	// first.
	if parts[2] == "s3" {
		uri = uriEncode(r.URL.Path, false)
	} else {
		var segs []string
		for _, seg := range strings.Split(uri, "/") {
			switch {
			case seg == "" || seg == ".":
			case seg == "..":
				if len(segs) > 0 {
					segs = segs[:len(segs)-1]
				}
			default:
				segs = append(segs, uriEncode(seg, true))
			}
		}
		trailing := ""
		if len(segs) > 0 && strings.HasSuffix(uri, "/") {
			trailing = "/"
		}
		uri = "/" + strings.Join(segs, "/") + trailing
	}
	canonical := strings.Join([]string{r.Method, uri, strings.Join(qs, "&"), ch.String(), fields["SignedHeaders"], payload}, "\n")
	toSign := strings.Join([]string{"AWS4-HMAC-SHA256", amzDate, scope[1], sha256Hex(canonical)}, "\n")
	mac := func(key []byte, s string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	k := mac([]byte("AWS4"+secret), parts[0])
	for _, p := range parts[1:] {
		k = mac(k, p)
	}
	if want := hex.EncodeToString(mac(k, toSign)); want != fields["Signature"] {
		return fmt.Errorf("signature mismatch: canonical request\n%s", canonical)
	}
	return nil
}

// uriEncode is SigV4's UriEncode: every byte but the unreserved A-Z a-z
// 0-9 - . _ ~ as %XX with upper-case hex; '/' too if encodeSlash.
func uriEncode(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', strings.IndexByte("-._~", c) >= 0,
			c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// s3Double is an S3-compatible store that accepts only correctly signed
// requests and keeps the objects it was sent.
type s3Double struct {
	keys    map[string]string
	mu      sync.Mutex
	objects map[string][]byte
	denied  []string
}

func (s *s3Double) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := verifySigV4(r, body, s.keys, time.Now()); err != nil {
		s.mu.Lock()
		s.denied = append(s.denied, err.Error())
		s.mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `<Error><Code>SignatureDoesNotMatch</Code></Error>`)
		return
	}
	if r.Header.Get("X-Amz-Sdk-Checksum-Algorithm") != "" && r.Header.Get("X-Amz-Trailer") == "" && !hasChecksumHeader(r.Header) {
		// S3: "x-amz-sdk-checksum-algorithm specified, but no
		// corresponding x-amz-checksum-* or x-amz-trailer headers were
		// found."
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `<Error><Code>InvalidRequest</Code></Error>`)
		return
	}
	if chunked := slices.Contains(strings.Split(strings.ReplaceAll(r.Header.Get("Content-Encoding"), " ", ""), ","), "aws-chunked"); chunked || strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
		// S3 takes an aws-chunked body only under a streaming payload
		// hash, and refuses one declared UNSIGNED-PAYLOAD or hashed
		// whole. This double decodes unsigned chunks only.
		if !chunked || r.Header.Get("X-Amz-Content-Sha256") != "STREAMING-UNSIGNED-PAYLOAD-TRAILER" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `<Error><Code>InvalidArgument</Code></Error>`)
			return
		}
		var data []byte
		rest := string(body)
		for {
			line, after, ok := strings.Cut(rest, "\r\n")
			n, err := strconv.ParseInt(line, 16, 64)
			if !ok || err != nil || int64(len(after)) < n+2 {
				http.Error(w, "bad aws-chunked framing", http.StatusBadRequest)
				return
			}
			if n == 0 {
				break
			}
			data, rest = append(data, after[:n]...), after[n+2:]
		}
		if strconv.Itoa(len(data)) != r.Header.Get("X-Amz-Decoded-Content-Length") {
			http.Error(w, "x-amz-decoded-content-length does not match", http.StatusBadRequest)
			return
		}
		body = data
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		s.objects[r.URL.Path] = body
	case http.MethodGet:
		b, ok := s.objects[r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Write(b)
	}
}

// An S3-compatible store double verifies the Authorization header of
// requests signed by Apply: uploads with UNSIGNED-PAYLOAD, reads, a body
// hashed for a non-S3 service, and a session token; a request altered after
// signing is refused, so the double does check.
func TestSigV4AgainstStoreDouble(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "ASIASTORE", SecretAccessKey: "store-secret-key", SessionToken: "store-session"}
	store := &s3Double{keys: map[string]string{creds.AccessKeyID: creds.SecretAccessKey}, objects: map[string][]byte{}}
	srv := httptest.NewServer(store)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	do := func(h *harness, method, path, body string, tamper func(*http.Request)) (int, string) {
		t.Helper()
		req := newRequest(t, method, srv.URL+path, body)
		req.Header.Set("Content-Type", "application/octet-stream")
		if err := h.a.Apply(req); err != nil {
			t.Fatal(err)
		}
		if tamper != nil {
			tamper(req)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	s3 := sigv4Auth(t, "s3", creds, time.Time{}, nil)
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB, never hashed
	if code, _ := do(s3, "PUT", "/bucket/big%20object", big, nil); code != 200 {
		t.Fatalf("PUT: %d %v", code, store.denied)
	}
	if code, body := do(s3, "GET", "/bucket/big%20object?versionId=1", "", nil); code != 200 || body != big {
		t.Fatalf("GET: %d, %d bytes, %v", code, len(body), store.denied)
	}
	es := sigv4Auth(t, "es", creds, time.Time{}, nil)
	if code, _ := do(es, "POST", "/_bulk", "{\"index\":{}}\n{}\n", nil); code != 200 {
		t.Fatalf("POST with hashed body: %d %v", code, store.denied)
	}
	if code, _ := do(es, "PUT", "/idx/_doc/a%20b", "{}", nil); code != 200 {
		t.Fatalf("PUT with an escaped path to a non-S3 service: %d %v", code, store.denied)
	}
	// A path with empty, "." or ".." segments is signed as the service
	// resolves it, and sent as the loader wrote it.
	for _, path := range []string{"//_bulk", "/idx//_doc/a%20b/", "/idx/./_doc/x", "/other/../idx/_bulk", "/idx/_doc/x/./"} {
		if code, _ := do(es, "POST", path, "{}", func(r *http.Request) {
			if got := r.URL.EscapedPath(); got != path {
				t.Errorf("sent path %q, want %q as the loader sent it", got, path)
			}
		}); code != 200 {
			t.Errorf("POST %s to a non-S3 service: %d %v", path, code, store.denied)
		}
	}
	// The forwarding headers sluice adds, and hop-by-hop ones, are sent
	// but not signed: a hop that appends to X-Forwarded-For (a VPC
	// endpoint does) leaves the signature right.
	forwarded := func(h *harness, method, path string) {
		t.Helper()
		req := newRequest(t, method, srv.URL+path, "{}")
		req.Header.Set("X-Forwarded-For", "10.0.0.7")
		req.Header.Set("X-Forwarded-Proto", "http")
		req.Header.Set("Forwarded", "for=10.0.0.7")
		req.Header.Set("Te", "trailers")
		if err := h.a.Apply(req); err != nil {
			t.Fatal(err)
		}
		if got := req.Header.Get("X-Forwarded-For"); got != "10.0.0.7" || strings.Contains(req.Header.Get("Authorization"), "forward") {
			t.Errorf("%s %s: X-Forwarded-For %q, Authorization %q: want it sent, not signed", method, path, got, req.Header.Get("Authorization"))
		}
		req.Header.Set("X-Forwarded-For", "10.0.0.7, 172.16.0.1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s %s through a hop that appended to X-Forwarded-For: %d %v", method, path, resp.StatusCode, store.denied)
		}
	}
	forwarded(es, "POST", "/idx/_doc")
	forwarded(s3, "PUT", "/bucket/forwarded")
	if code, _ := do(s3, "PUT", "/bucket/x", "data", func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }); code != http.StatusForbidden {
		t.Errorf("a request altered after signing got %d, want 403", code)
	}
	if code, _ := do(es, "POST", "/_bulk", "original", func(r *http.Request) {
		r.Body = io.NopCloser(strings.NewReader("tamperd")) // same length, different bytes
		r.ContentLength = 7
	}); code != http.StatusForbidden {
		t.Errorf("a body altered after hashing got %d, want 403", code)
	}
}

// S3 keys as a loader that does not sign writes them on the request line:
// with the characters RFC 3986 allows in a path left as they are (Hive
// partitions "dt=...", timestamps with ':', '+', ','), with lower-case
// escapes, or escaped where they need not be. S3 signs the key it decodes,
// encoded its own way, so each must reach the store double signed for
// that key, and stored under it.
func TestSigV4S3KeyEncoding(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIDKEYS", SecretAccessKey: "keys-secret"}
	store := &s3Double{keys: map[string]string{creds.AccessKeyID: creds.SecretAccessKey}, objects: map[string][]byte{}}
	srv := httptest.NewServer(store)
	defer srv.Close()
	h := sigv4Auth(t, "s3", creds, time.Time{}, nil)
	for _, tc := range []struct{ path, key string }{
		{"/bucket/plain/key.json", "/bucket/plain/key.json"},
		{"/bucket/dt=2025-03-01/part-0.json", "/bucket/dt=2025-03-01/part-0.json"},
		{"/bucket/2025-03-01T12:34:56Z.json", "/bucket/2025-03-01T12:34:56Z.json"},
		{"/bucket/a+b,c;d@e$f&g", "/bucket/a+b,c;d@e$f&g"},
		{"/bucket/a%20b%2bc", "/bucket/a b+c"},
		{"/bucket/caf%c3%a9", "/bucket/café"},
		{"/bucket/%61%62c", "/bucket/abc"},
		{"/bucket/a%3Db/", "/bucket/a=b/"},
		{"/bucket/x//y", "/bucket/x//y"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			store.mu.Lock()
			store.denied = nil
			store.mu.Unlock()
			req := newRequest(t, "PUT", srv.URL+tc.path+"?x-id=PutObject", "data")
			if err := h.a.Apply(req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			store.mu.Lock()
			defer store.mu.Unlock()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("the store answered %d: %v", resp.StatusCode, store.denied)
			}
			if _, ok := store.objects[tc.key]; !ok {
				t.Errorf("stored %v, want key %q", slices.Collect(maps.Keys(store.objects)), tc.key)
			}
		})
	}
}

// awsChunked frames data as an aws-chunked body of chunks of at most n
// bytes: with chunk signatures (made up: nothing can check them once
// sluice signs the request) if signed, and with a trailing checksum if
// trailer.
func awsChunked(data string, n int, signed, trailer bool) string {
	var b strings.Builder
	ext := ""
	if signed {
		ext = ";chunk-signature=" + strings.Repeat("ab", 32)
	}
	for len(data) > 0 {
		c := data[:min(n, len(data))]
		data = data[len(c):]
		fmt.Fprintf(&b, "%x%s\r\n%s\r\n", len(c), ext, c)
	}
	fmt.Fprintf(&b, "0%s\r\n", ext)
	if trailer {
		b.WriteString("x-amz-checksum-crc32:AAAAAA==\r\n")
		if signed {
			b.WriteString("x-amz-trailer-signature:" + strings.Repeat("cd", 32) + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// A loader's AWS SDK uploads to S3 in aws-chunked framing: the Java SDK
// does for PutObject and UploadPart, with chunk signatures when its
// endpoint (sluice) is plain http, and others with an unsigned trailing
// checksum. S3 takes such a body only under the streaming payload hash
// it was framed for; chunk signatures chain from the signature sluice
// replaces, so no store could check them. Each upload, streamed or
// buffered by the proxy, must be stored as the bytes the loader framed.
func TestSigV4S3AWSChunkedUploads(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIDCHUNKS", SecretAccessKey: "chunks-secret"}
	store := &s3Double{keys: map[string]string{creds.AccessKeyID: creds.SecretAccessKey}, objects: map[string][]byte{}}
	srv := httptest.NewServer(store)
	defer srv.Close()
	h := sigv4Auth(t, "s3", creds, time.Time{}, nil)
	data := strings.Repeat("0123456789abcdef", 1000) + "tail"
	for _, tc := range []struct {
		name, hash, encoding string
		signed, trailer      bool
	}{
		{"unsigned with trailer", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "aws-chunked", false, true},
		{"signed", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "aws-chunked", true, false},
		{"signed with trailer", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "aws-chunked", true, true},
		{"signed, another coding too", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "gzip, aws-chunked", true, false},
	} {
		for _, streamed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/streamed=%v", tc.name, streamed), func(t *testing.T) {
				key := fmt.Sprintf("/bucket/%s-%v", strings.ReplaceAll(tc.name, " ", "-"), streamed)
				req := newRequest(t, "PUT", srv.URL+key, awsChunked(data, 4096, tc.signed, tc.trailer))
				if streamed {
					req.GetBody = nil
				}
				req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=LOADER/20250301/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x")
				req.Header.Set("X-Amz-Content-Sha256", tc.hash)
				req.Header.Set("Content-Encoding", tc.encoding)
				req.Header.Set("X-Amz-Decoded-Content-Length", strconv.Itoa(len(data)))
				if tc.trailer {
					// As the SDKs with default checksums send it.
					req.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
					req.Header.Set("X-Amz-Sdk-Checksum-Algorithm", "CRC32")
				}
				if err := h.a.Apply(req); err != nil {
					t.Fatal(err)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				store.mu.Lock()
				defer store.mu.Unlock()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("the store answered %d %s: %v", resp.StatusCode, b, store.denied)
				}
				if got := string(store.objects[key]); got != data {
					t.Errorf("stored %d bytes (%.40q...), want the %d the loader framed", len(got), got, len(data))
				}
			})
		}
	}

	// A body whose framing does not add up to its declared length is
	// never sent whole.
	for _, tc := range []struct{ name, body, length string }{
		{"shorter than declared", awsChunked(data, 4096, true, false), strconv.Itoa(len(data) + 1)},
		{"longer than declared", awsChunked(data, 4096, true, false), strconv.Itoa(len(data) - 1)},
		{"cut short", awsChunked(data, 4096, true, false)[:5000], strconv.Itoa(len(data))},
		{"bad framing", "zz;chunk-signature=x\r\n", "2"},
		{"no decoded length", awsChunked(data, 4096, true, false), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "/bucket/bad-" + strings.ReplaceAll(tc.name, " ", "-")
			req := newRequest(t, "PUT", srv.URL+key, tc.body)
			req.Header.Set("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
			req.Header.Set("Content-Encoding", "aws-chunked")
			if tc.length != "" {
				req.Header.Set("X-Amz-Decoded-Content-Length", tc.length)
			}
			if err := h.a.Apply(req); err == nil {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
			}
			store.mu.Lock()
			defer store.mu.Unlock()
			if b, ok := store.objects[key]; ok {
				t.Errorf("stored %d bytes", len(b))
			}
		})
	}
}

// The request leaves with Content-Length set to the declared length, so
// the store has a complete request once that many bytes are sent: a
// body found malformed after them must have its last declared byte
// withheld, or the store takes a body the loader framed otherwise.
func TestUnchunkerWithholdsDeclaredEnd(t *testing.T) {
	data := strings.Repeat("0123456789abcdef", 1000) + "tail"
	whole := awsChunked(data, 4096, true, true)
	for _, tc := range []struct {
		name, body string
		size       int
		ok         bool
	}{
		{"whole", whole, len(data), true},
		{"one byte longer in its last chunk", whole, len(data) - 1, false},
		{"a chunk more after the declared length", awsChunked(data, 4096, true, false), len(data) - 4, false},
		{"shorter", whole, len(data) + 1, false},
		{"trailer cut mid-line", whole[:len(whole)-10], len(data), false},
		{"no last chunk", whole[:strings.LastIndex(whole, "0;chunk-signature")], len(data), false},
		{"declared empty, sent empty", awsChunked("", 1, false, false), 0, true},
		{"declared empty, sent data", awsChunked("x", 1, false, false), 0, false},
	} {
		for _, oneByte := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/one byte reads=%v", tc.name, oneByte), func(t *testing.T) {
				var r io.Reader = newUnchunker(io.NopCloser(strings.NewReader(tc.body)), int64(tc.size))
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				// What net/http's transport sends under Content-Length;
				// it reads a body declared empty to its end.
				if tc.size > 0 {
					r = io.LimitReader(r, int64(tc.size))
				}
				got, err := io.ReadAll(r)
				if tc.ok {
					if err != nil || string(got) != data[:tc.size] {
						t.Fatalf("read %d bytes, %v; want the %d declared", len(got), err, tc.size)
					}
					return
				}
				if err == nil || tc.size > 0 && len(got) >= tc.size {
					t.Fatalf("read %d bytes of %d declared, err %v: the store would take the request whole", len(got), tc.size, err)
				}
				if n, again := r.Read(make([]byte, 1)); n != 0 || again == nil || again == io.EOF {
					t.Errorf("a read after %v: %d bytes, %v; want the error again", err, n, again)
				}
			})
		}
	}
}

// Whatever the framing, the unchunker hands over the whole declared
// length only when the framing carries exactly that data and ends.
func FuzzUnchunker(f *testing.F) {
	data := strings.Repeat("0123456789abcdef", 20)
	f.Add([]byte(awsChunked(data, 64, true, true)), uint16(len(data)))
	f.Add([]byte(awsChunked(data, 64, false, false)), uint16(len(data)-1))
	f.Add([]byte(awsChunked(data, 64, true, false)), uint16(len(data)+1))
	f.Add([]byte("5\r\nabcde\r\n0\r\n"), uint16(5))
	f.Add([]byte("5\r\nabcde\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"), uint16(5))
	f.Fuzz(func(t *testing.T, body []byte, size uint16) {
		if size == 0 {
			return // the transport reads such a body to its end; not a length to check
		}
		// Read as the transport reads a body of known length.
		got, err := io.ReadAll(io.LimitReader(newUnchunker(io.NopCloser(bytes.NewReader(body)), int64(size)), int64(size)))
		if len(got) < int(size) {
			if err == nil {
				t.Fatalf("handed over %d bytes of %d declared, and no error", len(got), size)
			}
			return
		}
		want, werr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(body)))
		if werr != nil || !bytes.Equal(got, want) {
			t.Fatalf("handed over the %d bytes declared (err %v), but the framing carries %d (err %v)", size, err, len(want), werr)
		}
	})
}

// readFailer fails the test if anything reads the body.
type readFailer struct{ t *testing.T }

func (r readFailer) Read([]byte) (int, error) {
	r.t.Error("the body was read although UNSIGNED-PAYLOAD applies")
	return 0, io.EOF
}
func (readFailer) Close() error { return nil }

func TestPayloadHash(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: "secret-key-1"}
	body := "0123456789"
	type budget struct {
		mu       sync.Mutex
		reserved int64
		releases int
	}
	for _, tc := range []struct {
		name     string
		service  string
		req      func() *http.Request
		budget   int64 // bytes available; -1 for no budget at all
		want     string
		tooLarge int64 // Size of the expected *TooLargeError, 0 for none
		wantErr  string
	}{
		{"no body", "es", func() *http.Request { return newRequest(t, "GET", "http://s/", "") }, -1, emptyPayloadHash, 0, ""},
		{"s3 streams unsigned", "s3", func() *http.Request {
			r := newRequest(t, "PUT", "http://s/b/k", "")
			r.Body, r.ContentLength = readFailer{t}, 1<<40
			return r
		}, -1, unsignedPayload, 0, ""},
		{"buffered by the proxy", "es", func() *http.Request { return newRequest(t, "POST", "http://s/", body) }, -1, sha256Hex(body), 0, ""},
		{"streamed, within budget", "es", func() *http.Request {
			r := newRequest(t, "POST", "http://s/", body)
			r.GetBody = nil
			return r
		}, 100, sha256Hex(body), 0, ""},
		{"streamed, over budget", "es", func() *http.Request {
			r := newRequest(t, "POST", "http://s/", body)
			r.GetBody = nil
			return r
		}, 5, "", 10, ""},
		{"streamed, no budget", "es", func() *http.Request {
			r := newRequest(t, "POST", "http://s/", body)
			r.GetBody = nil
			return r
		}, -1, "", 10, ""},
		{"streamed, unknown length", "es", func() *http.Request {
			r := newRequest(t, "POST", "http://s/", body)
			r.GetBody, r.ContentLength = nil, -1
			return r
		}, 100, "", -1, ""},
		{"streamed, unknown length, within budget", "es", func() *http.Request {
			r := newRequest(t, "POST", "http://s/", body)
			r.GetBody, r.ContentLength = nil, -1
			return r
		}, 1 << 20, sha256Hex(body), 0, ""},
		{"streamed, unknown length, cut short", "es", func() *http.Request {
			// What net/http's chunked reader gives when the loader's
			// connection breaks mid-body.
			r := newRequest(t, "POST", "http://s/", "")
			r.Body = io.NopCloser(io.MultiReader(strings.NewReader(body[:5]), iotest.ErrReader(io.ErrUnexpectedEOF)))
			r.GetBody, r.ContentLength = nil, -1
			return r
		}, 1 << 20, "", 0, "after 5 bytes: unexpected EOF"},
		{"GetBody shorter than Content-Length", "es", func() *http.Request {
			r := newRequest(t, "POST", "http://s/", body)
			r.ContentLength = 11
			return r
		}, -1, "", 0, "Content-Length is 11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &budget{}
			h := sigv4Auth(t, tc.service, creds, time.Time{}, func(o *Options) {
				if tc.budget < 0 {
					return
				}
				o.BufferBudget = func(n int64) (func(), bool) {
					b.mu.Lock()
					defer b.mu.Unlock()
					if b.reserved+n > tc.budget {
						return nil, false
					}
					b.reserved += n
					return func() {
						b.mu.Lock()
						defer b.mu.Unlock()
						b.reserved -= n
						b.releases++
					}, true
				}
			})
			req := tc.req()
			err := h.a.Apply(req)
			var tl *TooLargeError
			switch {
			case tc.tooLarge != 0:
				if !errors.As(err, &tl) || tl.Size != tc.tooLarge || tl.Service != tc.service || tl.StatusCode() != http.StatusRequestEntityTooLarge {
					t.Fatalf("Apply = %v, want *TooLargeError of size %d", err, tc.tooLarge)
				}
				if msg := tl.Error(); !strings.HasPrefix(msg, "auth: aws-sigv4 for service \"es\"") || !strings.Contains(msg, "buffer budget") {
					t.Errorf("TooLargeError message %q", msg)
				}
				return
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Apply = %v, want %q", err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if got := req.Header.Get("X-Amz-Content-Sha256"); got != tc.want {
				t.Errorf("payload hash %q, want %q", got, tc.want)
			}
			if tc.service == "s3" {
				return
			}
			if req.Body != nil {
				if got, _ := io.ReadAll(req.Body); len(got) > 0 && string(got) != body {
					t.Errorf("body after hashing = %q", got)
				}
				req.Body.Close()
				req.Body.Close()
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.reserved != 0 || (tc.budget > 0 && b.releases != 1) {
				t.Errorf("budget after Close: %d bytes reserved, %d releases; want 0 and 1", b.reserved, b.releases)
			}
		})
	}
}

// With SLUICE_AUTH_OVERRIDE=false a loader's presigned or signed request is
// forwarded as is; our own signature from an earlier attempt is renewed.
func TestSigV4KeepsLoaderSignature(t *testing.T) {
	c := testConfig(SourceAWSSigV4)
	c.Override = false
	now := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	h := newHarness(t, c, nil, func(o *Options) {
		o.AWSCredentials = credentials.NewStaticCredentialsProvider("AKIDOURS", "our-secret", "")
		o.Now = func() time.Time { return now }
	})
	h.a.fetch(context.Background())

	presigned := newRequest(t, "GET", "https://s/x?X-Amz-Signature=abc&X-Amz-Credential=LOADER", "")
	signed := newRequest(t, "GET", "https://s/x", "")
	signed.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=LOADER/20250301/us-east-1/es/aws4_request, SignedHeaders=host, Signature=x")
	for _, req := range []*http.Request{presigned, signed} {
		before := req.Header.Clone()
		if err := h.a.Apply(req); err != nil || !reflect.DeepEqual(req.Header, before) {
			t.Errorf("loader-signed %s changed: %v %v", req.URL, err, req.Header)
		}
	}
	ours := newRequest(t, "GET", "https://s/x", "")
	if err := h.a.Apply(ours); err != nil {
		t.Fatal(err)
	}
	first := ours.Header.Get("X-Amz-Date")
	now = now.Add(time.Minute)
	if err := h.a.Apply(ours); err != nil || ours.Header.Get("X-Amz-Date") == first {
		t.Errorf("our own signature was not renewed on retry: %v, %s", err, ours.Header.Get("X-Amz-Date"))
	}
}

// With SLUICE_AUTH_OVERRIDE (the default) a loader's presigned query is
// replaced like its Authorization header: a request that carried both a
// presigned query and sluice's header would name two signatures, which
// AWS refuses ("only one auth mechanism allowed"). The loader's other
// parameters stay, and the store verifies what is left.
func TestSigV4OverrideReplacesPresignedQuery(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIDOURS", SecretAccessKey: "our-secret"}
	store := &s3Double{keys: map[string]string{creds.AccessKeyID: creds.SecretAccessKey}, objects: map[string][]byte{}}
	srv := httptest.NewServer(store)
	defer srv.Close()
	h := sigv4Auth(t, "s3", creds, time.Time{}, nil)
	req := newRequest(t, "PUT", srv.URL+"/bucket/key?partNumber=2&uploadId=u1"+
		"&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=LOADER%2F20250301%2Fus-east-1%2Fs3%2Faws4_request"+
		"&X-Amz-Date=20250301T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Security-Token=loader-token"+
		"&X-Amz-Signature=abc", "part")
	if err := h.a.Apply(req); err != nil {
		t.Fatal(err)
	}
	q := req.URL.Query()
	for _, k := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature"} {
		if q.Has(k) {
			t.Errorf("the loader's presigned %s was kept beside sluice's Authorization: %s", k, req.URL.RawQuery)
		}
	}
	if q.Get("partNumber") != "2" || q.Get("uploadId") != "u1" {
		t.Errorf("the loader's own parameters were lost: %s", req.URL.RawQuery)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the store answered %d: %v", resp.StatusCode, store.denied)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// isolateAWSEnv makes the SDK's default chain see nothing but what the
// test sets.
func isolateAWSEnv(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// Credentials from a container-credentials endpoint (ECS, EKS Pod
// Identity) through the SDK's default chain are fetched once and cached
// across requests, then refreshed ahead of their expiry.
func TestContainerCredentialsCached(t *testing.T) {
	isolateAWSEnv(t)
	clock := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	var mu sync.Mutex
	var hits int
	var authz []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		n := hits
		authz = append(authz, r.Header.Get("Authorization"))
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId":     fmt.Sprintf("ASIACONTAINER%d", n),
			"SecretAccessKey": fmt.Sprintf("container-secret-%d", n),
			"Token":           fmt.Sprintf("container-session-%d", n),
			"Expiration":      clock.Now().Add(15 * time.Minute).Format(time.RFC3339),
		})
	}))
	defer srv.Close()
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", srv.URL+"/v2/credentials")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-identity-token")
	c := testConfig(SourceAWSSigV4)
	h := newHarness(t, c, nil, func(o *Options) { o.Now = clock.Now })
	hitCount := func() int { mu.Lock(); defer mu.Unlock(); return hits }
	keyOf := func() string {
		t.Helper()
		req := newRequest(t, "POST", "https://search.test/_bulk", "{}")
		if err := h.a.Apply(req); err != nil {
			t.Fatal(err)
		}
		if req.Header.Get("X-Amz-Security-Token") == "" {
			t.Error("no session token header")
		}
		v := strings.TrimPrefix(req.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=")
		return v[:strings.IndexByte(v, '/')]
	}

	ctx := context.Background()
	h.a.step(ctx)
	for range 100 {
		if k := keyOf(); k != "ASIACONTAINER1" {
			t.Fatalf("signed with %q", k)
		}
	}
	if n := hitCount(); n != 1 {
		t.Fatalf("%d endpoint calls for 100 requests, want 1", n)
	}
	clock.Add(5 * time.Minute)
	h.a.step(ctx)
	if n := hitCount(); n != 1 {
		t.Errorf("%d endpoint calls 5 minutes into a 15-minute credential, want 1", n)
	}
	clock.Add(6 * time.Minute) // past the refresh point, 10–11 minutes in
	h.a.step(ctx)
	if n := hitCount(); n != 2 {
		t.Errorf("%d endpoint calls after the refresh point, want 2", n)
	}
	if k := keyOf(); k != "ASIACONTAINER2" {
		t.Errorf("signed with %q after refresh", k)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range authz {
		if a != "pod-identity-token" {
			t.Errorf("endpoint saw Authorization %q", a)
		}
	}
}

func TestNewAWSNeedsRegion(t *testing.T) {
	isolateAWSEnv(t)
	c := testConfig(SourceAWSSigV4)
	c.AWSRegion = ""
	_, err := New(c, Options{})
	if err == nil || !strings.Contains(err.Error(), "SLUICE_AWS_REGION") {
		t.Errorf("New without a region = %v", err)
	}
	t.Setenv("AWS_REGION", "eu-west-1")
	a, err := New(c, Options{})
	if err != nil || a.region != "eu-west-1" {
		t.Errorf("New with AWS_REGION = %v, region %q", err, a.region)
	}
}
