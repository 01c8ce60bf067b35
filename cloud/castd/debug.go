package castd

import (
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/blockcast/beacon/shared/protocol"
)

// debugProfiles are the runtime profiles the operator may read. CPU and
// trace profiles are left out: they run for seconds and cost the server
// while they do, which a stolen token should not be able to order.
var debugProfiles = map[string]bool{"heap": true, "allocs": true, "goroutine": true}

// handleDebugProfile writes one runtime profile in pprof's format, so a
// process that has run for weeks can be asked what holds its memory
// without a restart. ?gc=1 collects first so that the heap profile shows
// what is live now rather than at the last cycle.
func (s *Server) handleDebugProfile(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		s.fail(w, r, http.StatusMethodNotAllowed, "profiles take GET")
		return
	}
	if !s.requireAdmin(w, r) {
		return
	}
	name := strings.TrimPrefix(r.URL.Path, protocol.PathDebugProfile)
	p := pprof.Lookup(name)
	if !debugProfiles[name] || p == nil {
		s.fail(w, r, http.StatusNotFound, "no such profile: "+name+" (heap, allocs, goroutine)")
		return
	}
	if r.URL.Query().Get("gc") == "1" {
		runtime.GC()
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="castd-`+name+`.pb.gz"`)
	w.Header().Set("Cache-Control", "no-store")
	if err := p.WriteTo(w, 0); err != nil {
		s.log.Warn("writing profile", "profile", name, "err", err)
	}
}
