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
	"net"
	"slices"
	"strings"

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
// Without a pin the certificate must also name the agency
// (CertNamesAgency): a valid certificate of another partner, answering
// on the agency's address, is refused. dir tells whether the host name is
// the agency's alone.
func ClientConfig(base *tls.Config, dir *config.Directory, a *config.Agency, host string) *tls.Config {
	tc := base.Clone()
	tc.ServerName = host
	if a.TLSPin == "" {
		// The chain verifies for the host; it must also be the
		// destination agency's own certificate, not another partner's
		// from the same CA that answers on that address.
		shared := hostShared(dir, a)
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the gateway presented no certificate")
			}
			return CertNamesAgency(cs.PeerCertificates[0], a, shared)
		}
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
	return CertNamesAgency(leaf, a, false)
}

// CertNamesAgency checks that a partner gateway's certificate (already
// verified against the agencies' CA) is that agency's: its common name is
// the agency's directory id, or it is issued for one of the agency's
// gateway host names in the directory. A host name counts only when it is
// a DNS name that no other agency's gateway shares (shared): an IP
// address or a name used by several gateways says nothing about which
// agency answers.
func CertNamesAgency(leaf *x509.Certificate, a *config.Agency, shared bool) error {
	if leaf.Subject.CommonName == a.ID {
		return nil
	}
	if !shared {
		for _, g := range a.GatewayHosts() {
			host, _ := config.HostPort(g)
			if net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") {
				continue
			}
			if slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return strings.EqualFold(n, host) }) {
				return nil
			}
		}
	}
	return fmt.Errorf("the certificate names %q, not %s: %w", leaf.Subject.CommonName, a.ID, ErrWrongAgencyCert)
}

// ErrWrongAgencyCert: a partner gateway presented a certificate that is
// valid but not for the agency expected.
var ErrWrongAgencyCert = errors.New("certificate of another agency")

// hostShared reports whether another agency's gateway has one of a's
// gateway hosts.
func hostShared(d *config.Directory, a *config.Agency) bool {
	if d == nil {
		return true
	}
	mine := map[string]bool{}
	for _, g := range a.GatewayHosts() {
		h, _ := config.HostPort(g)
		mine[strings.ToLower(h)] = true
	}
	for _, o := range d.Agencies {
		if o.ID == a.ID {
			continue
		}
		for _, g := range o.GatewayHosts() {
			if h, _ := config.HostPort(g); mine[strings.ToLower(h)] {
				return true
			}
		}
	}
	return false
}

// PartnerOf returns the directory agency, other than self, whose gateway
// presented this verified client certificate chain, or nil. The handshake
// (tls.VerifyClientCertIfGiven against the agencies' CA) verified the
// chain; this names whose it is.
func PartnerOf(dir *config.Directory, self string, cs tls.ConnectionState) *config.Agency {
	if dir == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	for _, a := range dir.Agencies {
		if a.ID == self {
			continue
		}
		if a.TLSPin != "" && SPKIPin(leaf) != a.TLSPin {
			continue
		}
		if CertNamesAgency(leaf, a, hostShared(dir, a)) == nil {
			return a
		}
	}
	return nil
}
