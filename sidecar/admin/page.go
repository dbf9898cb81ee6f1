package admin

import "net/http"

// pageRoutes registers what the status page reads beyond the API.
func (s *API) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/history", s.handleHistory)
}
