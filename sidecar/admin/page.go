package admin

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"time"

	"github.com/sluice-dev/sluice/sidecar/apierror"
)

// web holds the status page: one HTML file, its script, its style sheet
// and an icon. They are embedded so the page works where the sidecar has
// no internet access, and the binary is all there is to ship.
//
//go:embed web
var web embed.FS

// pageCSP is the page's Content-Security-Policy: everything from this
// listener only, no inline script or style, no plugins, no framing (an
// admin page framed by another site could be clicked through), and no
// form posts anywhere (the page's actions are fetches it makes itself).
const pageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// assetTypes are the content types of the page's files, named here rather
// than looked up in the host's MIME tables, which vary.
var assetTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// pageAssets are the embedded files by name, read once.
var pageAssets = func() map[string]asset {
	out := map[string]asset{}
	entries, err := fs.ReadDir(web, "web")
	if err != nil {
		panic("BUG: the embedded page is missing: " + err.Error())
	}
	for _, e := range entries {
		ctype, ok := assetTypes[path.Ext(e.Name())]
		if e.IsDir() || !ok {
			continue
		}
		b, err := fs.ReadFile(web, "web/"+e.Name())
		if err != nil {
			panic("BUG: reading the embedded page: " + err.Error())
		}
		sum := sha256.Sum256(b)
		out[e.Name()] = asset{body: b, contentType: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}()

// pageRoutes registers the status page (GET /, read-only: its actions are
// calls to the jobs API, authorized there) and what it reads beyond the
// API.
func (s *API) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, "index.html") })
	mux.HandleFunc("GET /ui/{name}", func(w http.ResponseWriter, r *http.Request) {
		if name := r.PathValue("name"); name != "index.html" { // the page has one address, so its relative links resolve
			serveAsset(w, r, name)
			return
		}
		apierror.Write(w, http.StatusNotFound, "not_found", "the page is at /", nil)
	})
	mux.HandleFunc("GET /ui/page.json", func(w http.ResponseWriter, r *http.Request) {
		apierror.WriteJSON(w, http.StatusOK, s.pageInfo(mux, r))
	})
	mux.HandleFunc("GET /v1/history", s.handleHistory)
}

// PageInfo is what the page needs to know of this sluice beyond the API:
// which job actions exist (an older or newer sluice may lack one or have
// more), and how the actions are authorized, so that it can say so
// before an operator tries one.
type PageInfo struct {
	Actions map[string]bool `json:"actions"`
	// TokenRequired: SLUICE_ADMIN_TOKEN is set, so actions need it.
	// Otherwise they are accepted from loopback callers only, and
	// Loopback says whether this caller is one that is trusted as such (a
	// page loaded by a host name other than localhost is not: see
	// refuseRebound).
	TokenRequired bool `json:"token_required"`
	Loopback      bool `json:"loopback"`
}

// pageActions are the job actions the page offers where they exist.
var pageActions = []string{"cancel", "complete", "reopen"}

func (s *API) pageInfo(mux *http.ServeMux, r *http.Request) PageInfo {
	// A page loaded by a host name other than localhost is refused as a
	// loopback caller (refuseRebound): it must not be told it is one.
	info := PageInfo{Actions: map[string]bool{}, TokenRequired: s.cfg.Token != "", Loopback: isLoopback(r.RemoteAddr) && !rebindable(r)}
	for _, a := range pageActions {
		// Ask the mux rather than keep a list, so that the page offers an
		// action exactly when its route is registered.
		probe, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, "/v1/jobs/job/"+a, nil)
		_, pattern := mux.Handler(probe)
		info.Actions[a] = pattern != "" && pattern != "/"
	}
	return info
}

// serveAsset answers one embedded file with the page's security headers.
// Cache-Control: no-cache with an ETag makes a browser revalidate each
// file, so an upgraded sidecar never runs an old script against a new API.
func serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := pageAssets[name]
	if !ok {
		apierror.Write(w, http.StatusNotFound, "not_found", "no such endpoint: "+apierror.Truncate(r.URL.Path, 200), nil)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	if r.Header.Get("Range") != "" {
		// The assets are small and served whole: a Range that does not
		// fit would get net/http's plain-text 416, where every admin
		// error is JSON.
		r = r.Clone(r.Context())
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}
