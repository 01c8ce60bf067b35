package beacon

import (
	"log/slog"
	"mime"
	"net/http"
)

// jsonOnly guards the local API against cross-site requests. A web page the
// router's owner visits may send a "simple" cross-origin POST (text/plain,
// form types; no preflight) to the router's LAN address, and the browser
// delivers it even though the page cannot read the answer. Every request
// that can change state must carry Content-Type: application/json, which a
// simple request cannot set without a CORS preflight that this API never
// grants, so such a request is refused (415) before any handler runs.
func jsonOnly(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.ServeHTTP(w, r)
			return
		case http.MethodOptions:
			// No CORS: a preflight gets no Access-Control-Allow-* headers,
			// so the browser never sends the real request.
			w.Header().Set("Allow", "GET, HEAD, POST")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			log.Info("local API: refused a request without a JSON content type", "method", r.Method, "path", r.URL.Path,
				"content_type", r.Header.Get("Content-Type"), "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnsupportedMediaType)
			w.Write([]byte(`{"error":"state-changing requests must be sent with Content-Type: application/json"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
