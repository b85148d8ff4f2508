package relay

import (
	"context"
	"errors"
	"net"
	"testing"
)

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	addr := l.Addr().String()
	l.Close()
	return addr
}

// An agency with several gateways: the relay tries them in order of
// preference and passes over one that cannot be reached or verified, with
// the same TLS checks on each.
func TestRelayTriesTheAgencysNextGateway(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name      string
		hosts     func(good, rogue string) []string
		delivered bool
	}{
		{"first down, second up", func(good, _ string) []string { return []string{deadAddr(t), good} }, true},
		{"first unverified, second up", func(good, rogue string) []string { return []string{rogue, good} }, true},
		{"first up", func(good, _ string) []string { return []string{good, deadAddr(t)} }, true},
		{"all down", func(_, _ string) []string { return []string{deadAddr(t), deadAddr(t)} }, false},
		{"only an unverified one", func(_, rogue string) []string { return []string{deadAddr(t), rogue} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := startRelayPeer(t, ca)
			rogue := startRelayPeer(t, newTestCA(t)) // its certificate is not the agencies' CA's
			g := testRelay(t, ca, good.addr)
			a := g.directory.Agency("hmp-northgate")
			a.Gateways = tc.hosts(good.addr, rogue.addr)
			a.Gateway = a.Gateways[0]
			pool := newRelayPool(4, sessionIdle)
			defer pool.close()
			_, err := g.send(context.Background(), pool, relayItem("pkg"), nil)
			if tc.delivered {
				tcheck(t, err, "send")
				good.deliveredOnce(t, "pkg")
			} else {
				var re *relayError
				if !errors.As(err, &re) || re.permanent {
					t.Fatalf("err = %v, want a temporary failure (retried later)", err)
				}
			}
			if len(rogue.got) != 0 {
				t.Errorf("the unverified gateway was given %v", rogue.got)
			}
		})
	}
}
