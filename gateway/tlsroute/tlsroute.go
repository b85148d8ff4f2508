// Package tlsroute is in charge of what TLS a route between two gateways
// demands beyond a verified chain (docs/design.md, security invariant 4):
// the client configuration the relay dials a partner with (its
// certificate verified for the directory's host name, or the partner's
// pinned key and no other), and the check that a partner presenting a
// client certificate on a mutual-TLS route is the agency that signed.
package tlsroute

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/conduit-gateway/conduit/config"
)

// SPKIPin is the pin form of a certificate: the hex SHA-256 of its
// SubjectPublicKeyInfo (as HPKP and DANE SPKI pins are computed).
func SPKIPin(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// ClientConfig is the TLS configuration for delivering to an agency, from
// this gateway's base client configuration: the agency's certificate
// verified against the agencies' CA for the directory's host name, or,
// when the directory pins the agency's TLS key, that key and no other.
func ClientConfig(base *tls.Config, a *config.Agency, host string) *tls.Config {
	tc := base.Clone()
	tc.ServerName = host
	if a.TLSPin == "" {
		return tc
	}
	pin := a.TLSPin
	// The pin replaces chain verification; VerifyConnection still runs
	// and refuses any other key.
	tc.InsecureSkipVerify = true
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the gateway presented no certificate")
		}
		if got := SPKIPin(cs.PeerCertificates[0]); got != pin {
			return fmt.Errorf("the gateway's TLS key %s is not the one pinned for %s", got, a.ID)
		}
		return nil
	}
	return tc
}

// CheckClientCert enforces a mutual-TLS route: the partner that signed
// the package must have presented a client certificate on this
// connection (already verified against the agencies' CA by the handshake),
// for its own agency, and with the pinned key when there is a pin.
func CheckClientCert(a *config.Agency, peer []*x509.Certificate) error {
	if a == nil || !a.MutualTLS {
		return nil
	}
	if len(peer) == 0 {
		return fmt.Errorf("the route from %s requires mutual TLS and no client certificate was presented", a.ID)
	}
	leaf := peer[0]
	if a.TLSPin != "" && SPKIPin(leaf) != a.TLSPin {
		return fmt.Errorf("the client certificate's key is not the one pinned for %s", a.ID)
	}
	named := leaf.Subject.CommonName == a.ID
	for _, g := range a.GatewayHosts() {
		host, _ := config.HostPort(g)
		named = named || slices.Contains(leaf.DNSNames, host)
	}
	if !named {
		return fmt.Errorf("the client certificate names %q, not %s", leaf.Subject.CommonName, a.ID)
	}
	return nil
}
