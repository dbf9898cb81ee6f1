package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sidecar/classify"
)

// observedJobs admits every write and records what the proxy observes.
type observedJobs struct {
	mu  sync.Mutex
	obs []Observation
}

func (*observedJobs) Admit(ctx context.Context, _ string, _ time.Duration) (context.Context, func(), error) {
	return ctx, func() {}, nil
}

func (j *observedJobs) Observe(_ string, o Observation) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.obs = append(j.obs, o)
}

// A chunk of a resumable upload (the GCS clients' protocol for large
// objects) that the store answers 308 Resume Incomplete is progress by
// the bytes the store says it kept, not a redirect the store took nothing
// of: a long upload whose chunks counted as client errors showed no
// progress and could be taken for stalled. A 308 with a Location is a
// redirect, as before.
func TestResumableChunkIsProgress(t *testing.T) {
	const chunk = 256 << 10
	for _, tc := range []struct {
		name         string
		contentRange string
		header       http.Header // the store's 308
		want         []Observation
	}{
		{"all kept", "bytes 262144-524287/*", http.Header{"Range": {"bytes=0-524287"}},
			[]Observation{{Kind: classify.OK, Bytes: chunk, Items: -1}}},
		{"half kept", "bytes 262144-524287/*", http.Header{"Range": {"bytes=0-393215"}},
			[]Observation{{Kind: classify.OK, Bytes: chunk / 2, Items: -1}}},
		{"none kept", "bytes 0-262143/*", http.Header{}, nil},
		{"a redirect", "", http.Header{"Location": {"https://elsewhere.test/b/o"}},
			[]Observation{{Kind: classify.ClientError, Items: -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobs := &observedJobs{}
			p := storeProxy(t, classify.GCS, false, false, jobs, func(r *http.Request) (*http.Response, error) {
				_, _ = io.Copy(io.Discard, r.Body)
				return &http.Response{StatusCode: http.StatusPermanentRedirect, Header: tc.header, Body: http.NoBody, Request: r}, nil
			})
			req := httptest.NewRequest(http.MethodPut, "/upload/storage/v1/b/events/o?uploadType=resumable&upload_id=ABC",
				strings.NewReader(strings.Repeat("x", chunk)))
			if tc.contentRange != "" {
				req.Header.Set("Content-Range", tc.contentRange)
			}
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, req)
			if rec.Code != http.StatusPermanentRedirect {
				t.Errorf("the loader got %d, want the store's 308", rec.Code)
			}
			jobs.mu.Lock()
			defer jobs.mu.Unlock()
			if len(jobs.obs) != len(tc.want) {
				t.Fatalf("observed %+v, want %+v", jobs.obs, tc.want)
			}
			for i, o := range jobs.obs {
				w := tc.want[i]
				if o.Kind != w.Kind || o.Bytes != w.Bytes || o.Items != w.Items {
					t.Errorf("observed %+v, want %+v", o, w)
				}
			}
		})
	}
}
