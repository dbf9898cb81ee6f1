package classify

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{
		"0", "1", "120", "1.5", "0.250", "3600", "3601", "-1", "+5", "1e3", "0x10", "Inf", "",
		"Fri, 14 Mar 2025 09:27:23 GMT", "Friday, 14-Mar-25 09:27:23 GMT", "Fri Mar 14 09:27:23 2025",
		"Fri, 14 Mar 2025 09:27:23 GMT garbage", "99999999999999999999999",
	} {
		f.Add(s, testNow.Unix())
	}
	f.Fuzz(func(t *testing.T, v string, nowUnix int64) {
		now := time.Unix(nowUnix, 0)
		d, ok := ParseRetryAfter(v, now)
		if d < 0 || d > MaxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %v, out of [0, %v]", v, d, MaxRetryAfter)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v, false; a failure must return 0", v, d)
		}
		if d2, ok2 := ParseRetryAfter(v, now); d2 != d || ok2 != ok {
			t.Fatalf("ParseRetryAfter(%q) is not deterministic", v)
		}
		// Plain integers agree with strconv.
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			wantOK := n <= uint64(MaxRetryAfter/time.Second)
			if ok != wantOK || (ok && d != time.Duration(n)*time.Second) {
				t.Fatalf("ParseRetryAfter(%q) = %v, %v; strconv says %d", v, d, ok, n)
			}
		}
		// A successful delta-seconds value survives a round trip.
		if ok && v != "" && v[0] >= '0' && v[0] <= '9' {
			back := strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
			if d2, ok2 := ParseRetryAfter(back, now); !ok2 || (d2-d).Abs() > time.Microsecond {
				t.Fatalf("ParseRetryAfter(%q) = %v, but %q parses to %v, %v", v, d, back, d2, ok2)
			}
		}
	})
}

func FuzzClassify(f *testing.F) {
	seeds := []struct {
		p      Profile
		status int
		ra     string
		code   string
		body   string
	}{
		{Generic, 429, "3", "", ""},
		{Generic, 503, "Fri, 14 Mar 2025 09:27:23 GMT", "", ""},
		{S3, 503, "", "", s3SlowDown},
		{S3, 400, "", "", s3RequestTimeout},
		{GCS, 429, "", "", gcsObjectRateLimit},
		{GCS, 403, "", "", gcsQuotedReason},
		{DynamoDB, 400, "", "", ddbProvisioned},
		{DynamoDB, 400, "", "ThrottlingException:http://internal.amazon.com/", ""},
		{DynamoDB, 400, "", "", ddbTxThrottled},
		{Elasticsearch, 429, "", "", esRejected},
		{Elasticsearch, 429, "", "", esBreaker},
		{VictoriaMetrics, 503, "", "", vmInsertLimit},
		{VictoriaMetrics, 503, "", "", vmInsertLimitOld},
		{ClickHouse, 500, "", "252", chTooManyParts},
		{ClickHouse, 500, "", "", chTooManyPartitons},
		{ClickHouse, 500, "", "", "Code: 202"},
		{ClickHouse, 200, "", "252", chTooManyParts},
		{Profile(200), 599, "1.5", "", `{"__type":`},
	}
	for _, s := range seeds {
		f.Add(uint8(s.p), s.status, s.ra, s.code, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, profile uint8, status int, retryAfter, code string, body []byte) {
		p := Profile(profile % uint8(numProfiles+1)) // every profile and one invalid
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		if code != "" {
			h.Set("X-Amzn-ErrorType", code)
			h.Set("X-ClickHouse-Exception-Code", code)
		}
		p.WantsBody(status, h)
		r := p.Classify(status, h, body, testNow)
		checkResultInvariants(t, r)
		if r.Kind == Timeout || r.Kind == Unreachable {
			t.Fatalf("Classify returned %v, which only the proxy sets: %+v", r.Kind, r)
		}
		if r.Items != -1 || r.Rejected != 0 || r.Failed != 0 {
			t.Fatalf("Classify counted items: %+v", r)
		}
		if r.Share != 0 && r.Share != 1 {
			t.Fatalf("a whole response has Share 0 or 1: %+v", r)
		}
		if status >= 200 && status <= 299 && r.Kind != OK && !(p == ClickHouse && code != "") {
			t.Fatalf("%v.Classify(%d) = %+v, a 2xx is OK (but ClickHouse's with an exception code)", p, status, r)
		}
		if r.Kind == OK && (status < 100 || status > 399) {
			t.Fatalf("%v.Classify(%d) = %+v, only 1xx-3xx are OK", p, status, r)
		}
		if r2 := p.Classify(status, h, body, testNow); r2 != r {
			t.Fatalf("Classify is not deterministic: %+v then %+v", r, r2)
		}
	})
}

func FuzzScanner(f *testing.F) {
	big, _ := bulkResponse(50, 3)
	for _, s := range []string{
		esBulkPartial, esBulkPretty, esBulkTricky, string(big),
		`{"items":[{"index":{"status":429}}]}`,
		`{"items":[{"index":{"\u0073tatus":429,"status":201}}]}`,
		`{"items":[{"index":{"status":-429}},{"index":{"status":2e2}}]}`,
		`{"\u0069tems":[{"index":{"st\"atus":429}}]}`,
		`{"items":[{"index":{"stat\u00e9":429,"status"`, "", "]]]", `"\`,
	} {
		f.Add([]byte(s), uint64(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, seed uint64) {
		whole := scan(body)
		checkResultInvariants(t, whole)
		if whole.Kind != OK && whole.Kind != Throttled {
			t.Fatalf("scanner kind %v", whole.Kind)
		}
		if (whole.Kind == Throttled) != (whole.Rejected > 0) || whole.Items < -1 || whole.Failed < 0 ||
			whole.Items == -1 && (whole.Kind != OK || whole.Rejected != 0 || whole.Failed != 0) {
			t.Fatalf("inconsistent counts: %+v", whole)
		}
		// Chunking invariance: any split gives the same Result.
		chunks := randomChunks(seed, len(body))
		if got := scan(body, chunks...); got != whole {
			t.Fatalf("split %v: %+v, whole: %+v", chunks, got, whole)
		}
		if got := scanBytewise(body); got != whole {
			t.Fatalf("byte by byte: %+v, whole: %+v", got, whole)
		}
		// On valid JSON the scanner agrees with encoding/json.
		if ref, ok := referenceBulk(body); ok && ref != whole {
			t.Fatalf("encoding/json reference: %+v, scanner: %+v", ref, whole)
		}
	})
}

func checkResultInvariants(t *testing.T, r Result) {
	t.Helper()
	if r.Kind > Unreachable {
		t.Fatalf("kind out of range: %+v", r)
	}
	if r.Reason == "" {
		t.Fatalf("empty reason: %+v", r)
	}
	for _, c := range []byte(r.Reason) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			t.Fatalf("reason %q is not snake_case", r.Reason)
		}
	}
	if !(r.Share >= 0 && r.Share <= 1) {
		t.Fatalf("share out of [0, 1]: %+v", r)
	}
	if (r.Share == 0) != (r.Kind == OK) {
		t.Fatalf("share must be 0 exactly when OK: %+v", r)
	}
	if r.RetryAfter < 0 || r.RetryAfter > MaxRetryAfter {
		t.Fatalf("retry-after out of range: %+v", r)
	}
}

// randomChunks splits n bytes into chunks of 1 to 64, drawn from seed.
func randomChunks(seed uint64, n int) []int {
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	var chunks []int
	for rest := n; rest > 0; {
		c := 1 + rng.IntN(max(1, min(rest, 64)))
		chunks = append(chunks, c)
		rest -= c
	}
	return chunks
}
