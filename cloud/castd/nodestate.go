package castd

// nodeState is castd's view of a node, for the node's own signed whoami
// (its owner's status page shows it): the control-plane state and whether
// the request router sends users to it now.
func (s *Server) nodeState(id string) (state string, routable *bool) {
	ok := true
	if s.control == nil {
		// No control plane: every registered node is routed to.
		return "", &ok
	}
	state = "unknown"
	if st, found := s.control.monitor.Get(id); found {
		state = string(st.State)
	}
	ok = s.control.routable(id)
	return state, &ok
}
