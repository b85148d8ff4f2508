package config

import (
	"strings"
	"testing"
)

// Two agencies, one of them a partner not on Conduit, is a whole
// directory: no force, PAS, CCU or invented gateway is needed.
func TestTwoAgencyDirectoryIsValid(t *testing.T) {
	src := `agencies:
  - id: northshire-pio
    name: Northshire Police PIO unit
    kind: pio
    jurisdiction: GB
    serves: [hmp-northgate]
    gateway: localhost:11525
    fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567
    mailboxes: [{address: pio@northshire.police.example}]
  - id: hmp-northgate
    name: HMP Northgate
    kind: prison
    region: north-east
    jurisdiction: GB
    gateway: conduit-gw.hmp-northgate.example
    fingerprint: 89ABCDEF0123456789ABCDEF0123456789ABCDEF
    mailboxes:
      - {address: intel@northgate.example}
      - {address: governor@northgate.example, function: governing-governor}
  - id: northshire-fib
    name: Northshire force intelligence bureau (not on Conduit)
    kind: fib
    force: northshire-police
    jurisdiction: GB
    mailboxes: [{address: fib@northshire.police.example}]
`
	d, err := LoadDirectory("directory.yaml", []byte(src))
	tcheck(t, err, "small directory")
	if d.PAS() != nil || d.NationalCCU() != nil || d.RegionalCCU("north-east") != nil {
		t.Errorf("agencies found that the directory does not list")
	}
	if d.PIOFor("hmp-northgate").ID != "northshire-pio" || d.FIBOf("northshire-police").ID != "northshire-fib" {
		t.Errorf("indexes not built")
	}
}

func TestGatewayAndFingerprintGoTogether(t *testing.T) {
	base := `agencies:
  - id: hmp-northgate
    name: HMP Northgate
    kind: prison
    region: north-east
    jurisdiction: GB
%s    mailboxes:
      - {address: intel@northgate.example}
      - {address: governor@northgate.example, function: governing-governor}
`
	for _, tc := range []struct{ extra, want string }{
		{"    gateway: gw.northgate.example\n", "has a gateway but no fingerprint: give its OpenPGP fingerprint"},
		{"    fingerprint: 89ABCDEF0123456789ABCDEF0123456789ABCDEF\n", "has a fingerprint but no gateway"},
	} {
		_, err := LoadDirectory("directory.yaml", []byte(strings.Replace(base, "%s", tc.extra, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "directory.yaml:") {
			t.Errorf("%q: got %v, want an error with its line saying %q", tc.extra, err, tc.want)
		}
	}
}

func TestGatewayHostNamesFollowRFC1123(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
		says string
	}{
		{"localhost:11525", true, ""},
		{"localhost", true, ""},
		{"conduit.hmp-northgate.example", true, ""},
		{"conduit.hmp-northgate.example.:25", true, ""},
		{"127.0.0.1:2525", true, ""},
		{"[::1]:2525", true, ""},
		{"[2001:db8::1]", true, ""},
		{"gw_1.example", false, `holds '_'`},
		{"-gw.example", false, "begins or ends with a hyphen"},
		{"gw..example", false, "empty label"},
		{strings.Repeat("a", 64) + ".example", false, "longer than 63"},
		{"gw.example:0", false, "not a number from 1 to 65535"},
		{"gw.example:smtp", false, "not a number from 1 to 65535"},
		{"2001:db8::1", false, "needs brackets"},
		{"", false, "empty"},
	} {
		err := CheckHostPort(tc.addr)
		if tc.ok != (err == nil) {
			t.Errorf("%q: err %v, want ok=%v", tc.addr, err, tc.ok)
			continue
		}
		if err != nil && (!strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "expected") && !strings.Contains(err.Error(), "from 1 to 65535")) {
			t.Errorf("%q: %v does not say %q and what is expected", tc.addr, err, tc.says)
		}
	}
}

func TestGatewayHostPortDefaultsToSMTP(t *testing.T) {
	for _, tc := range []struct{ gw, host, addr string }{
		{"conduit.hmp-northgate.example", "conduit.hmp-northgate.example", "conduit.hmp-northgate.example:25"},
		{"localhost:11525", "localhost", "localhost:11525"},
		{"[2001:db8::1]", "2001:db8::1", "[2001:db8::1]:25"},
		{"[2001:db8::1]:2525", "2001:db8::1", "[2001:db8::1]:2525"},
		{"", "", ""},
	} {
		a := &Agency{Gateway: tc.gw}
		if h, addr := a.GatewayHostPort(); h != tc.host || addr != tc.addr {
			t.Errorf("%q: %q %q, want %q %q", tc.gw, h, addr, tc.host, tc.addr)
		}
	}
}
