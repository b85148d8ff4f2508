// Package deploy holds what a deployment installs beside the conduit
// binary: the systemd unit (conduit.service), hardened and checked by
// systemd-analyze in this package's tests. The README's deployment guide
// says how to install it.
package deploy

import _ "embed"

// Unit is the systemd unit, deploy/conduit.service.
//
//go:embed conduit.service
var Unit []byte
