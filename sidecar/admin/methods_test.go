package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestMethodNotAllowedListsHead: a 405's Allow names every method the
// path serves, HEAD with GET (the mux serves HEAD wherever it serves GET),
// so that a client choosing a method from it is not told HEAD is refused.
func TestMethodNotAllowedListsHead(t *testing.T) {
	h := New(Config{}, Deps{}).Handler()
	for _, tc := range []struct{ method, path, allow string }{
		{"PUT", "/v1/status", "GET, HEAD"},
		{"DELETE", "/v1/jobs", "GET, HEAD, POST"},
		{"GET", "/quitquitquit", "POST"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"), tc.allow)
		}
	}
}
