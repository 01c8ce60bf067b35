package castd

import (
	"errors"
	"net/http"

	"github.com/blockcast/beacon/cloud/registry"
)

// handleNodeDelete serves the operator's DELETE /v1/nodes/{id}: the node's
// record leaves the registry, the router and the monitor. It is also the
// way out for a damaged record (castd_registry_damaged_records), which a
// registration without the owner's delegation may not overwrite; the node
// then registers afresh.
func (s *Server) handleNodeDelete(w http.ResponseWriter, r *http.Request, id string) {
	if !s.requireAdmin(w, r) {
		return
	}
	err := s.reg.Delete(id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "no node "+truncate(id, 64))
		return
	case err != nil:
		s.log.Error("deleting node", "id", truncate(id, 64), "err", err)
		s.fail(w, r, http.StatusInternalServerError, "registry: "+err.Error())
		return
	}
	s.router.Remove(id)
	if s.control != nil {
		s.control.monitor.Forget(id)
		s.control.forget(id) // no more probes
	}
	s.log.Warn("node deleted by the operator", "id", truncate(id, 64), "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}
