package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"
)

// A gateway certificate names its agency twice, so that it serves both as
// the server certificate partners verify and as the client certificate a
// mutual-TLS route checks: the Subject CN is the agency id, and the DNS
// SANs hold the gateway's host name (the directory's gateway: host), which
// partners verify when they connect. An IP address SAN is added for an
// address, but a mutual-TLS route never takes it as naming the agency.

// NewKey makes a gateway's TLS key (ECDSA P-256) and its PEM (PKCS #8).
func NewKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CSR makes a certificate signing request for a gateway: CN the agency id,
// SANs the host names and addresses. The agencies' CA signs it for both
// server and client authentication.
func CSR(key crypto.Signer, agency string, hosts []string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: agency}}
	addSANs(&tmpl.DNSNames, &tmpl.IPAddresses, hosts)
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func addSANs(dns *[]string, ips *[]net.IP, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			*ips = append(*ips, ip)
		} else {
			*dns = append(*dns, h)
		}
	}
}

// LoadCA reads a CA certificate and its private key (PEM: PKCS #8, SEC 1
// EC or PKCS #1 RSA), to issue gateway certificates from an agency's own
// private CA.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("the CA certificate file holds no PEM CERTIFICATE")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("the certificate %q is not a CA certificate (basic constraints CA:FALSE)", cert.Subject.CommonName)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("the CA key file holds no PEM private key")
	}
	var key crypto.Signer
	if k, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("the CA key cannot sign")
		}
		key = s
	} else if k, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		key = k
	} else {
		return nil, errors.New("the CA key file's key is not PKCS #8, SEC 1 EC or PKCS #1 RSA")
	}
	return &CA{Cert: cert, key: key, PEM: pem.EncodeToMemory(cb)}, nil
}

// KeyPEM returns the CA's private key in PEM (PKCS #8), for a test or a
// demonstration that hands the CA to `conduit init`.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Sign issues a gateway certificate for a public key: CN the agency id,
// SANs the hosts, for server and client authentication, valid from an
// hour before now for validity (and never beyond the CA's own expiry).
func (ca *CA) Sign(pub crypto.PublicKey, agency string, hosts []string, now time.Time, validity time.Duration) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: agency},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	addSANs(&tmpl.DNSNames, &tmpl.IPAddresses, hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue the certificate of %s: %w", agency, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// SPKIPin is the directory's tls-pin of a public key: the hex SHA-256 of
// its DER SubjectPublicKeyInfo.
func SPKIPin(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
