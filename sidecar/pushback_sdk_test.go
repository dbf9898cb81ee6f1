package sidecar

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// TestDynamoDBClientRetriesThePushback: an AWS SDK retries by the error
// code in the body and a short list of statuses. Until its Retry Behavior
// 2.1 (aws-sdk-go-v2 v1.48), the standard retryer took a 429 without a
// code it knew for final, as botocore's standard mode (the AWS CLI v2's
// default) does; sluice's pushback is 429 by default, so a PutItem that
// found no send slot failed at once, its item never stored. Under the
// DynamoDB profile the pushback carries DynamoDB's ThrottlingException,
// which every retry mode retries as a throttle. Run with aws-sdk-go-v2's
// DynamoDB client, with its defaults and with the rules before 2.1.
func TestDynamoDBClientRetriesThePushback(t *testing.T) {
	before21 := func(o *retry.StandardOptions) {
		o.Retryables = []retry.IsErrorRetryable{
			retry.NoRetryCanceledError{}, retry.RetryableError{}, retry.RetryableConnectionError{},
			retry.RetryableHTTPStatusCode{Codes: retry.DefaultRetryableHTTPStatusCodes}, // 500, 502, 503, 504
			retry.RetryableErrorCode{Codes: retry.DefaultRetryableErrorCodes},
			retry.RetryableErrorCode{Codes: retry.DefaultThrottleErrorCodes},
		}
	}
	for name, opts := range map[string][]func(*retry.StandardOptions){"defaults": nil, "before Retry Behavior 2.1": {before21}} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				var first sync.Once
				var stored atomic.Int32
				store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					first.Do(func() { <-release }) // the first write holds the only send slot
					stored.Add(1)
					w.Header().Set("Content-Type", "application/x-amz-json-1.0")
					_, _ = io.WriteString(w, `{}`)
				})
				s := newTestServer(t, store, "PROFILE=dynamodb", "BACKPRESSURE=reject", "MAX_CONCURRENCY=1", "RETRY_POST=true")
				client := dynamodb.New(dynamodb.Options{
					Region:       "eu-west-1",
					BaseEndpoint: aws.String("http://sluice.test"),
					Credentials:  credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
					HTTPClient:   &http.Client{Transport: memTransport{s.ProxyHandler()}},
					Retryer:      retry.NewStandard(opts...),
				})
				put := func(id string) error {
					_, err := client.PutItem(context.Background(), &dynamodb.PutItemInput{
						TableName: aws.String("events"),
						Item:      map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}},
					})
					return err
				}
				done := make(chan error, 1)
				go func() { done <- put("a") }()
				synctest.Wait() // a holds the slot
				second := make(chan error, 1)
				go func() { second <- put("b") }()
				synctest.Wait() // b was pushed back, and its SDK waits to retry, or gave up
				close(release)
				if err := <-done; err != nil {
					t.Fatalf("first PutItem: %v", err)
				}
				if err := <-second; err != nil {
					t.Errorf("PutItem pushed back by sluice: %v, want it retried by the SDK and stored", err)
				}
				if n := stored.Load(); n != 2 {
					t.Errorf("the store took %d writes, want 2", n)
				}
			})
		})
	}
}

// TestPushbackInTheStoresWords: the body and headers of sluice's pushback
// under each profile: S3's SlowDown error document, DynamoDB's
// ThrottlingException, sluice's own JSON elsewhere; sluice's code in each,
// and the Retry-After in milliseconds beside it for the AWS SDKs.
func TestPushbackInTheStoresWords(t *testing.T) {
	for _, profile := range []string{"s3", "dynamodb", "generic"} {
		t.Run(profile, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				var first sync.Once
				store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					first.Do(func() { <-release })
				})
				s := newTestServer(t, store, "PROFILE="+profile, "BACKPRESSURE=reject", "MAX_CONCURRENCY=1")
				go send(s.ProxyHandler(), context.Background(), http.MethodPut, "/bucket/a", "x")
				synctest.Wait()
				rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/bucket/b", "x")
				close(release)
				if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
					t.Fatalf("%d Retry-After %q, want a 429 pushback", rec.Code, rec.Header().Get("Retry-After"))
				}
				body := rec.Body.String()
				switch profile {
				case "s3":
					var e struct {
						Code, SluiceError string
					}
					if err := xml.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != "SlowDown" || e.SluiceError != "backpressure" ||
						!strings.HasPrefix(rec.Header().Get("Content-Type"), "application/xml") {
						t.Errorf("S3 pushback %q (%v), Content-Type %q", body, err, rec.Header().Get("Content-Type"))
					}
				case "dynamodb":
					var e struct {
						Type  string `json:"__type"`
						Error string `json:"error"`
					}
					if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !strings.HasSuffix(e.Type, "#ThrottlingException") || e.Error != "backpressure" {
						t.Errorf("DynamoDB pushback %q (%v)", body, err)
					}
				default:
					var e struct{ Error string }
					if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error != "backpressure" || rec.Header().Get("X-Amz-Retry-After") != "" {
						t.Errorf("generic pushback %q (%v), x-amz-retry-after %q", body, err, rec.Header().Get("X-Amz-Retry-After"))
					}
					return
				}
				if got, want := rec.Header().Get("X-Amz-Retry-After"), rec.Header().Get("Retry-After")+"000"; got != want {
					t.Errorf("x-amz-retry-after %q, want %q (Retry-After in ms)", got, want)
				}
			})
		})
	}
}
