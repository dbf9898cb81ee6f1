package sidecar

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
)

// apiError is the JSON body of every error sluice itself answers with, on the
// proxy and on the admin API alike.
type apiError struct {
	Error   string         `json:"error"`   // stable snake_case code
	Message string         `json:"message"` // for humans
	Details map[string]any `json:"details,omitempty"`
}

// writeError answers with status and a JSON error body.
func writeError(w http.ResponseWriter, status int, code, msg string, details map[string]any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiError{Error: code, Message: msg, Details: details})
}

// setRetryAfter sets a Retry-After header of whole seconds, at least 1.
func setRetryAfter(h http.Header, d time.Duration) {
	secs := int64(math.Ceil(d.Seconds()))
	if secs < 1 {
		secs = 1
	}
	h.Set("Retry-After", strconv.FormatInt(secs, 10))
}

// writeJSON answers with status and v encoded as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
