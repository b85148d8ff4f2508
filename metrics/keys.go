package metrics

// KeyBackendUp sets conduit_key_backend_up: whether the key backend
// answers. The gateway's key gate sets it at each check.
func (m *Metrics) KeyBackendUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.keysUp.Set(1)
	} else {
		m.keysUp.Set(0)
	}
}
