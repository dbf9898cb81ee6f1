package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/encoding/httpbinding"
)

// unsignedPayloadServices accept "UNSIGNED-PAYLOAD" as the payload hash,
// so their bodies are streamed without being read twice.
var unsignedPayloadServices = map[string]bool{"s3": true}

const (
	emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" // SHA-256 of ""
	unsignedPayload  = "UNSIGNED-PAYLOAD"
	// unsignedChunked is the payload hash of an aws-chunked body whose
	// chunks are not signed, with a trailing checksum.
	unsignedChunked = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
)

// awsSource fetches AWS credentials from a provider, by default the SDK's
// default chain (environment, shared files, web identity/IRSA, container
// endpoint, instance metadata).
type awsSource struct {
	provider aws.CredentialsProvider
}

// newAWSSource resolves the credential provider and the signing region.
// The SDK's credential calls use its own HTTP client (so that AWS_CA_BUNDLE
// and a profile's ca_bundle keep working) with FetchTimeout as its timeout.
func newAWSSource(c Config, provider aws.CredentialsProvider) (*awsSource, string, error) {
	region := c.AWSRegion
	if provider == nil {
		opts := []func(*config.LoadOptions) error{
			config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(c.FetchTimeout)),
			// The Authenticator retries with its own backoff; the SDK's
			// retries would sleep inside a fetch and outlast its timeout.
			config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		}
		if region != "" {
			opts = append(opts, config.WithRegion(region))
		}
		cfg, err := config.LoadDefaultConfig(context.Background(), opts...)
		if err != nil {
			return nil, "", fmt.Errorf("auth: aws-sigv4: loading the AWS SDK configuration: %w", err)
		}
		if cfg.Credentials == nil {
			return nil, "", fmt.Errorf("auth: aws-sigv4: the AWS SDK found no credential provider")
		}
		provider = cfg.Credentials
		if region == "" {
			region = cfg.Region
		}
	}
	if region == "" {
		return nil, "", fmt.Errorf("auth: %sAWS_REGION: not set, and the AWS SDK found no region (AWS_REGION, shared config)", envPrefix)
	}
	return &awsSource{provider: provider}, region, nil
}

func (s *awsSource) fetch(ctx context.Context, _ time.Time) (credential, error) {
	// The SDK wraps its chain in a CredentialsCache that would hand back
	// the credentials it holds until they expire. Our own cache decides when
	// to refresh, so drop the SDK's copy and ask the chain itself.
	if cc, ok := s.provider.(*aws.CredentialsCache); ok {
		cc.Invalidate()
	}
	v, err := s.provider.Retrieve(ctx)
	if err != nil {
		return credential{}, fmt.Errorf("aws credential chain: %w", err)
	}
	if !v.HasKeys() {
		return credential{}, fmt.Errorf("aws credential chain returned no keys (source %q)", v.Source)
	}
	c := credential{aws: v}
	if v.CanExpire {
		c.expires = v.Expires
	}
	return c, nil
}

func (s *awsSource) secrets() []string { return nil }

// signerOptions applies the service's canonical URI rule: S3 encodes the
// path once, every other service twice (the SDK's S3 client does the same).
func (a *Authenticator) signerOptions(o *v4.SignerOptions) {
	o.DisableURIPathEscaping = a.service == "s3"
}

// canonicalS3Path makes the path req sends its SigV4 encoding. Signing s3
// without escaping takes the path as it goes on the wire, but S3 signs the
// key it decoded, encoded again with every byte outside A-Za-z0-9-._~
// escaped: a key a loader sent as "dt=2025-03-01/x", "12:00:00Z.json" or
// "caf%c3%a9" would be signed as sent and refused as SignatureDoesNotMatch.
// Sent in that encoding, it names the same key.
func canonicalS3Path(req *http.Request) {
	if req.URL.Opaque != "" {
		return // sent as it is, and signed as it is
	}
	if p := httpbinding.EscapePath(req.URL.Path, false); p != req.URL.EscapedPath() {
		req.URL.RawPath = p
	}
}

// normalizedPath returns p without empty and "." segments, and with each
// ".." segment taking the one before it away (path.Clean, rooted); a
// trailing "/" stays.
func normalizedPath(p string) string {
	n := path.Clean("/" + p)
	if n != "/" && strings.HasSuffix(p, "/") {
		n += "/"
	}
	return n
}

// sign signs req with SigV4 using c at the current time.
func (a *Authenticator) sign(req *http.Request, c *credential) error {
	if err := unchunkSigned(req); err != nil {
		return err
	}
	hash, err := a.payloadHash(req)
	if err != nil {
		return err
	}
	h := req.Header
	// Replace whatever an earlier attempt or the loader put there.
	h.Del("Authorization")
	h.Del("X-Amz-Date")
	h.Del("X-Amz-Security-Token")
	dropPresigned(req)
	h.Set("X-Amz-Content-Sha256", hash)
	if a.service == "s3" {
		canonicalS3Path(req)
	} else if p := req.URL.EscapedPath(); req.URL.Opaque == "" && p != normalizedPath(p) {
		// Every service but S3 signs the path with its empty, "." and
		// ".." segments resolved: a loader's "//_bulk" (a base URL
		// ending in "/") signed as sent is refused as
		// SignatureDoesNotMatch. The signer takes the path from the
		// URL; the request goes with the path the loader sent.
		path, rawPath := req.URL.Path, req.URL.RawPath
		req.URL.RawPath = normalizedPath(p)
		req.URL.Path, _ = url.PathUnescape(req.URL.RawPath) // p is EscapedPath's: it unescapes
		defer func() { req.URL.Path, req.URL.RawPath = path, rawPath }()
	}
	// Headers that a hop on the way may add to or rewrite are sent but
	// not signed: a proxy or a VPC endpoint that appends its address to
	// X-Forwarded-For would otherwise make every write's signature wrong
	// (403). The SDK's signer leaves out only a few headers of its own.
	for k, v := range h {
		if hopHeader(textproto.CanonicalMIMEHeaderKey(k)) {
			delete(h, k) // as it is keyed, canonical or not
			defer func() { h[k] = v }()
		}
	}
	if err := a.signer.SignHTTP(req.Context(), c.aws, req, hash, a.service, a.region, a.now(), a.signerOptions); err != nil {
		return fmt.Errorf("auth: aws-sigv4 signing for service %q: %w", a.service, err)
	}
	return nil
}

// hopHeader reports whether the header (its canonical name) is one a hop
// between sluice and the store may add to, rewrite or drop: the
// forwarding headers (sluice adds X-Forwarded-*), and the hop-by-hop ones
// (TE, which SigV4's own guide says not to sign).
func hopHeader(k string) bool {
	switch k {
	case "Forwarded", "X-Real-Ip", "Via", "Te", "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Upgrade", "Trailer":
		return true
	}
	return strings.HasPrefix(k, "X-Forwarded-")
}

// presignedParams are the query parameters of a presigned request's
// signature (SigV4's query authentication).
var presignedParams = [...]string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
	"X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature"}

// dropPresigned removes a loader's presigned signature from req's query:
// sluice's Authorization header replaces it, and AWS refuses a request
// that carries both. The loader's other parameters stay.
func dropPresigned(req *http.Request) {
	if !strings.Contains(req.URL.RawQuery, "X-Amz-") {
		return // the common case, without parsing the query
	}
	q := req.URL.Query()
	n := len(q)
	for _, k := range presignedParams {
		q.Del(k)
	}
	if len(q) != n {
		// The signer writes the query again in its canonical form.
		req.URL.RawQuery = q.Encode()
	}
}

// payloadHash returns the x-amz-content-sha256 value for req. A body is
// read only to hash it: through GetBody when the proxy buffered it, or into
// a buffer reserved from the budget, which replaces req.Body.
func (a *Authenticator) payloadHash(req *http.Request) (string, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return emptyPayloadHash, nil
	}
	if req.Header.Get("X-Amz-Content-Sha256") == unsignedChunked {
		// The loader framed its body in aws-chunked with a trailing
		// checksum, which S3 reads only under this hash: it refuses
		// aws-chunked declared as UNSIGNED-PAYLOAD. Nothing in it is
		// signed, so it goes as it came.
		return unsignedChunked, nil
	}
	if a.unsignedPayload {
		return unsignedPayload, nil
	}
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return "", fmt.Errorf("auth: aws-sigv4: reopening the request body to hash it: %w", err)
		}
		defer body.Close()
		sum := sha256.New()
		n, err := io.Copy(sum, body)
		if err != nil {
			return "", fmt.Errorf("auth: aws-sigv4: reading the request body to hash it after %d bytes: %w", n, err)
		}
		if req.ContentLength > 0 && n != req.ContentLength {
			return "", fmt.Errorf("auth: aws-sigv4: request body has %d bytes but Content-Length is %d", n, req.ContentLength)
		}
		return hex.EncodeToString(sum.Sum(nil)), nil
	}

	size := req.ContentLength
	if a.budget == nil {
		return "", &TooLargeError{Service: a.service, Size: size, Reason: "the proxy did not buffer it and no buffer budget is available"}
	}
	if size <= 0 {
		return a.hashUnknownLength(req)
	}
	release, ok := a.budget(size)
	if !ok {
		return "", &TooLargeError{Service: a.service, Size: size, Reason: "it exceeds the free buffer budget"}
	}
	buf := make([]byte, size)
	if n, err := io.ReadFull(req.Body, buf); err != nil {
		release()
		return "", fmt.Errorf("auth: aws-sigv4: reading the request body to hash it after %d of %d bytes: %w", n, size, err)
	}
	req.Body = &bufferedBody{Reader: bytes.NewReader(buf), orig: req.Body, release: release}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]), nil
}

// hashUnknownLength reads a body of unknown length into blocks reserved
// from the budget one at a time, so that it holds no more than it reserved
// and stops as soon as the budget is spent. The blocks replace req.Body,
// and req.ContentLength becomes the length read. A body the budget cannot
// hold is refused: what was read of it is gone, and the loader gets the
// refusal, never a write sent short.
func (a *Authenticator) hashUnknownLength(req *http.Request) (string, error) {
	var (
		blocks   []io.Reader
		releases []func()
		total    int64
		block    = int64(64 << 10)
		sum      = sha256.New()
	)
	releaseAll := func() {
		for _, r := range releases {
			r()
		}
	}
	for {
		release, ok := a.budget(block)
		if !ok {
			releaseAll()
			return "", &TooLargeError{Service: a.service, Size: -1, Reason: fmt.Sprintf("the proxy did not buffer it, its length is unknown, and the free buffer budget ran out after %d bytes", total)}
		}
		releases = append(releases, release)
		buf := make([]byte, block)
		n, err := fill(req.Body, buf)
		buf = buf[:n]
		total += int64(n)
		sum.Write(buf)
		blocks = append(blocks, bytes.NewReader(buf))
		if err == io.EOF {
			break
		}
		if err != nil {
			releaseAll()
			return "", fmt.Errorf("auth: aws-sigv4: reading the request body to hash it after %d bytes: %w", total, err)
		}
		block = min(2*block, 4<<20)
	}
	req.Body = &bufferedBody{Reader: io.MultiReader(blocks...), orig: req.Body, release: releaseAll}
	req.ContentLength = total
	if total == 0 {
		return emptyPayloadHash, nil
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// unchunkSigned turns a loader's aws-chunked body with chunk signatures
// (x-amz-content-sha256 STREAMING-AWS4-*, as the Java SDK uploads to S3
// over plain http) into the plain body it carries. Each chunk's signature
// chains from the request's, which sluice replaces, so the store would
// refuse the chunks; and S3 refuses aws-chunked under any other payload
// hash. The body goes as X-Amz-Decoded-Content-Length bytes without the
// framing, and without its trailing checksum, which no header can carry
// once the body is under way.
func unchunkSigned(req *http.Request) error {
	h := req.Header
	v := h.Get("X-Amz-Content-Sha256")
	if !strings.HasPrefix(v, "STREAMING-AWS4-") || req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	size, err := strconv.ParseInt(h.Get("X-Amz-Decoded-Content-Length"), 10, 64)
	if err != nil || size < 0 {
		return fmt.Errorf("auth: aws-sigv4: an aws-chunked body (x-amz-content-sha256 %s) needs its length in X-Amz-Decoded-Content-Length, got %q", v, h.Get("X-Amz-Decoded-Content-Length"))
	}
	var codings []string
	for _, c := range strings.Split(h.Get("Content-Encoding"), ",") {
		if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "aws-chunked") {
			codings = append(codings, c)
		}
	}
	if len(codings) > 0 {
		h.Set("Content-Encoding", strings.Join(codings, ", "))
	} else {
		h.Del("Content-Encoding")
	}
	h.Del("X-Amz-Decoded-Content-Length")
	if h.Get("X-Amz-Trailer") != "" && !hasChecksumHeader(h) {
		// The checksum it names goes with the trailer: S3 refuses an
		// algorithm without a checksum (400 InvalidRequest).
		h.Del("X-Amz-Sdk-Checksum-Algorithm")
	}
	h.Del("X-Amz-Trailer")
	h.Del("X-Amz-Content-Sha256") // payloadHash must not take it for the loader's
	req.Body = newUnchunker(req.Body, size)
	if getBody := req.GetBody; getBody != nil {
		req.GetBody = func() (io.ReadCloser, error) {
			b, err := getBody()
			if err != nil {
				return nil, err
			}
			return newUnchunker(b, size), nil
		}
	}
	req.ContentLength = size
	return nil
}

// hasChecksumHeader reports whether h carries an object checksum
// (x-amz-checksum-crc32 and the like; x-amz-checksum-mode asks for one).
func hasChecksumHeader(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, "X-Amz-Checksum-") && k != "X-Amz-Checksum-Mode" {
			return true
		}
	}
	return false
}

// unchunker reads the data of an aws-chunked body, which is HTTP's chunked
// framing (net/http/httputil's reader, which drops the chunk-signature
// extensions) followed by trailing headers up to an empty line, read so
// that the body ends where the loader ended it. Data longer or shorter
// than left is a read error, as is framing that does not parse, so that a
// body sent in part is never taken for whole.
//
// The request goes with Content-Length left, so the store has it whole
// the moment the declared length's last byte is sent: a read error after
// that byte would come too late. That byte is handed over only once the
// framing is known to end there, and withheld when it does not.
type unchunker struct {
	br   *bufio.Reader // under r, and read for the trailer after it
	r    io.Reader     // httputil.NewChunkedReader(br)
	c    io.Closer
	left int64 // bytes still to come, as declared
	done bool
	err  error // the first error but io.EOF, returned again by every later read
}

func newUnchunker(rc io.ReadCloser, size int64) *unchunker {
	br := bufio.NewReader(rc)
	return &unchunker{br: br, r: httputil.NewChunkedReader(br), c: rc, left: size}
}

func (u *unchunker) Read(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	n, err := u.read(p)
	if err != nil && err != io.EOF {
		u.err = err
	}
	return n, err
}

func (u *unchunker) read(p []byte) (int, error) {
	if u.done {
		return 0, io.EOF
	}
	if u.left == 0 { // declared empty
		if err := u.end(false); err != nil {
			return 0, err
		}
		u.done = true
		return 0, io.EOF
	}
	if int64(len(p)) > u.left {
		p = p[:u.left]
	}
	n, err := u.r.Read(p)
	u.left -= int64(n)
	if u.left > 0 {
		if err == io.EOF {
			err = errBadChunk // shorter than X-Amz-Decoded-Content-Length
		}
		return n, err
	}
	if err == nil || err == io.EOF {
		err = u.end(err == io.EOF)
	}
	if err != nil {
		return n - 1, err // n ≥ 1: left was above zero before this read
	}
	u.done = true
	return n, io.EOF
}

// end reads what follows the declared length: the framing's last chunk,
// unless the chunked reader already reported it (atEOF), then the trailer.
func (u *unchunker) end(atEOF bool) error {
	var one [1]byte
	for !atEOF {
		n, err := u.r.Read(one[:])
		switch {
		case n > 0:
			return errBadChunk // longer than X-Amz-Decoded-Content-Length
		case err == io.EOF:
			atEOF = true
		case err != nil:
			return err
		}
	}
	for {
		line, err := u.br.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			return errBadChunk
		case err == io.EOF && len(line) == 0, err == nil && strings.TrimRight(string(line), "\r\n") == "":
			return nil
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
	}
}

func (u *unchunker) Close() error { return u.c.Close() }

var errBadChunk = errors.New("auth: aws-sigv4: the aws-chunked request body is malformed or does not match X-Amz-Decoded-Content-Length")

// fill reads r into buf until buf is full or r ends. Unlike io.ReadFull it
// keeps the body's clean end (io.EOF) apart from a body cut short:
// net/http's chunked reader reports a connection broken mid-body as
// io.ErrUnexpectedEOF, which io.ReadFull also returns for a short last
// block, and a body taken for whole there would be signed and sent short.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// bufferedBody replays a body read into a budgeted buffer; Close closes the
// original body and returns the bytes to the budget, once.
type bufferedBody struct {
	io.Reader
	orig    io.Closer
	release func()
	once    sync.Once
}

func (b *bufferedBody) Close() error {
	err := b.orig.Close()
	b.once.Do(b.release)
	return err
}
