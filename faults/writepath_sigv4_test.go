package faults

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Static AWS credentials of the SigV4 test: made up, valid nowhere.
const (
	sigv4KeyID  = "AKIDFAULTSUITE000000"
	sigv4Secret = "faults/suite/secret/not/a/real/key/000000"
	sigv4Region = "us-east-1"
	sigv4Svc    = "es"
)

// sigv4Store is a store double that checks what AWS checks of a SigV4
// request: that X-Amz-Content-Sha256 is the SHA-256 of the bytes it
// received, and that the signature is the one the static test credentials
// give for the request as received. It takes (200) only a request that
// passes both, and answers 403 otherwise, with why.
type sigv4Store struct {
	srv *httptest.Server
	got received

	mu  sync.Mutex
	why map[string][]string // id → why each refused copy was refused
}

func newSigV4Store(t *testing.T) *sigv4Store {
	t.Helper()
	s := &sigv4Store{why: map[string][]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sigv4Store) serveHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(HeaderRequestID)
	cp := readCopy(r.Body)
	i := s.got.add(id, cp)
	var why string
	switch signed := r.Header.Get("X-Amz-Content-Sha256"); {
	case !cp.whole:
		why = "the body broke off"
	case signed != hex.EncodeToString(cp.sum[:]):
		why = fmt.Sprintf("x-amz-content-sha256 %.16s… is not the SHA-256 of the %d bytes received (%x…)", signed, cp.n, cp.sum[:8])
	default:
		if err := verifySigV4(r, signed); err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		s.mu.Lock()
		s.why[id] = append(s.why[id], why)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"message":%q,"from":"store"}`, why)
		return
	}
	s.got.take(id, i)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, storeAnswer)
}

// refusals returns why the store refused copies of id.
func (s *sigv4Store) refusals(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.why[id]
}

// verifySigV4 signs a copy of r as received (the headers its
// Authorization lists as signed, as AWS reads them, its Content-Length,
// the X-Amz-Date it carries) with the test credentials and compares the
// Authorization headers.
func verifySigV4(r *http.Request, payloadHash string) error {
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return fmt.Errorf("X-Amz-Date: %v", err)
	}
	vr, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return err
	}
	_, list, _ := strings.Cut(r.Header.Get("Authorization"), "SignedHeaders=")
	list, _, _ = strings.Cut(list, ",")
	signed := strings.Split(list, ";")
	for k, vs := range r.Header {
		if k != "Authorization" && slices.Contains(signed, strings.ToLower(k)) {
			vr.Header[k] = vs
		}
	}
	vr.ContentLength = r.ContentLength
	creds := aws.Credentials{AccessKeyID: sigv4KeyID, SecretAccessKey: sigv4Secret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, vr, payloadHash, sigv4Svc, sigv4Region, at); err != nil {
		return err
	}
	if got, want := r.Header.Get("Authorization"), vr.Header.Get("Authorization"); got != want {
		return fmt.Errorf("signature mismatch: received %q, the request as received signs to %q", got, want)
	}
	return nil
}

// TestWritePathSigV4: sluice signs writes with SigV4 for a service whose
// payload is hashed (es), with static credentials from the AWS
// environment variables. Buffered bodies, and streamed ones (over
// SLUICE_RETRY_BODY_MAX, with and without Content-Length), must go out as
// exactly the bytes whose SHA-256 was signed, or, when sluice cannot
// buffer the body within its budget to hash it, be refused with 413
// body_too_large_to_sign and not forwarded at all. A body with a
// Content-Length within the free budget must be signed and sent.
func TestWritePathSigV4(t *testing.T) {
	t.Parallel()
	store := newSigV4Store(t)
	sl := startWritePath(t, store.srv.URL,
		"SLUICE_UPSTREAM_AUTH=aws-sigv4", "SLUICE_AWS_SERVICE="+sigv4Svc, "SLUICE_AWS_REGION="+sigv4Region,
		"AWS_ACCESS_KEY_ID="+sigv4KeyID, "AWS_SECRET_ACCESS_KEY="+sigv4Secret,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	c := newWritePathClient()
	defer c.CloseIdleConnections()
	const overBudget = 2 << 20 // SLUICE_BUFFER_BUDGET is 1 MiB
	mayRefuse := []int{http.StatusRequestEntityTooLarge}
	for i, tc := range []struct {
		name    string
		method  string
		size    int
		chunked bool
		rule    writeRule
	}{
		{"buffered PUT", http.MethodPut, smallBody, false, writeRule{retryable: true}},
		{"buffered PUT chunked", http.MethodPut, smallBody, true, writeRule{retryable: true}},
		{"buffered POST", http.MethodPost, smallBody, false, writeRule{}},
		{"streamed PUT within the budget", http.MethodPut, largeBody, false, writeRule{streamed: true}},
		{"streamed POST within the budget", http.MethodPost, largeBody, false, writeRule{streamed: true}},
		{"streamed PUT chunked within the budget", http.MethodPut, largeBody, true, writeRule{streamed: true, also: mayRefuse}},
		{"streamed POST chunked within the budget", http.MethodPost, largeBody, true, writeRule{streamed: true, also: mayRefuse}},
		{"PUT over the budget", http.MethodPut, overBudget, false, writeRule{streamed: true, also: mayRefuse}},
		{"PUT chunked over the budget", http.MethodPut, overBudget, true, writeRule{streamed: true, also: mayRefuse}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("sigv4-%d", i)
			u := upload{id: id, method: tc.method, path: "/idx/_doc/" + id, body: payload(id, tc.size), chunked: tc.chunked}
			o := sendUpload(c, sl.proxy, u)
			got := store.got.of(id)
			checkWrite(t, u, o, got, tc.rule)
			if why := store.refusals(id); len(why) > 0 {
				t.Errorf("%v: the store refused what sluice sent: %v", u, why)
			}
			if o.status == http.StatusRequestEntityTooLarge {
				if o.code != "body_too_large_to_sign" {
					t.Errorf("%v: 413 %q, want sluice's body_too_large_to_sign", u, o.code)
				}
				if len(got) > 0 {
					t.Errorf("%v: refused as too large to sign, yet forwarded: the store received %v", u, got)
				}
			}
			if tc.size > overBudget/2 && o.clean2xx() {
				t.Errorf("%v: a body over the 1 MiB buffer budget was signed and sent: %v", u, o)
			}
		})
	}
	sl.checkReleased(t, 2, normalWriter(c, sl.proxy, "sigv4"))
	c.CloseIdleConnections()
	store.srv.CloseClientConnections()
	sl.checkNoLeak(t)
}
