package castd

import (
	"errors"
	"net/http"

	"github.com/blockcast/beacon/cloud/registry"
)

// handleNodeDelete serves the operator's DELETE /v1/nodes/{id}: the node's
// record leaves the registry, the router and the monitor, and its session
// on the embedded broker is closed. (A node may register again, as any
// new node may.) It is also the
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
	s.mc.forgetNode(id) // its DTLS channel too
	if s.control != nil {
		s.control.monitor.Forget(id)
		s.control.forget(id) // no more probes
		if s.control.broker != nil {
			// Its control-plane session too; with an external broker the
			// session lasts, but the monitor no longer takes its messages.
			if n := s.control.broker.Disconnect(id); n > 0 {
				s.log.Info("closed the deleted node's MQTT sessions", "id", truncate(id, 64), "sessions", n)
			}
		}
	}
	s.log.Warn("node deleted by the operator", "id", truncate(id, 64), "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}
