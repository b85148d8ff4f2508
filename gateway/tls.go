package gateway

import (
	"crypto/x509"
	"fmt"
	"os"
)

// loadCA reads the PEM certificates that verify partner gateways. The
// system roots are deliberately not used: a partner is trusted because the
// agencies' CA signed its certificate, not because a public CA did.
func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls ca: %s holds no PEM certificate", path)
	}
	return pool, nil
}
