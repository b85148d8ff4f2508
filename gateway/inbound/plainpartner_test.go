package inbound

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
)

// TestPlainPartnerKnownByItsGatewayAddress: a partner without Conduit may
// present no client certificate; its connections are known by its
// directory gateway's address, and no other address passes for it.
func TestPlainPartnerKnownByItsGatewayAddress(t *testing.T) {
	d, err := config.LoadDirectory("directory.yaml", examples.Directory)
	if err != nil {
		t.Fatal(err)
	}
	a := d.Agency("hmp-eastmoor")
	a.Envelope, a.Gateway = config.EnvelopePGPMIME, "192.0.2.44:25"
	cfg := &config.Config{Agency: "hmp-northgate", Directory: d}
	cfg.SetDefaults()
	srv := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer srv.Close()
	srv.resolvePlainPartners()
	for _, tc := range []struct {
		ip   string
		want string
	}{{"192.0.2.44", "hmp-eastmoor"}, {"192.0.2.45", ""}, {"127.0.0.1", ""}} {
		if got := srv.plainPartnerAt(&net.TCPAddr{IP: net.ParseIP(tc.ip), Port: 40000}); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.ip, got, tc.want)
		}
	}
}
