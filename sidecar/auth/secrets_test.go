package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Everything an operator can see (logs at debug level, Status as JSON,
// errors returned by Apply, metrics, Redacted configuration) is searched
// for the tokens and secrets the test handed out, including through a
// token endpoint that echoes the client secret in its error description.
func TestSecretsNeverExposed(t *testing.T) {
	const (
		clientSecret = "cl1ent-s3cret-VALUE"
		tokenPrefix  = "acc3ss-t0ken-"
	)
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		idFile, secretFile := filepath.Join(dir, "id"), filepath.Join(dir, "secret")
		writeFile(t, idFile, "client-id")
		writeFile(t, secretFile, clientSecret)

		var mu sync.Mutex
		failing := false
		n := 0
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			defer mu.Unlock()
			if failing {
				return response(req, http.StatusUnauthorized, fmt.Sprintf(
					`{"error":"invalid_client","error_description":"client secret %s is not valid for token %s1"}`, clientSecret, tokenPrefix)), nil
			}
			n++
			return response(req, 200, fmt.Sprintf(`{"access_token":"%s%d","expires_in":900}`, tokenPrefix, n)), nil
		})
		c := testConfig(SourceTokenURL)
		c.TokenURL = "https://idp.test/token?client_secret=" + clientSecret
		c.TokenURLHeaders = "Authorization=Basic " + clientSecret
		c.OAuthClientIDFile, c.OAuthClientSecretFile = idFile, secretFile
		h := newHarness(t, c, rt, nil)
		h.start(t)
		synctest.Wait()
		if got := bearer(t, h.a); got != tokenPrefix+"1" {
			t.Fatalf("token = %q", got)
		}
		mu.Lock()
		failing = true
		mu.Unlock()
		time.Sleep(20 * time.Minute) // refreshes fail, the token expires
		_, applyErr := h.a.credentialFor(context.Background())
		if applyErr == nil {
			t.Fatal("no error after expiry")
		}
		st, _ := json.Marshal(h.a.Status())
		if !strings.Contains(string(st), "invalid_client") {
			t.Errorf("Status does not show the failure: %s", st)
		}
		var cfg []string
		for k, v := range c.Redacted() {
			cfg = append(cfg, k+"="+v)
		}
		for what, text := range map[string]string{
			"logs":    h.logs.String(),
			"status":  string(st),
			"error":   applyErr.Error(),
			"metrics": metricsText(t, h.reg),
			"config":  strings.Join(cfg, "\n"),
		} {
			for _, secret := range []string{clientSecret, tokenPrefix} {
				if strings.Contains(text, secret) {
					t.Errorf("%s contain %q:\n%s", what, secret, text)
				}
			}
		}
		if !strings.Contains(h.logs.String(), "credential refresh failed") {
			t.Error("the failures were not logged")
		}
	})
}

// AWS keys and session tokens never reach logs, Status or errors, also when
// the credential chain fails with an error that quotes them.
func TestAWSSecretsNeverExposed(t *testing.T) {
	const secretKey, sessionToken = "aws-s3cret-ACCESS-key", "aws-sess10n-TOKEN"
	var mu sync.Mutex
	fail := false
	provider := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return aws.Credentials{}, fmt.Errorf("broken provider leaking %s and %s", secretKey, sessionToken)
		}
		return credentials.NewStaticCredentialsProvider("AKIDLEAK", secretKey, sessionToken).Retrieve(context.Background())
	})
	now := time.Now()
	h := newHarness(t, testConfig(SourceAWSSigV4), nil, func(o *Options) {
		o.AWSCredentials = provider
		o.Now = func() time.Time { return now }
	})
	h.a.fetch(context.Background())
	req := newRequest(t, "POST", "https://search.test/_bulk", "{}")
	if err := h.a.Apply(req); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	h.a.fetch(context.Background())
	st, _ := json.Marshal(h.a.Status())
	if !strings.Contains(string(st), "broken provider") {
		t.Errorf("Status does not show the failure: %s", st)
	}
	for what, text := range map[string]string{"logs": h.logs.String(), "status": string(st), "metrics": metricsText(t, h.reg)} {
		for _, secret := range []string{secretKey, sessionToken} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contain %q:\n%s", what, secret, text)
			}
		}
	}
}
