package tlsroute

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/pki"
)

func leafFor(t *testing.T, ca *pki.CA, cn string, hosts ...string) *x509.Certificate {
	t.Helper()
	certPEM, _, err := ca.Issue(cn, hosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertNamesAgency(t *testing.T) {
	ca, err := pki.NewCA("test agencies CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ccu := &config.Agency{ID: "ccu-north", Gateway: "127.0.0.1:2525"}
	ccuDNS := &config.Agency{ID: "ccu-north", Gateway: "conduit.ccu-north.example:25"}
	for _, tc := range []struct {
		name   string
		leaf   *x509.Certificate
		a      *config.Agency
		shared bool
		ok     bool
	}{
		{"own common name", leafFor(t, ca, "ccu-north", "127.0.0.1"), ccu, true, true},
		{"another agency's certificate for the same IP", leafFor(t, ca, "hmp-eastmoor", "127.0.0.1", "localhost"), ccu, true, false},
		{"own DNS name", leafFor(t, ca, "conduit", "conduit.ccu-north.example"), ccuDNS, false, true},
		{"own DNS name but the host is shared", leafFor(t, ca, "conduit", "conduit.ccu-north.example"), ccuDNS, true, false},
		{"another agency's DNS name", leafFor(t, ca, "hmp-eastmoor", "conduit.hmp-eastmoor.example"), ccuDNS, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CertNamesAgency(tc.leaf, tc.a, tc.shared)
			if tc.ok != (err == nil) {
				t.Fatalf("ok=%v, err=%v", tc.ok, err)
			}
			if err != nil && !errors.Is(err, ErrWrongAgencyCert) {
				t.Fatalf("untyped error %v", err)
			}
		})
	}
}
