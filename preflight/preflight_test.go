package preflight

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/pki"
	"github.com/conduit-gateway/conduit/provision"
)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// setUp makes a gateway folder with conduit init's code and a CA, and a
// partner entry whose certificate is not there.
func setUp(t *testing.T) (dir string, ca *pki.CA) {
	t.Helper()
	root := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Now())
	tcheck(t, err, "CA")
	key, err := ca.KeyPEM()
	tcheck(t, err, "CA key")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.crt"), ca.PEM, 0o644), "write")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.key"), key, 0o600), "write")
	dir = filepath.Join(root, "gw")
	_, err = provision.Init(provision.Options{Dir: dir, Agency: "hmp-northgate", Kind: config.Prison, Region: "north-east",
		Host: "conduit.hmp-northgate.example", Mailboxes: []string{"intake@hmp-northgate.example", "governing-governor=gov@hmp-northgate.example"},
		CACert: filepath.Join(root, "ca.crt"), CAKey: filepath.Join(root, "ca.key")})
	tcheck(t, err, "init")
	f, err := os.OpenFile(filepath.Join(dir, "directory.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	tcheck(t, err, "directory")
	_, err = f.WriteString("  - {id: northshire-pio, name: PIO, kind: pio, jurisdiction: GB, gateway: conduit.northshire-pio.example, fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567, mailboxes: [{address: pio@northshire-pio.example}]}\n")
	tcheck(t, errors.Join(err, f.Close()), "append")
	tcheck(t, os.RemoveAll(filepath.Join(dir, "var")), "remove var")
	return dir, ca
}

func load(t *testing.T, dir string) *config.Config {
	t.Helper()
	c, err := config.Load(filepath.Join(dir, "conduit.yaml"))
	tcheck(t, err, "load")
	return c
}

func TestServeMakesItsFoldersAndWarnsOfAMissingPartnerCertificate(t *testing.T) {
	dir, _ := setUp(t)
	warn, err := Check(load(t, dir), time.Now(), false)
	tcheck(t, err, "check")
	if st, err := os.Stat(filepath.Join(dir, "var", "maildir")); err != nil || !st.IsDir() {
		t.Errorf("var/maildir not made: %v", err)
	}
	var partner []Finding
	for _, w := range warn {
		if strings.HasPrefix(w.What, "partner ") {
			partner = append(partner, w)
		}
	}
	if len(partner) != 1 || !strings.Contains(partner[0].String(), "partner northshire-pio") || !strings.Contains(partner[0].Fix, "0123456789ABCDEF") {
		t.Errorf("warnings %v, want one naming the partner without a certificate and its fingerprint", warn)
	}
}

func TestStartProblemsAreNamedWithWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, dir string, ca *pki.CA)
		fatal bool
		says  []string
	}{
		{"no partner folder", func(t *testing.T, dir string, _ *pki.CA) { os.RemoveAll(filepath.Join(dir, "partners")) },
			true, []string{"keys.partners", "no such file or folder", "make the folder"}},
		{"no certificate", func(t *testing.T, dir string, _ *pki.CA) { os.Remove(filepath.Join(dir, "tls", "gateway.crt")) },
			true, []string{"tls.cert", "no such file", "signed by the agencies' CA"}},
		{"no secret key", func(t *testing.T, dir string, _ *pki.CA) { os.Remove(filepath.Join(dir, "keys", "hmp-northgate.key")) },
			true, []string{"keys.secret", "no such file", "conduit init or conduit keys generate"}},
		{"another CA", func(t *testing.T, dir string, _ *pki.CA) {
			other, err := pki.NewCA("other CA", time.Now())
			tcheck(t, err, "CA")
			tcheck(t, os.WriteFile(filepath.Join(dir, "tls", "ca.crt"), other.PEM, 0o644), "write")
		}, false, []string{"does not verify against tls.ca", "only those that pin this key", "have it issued by the agencies' CA"}},
		{"certificate for another host", func(t *testing.T, dir string, ca *pki.CA) {
			reissue(t, dir, ca, "hmp-northgate", []string{"gw.elsewhere.example"})
		}, true, []string{"does not name this gateway's host conduit.hmp-northgate.example", "gw.elsewhere.example"}},
		{"certificate naming the agency by an IP address only", func(t *testing.T, dir string, ca *pki.CA) {
			reissue(t, dir, ca, "gateway", []string{"conduit.hmp-northgate.example"})
			b, _ := os.ReadFile(filepath.Join(dir, "directory.yaml"))
			os.WriteFile(filepath.Join(dir, "directory.yaml"), []byte(strings.Replace(string(b), "gateway: conduit.hmp-northgate.example\n", "gateway: 192.0.2.7\n", 1)), 0o644)
		}, true, []string{"does not name this gateway's host 192.0.2.7"}},
		{"CN not the agency", func(t *testing.T, dir string, ca *pki.CA) {
			reissue(t, dir, ca, "mail.hmp-northgate.example", []string{"conduit.hmp-northgate.example", "192.0.2.7"})
			b, _ := os.ReadFile(filepath.Join(dir, "directory.yaml"))
			os.WriteFile(filepath.Join(dir, "directory.yaml"), []byte(strings.Replace(string(b), "gateway: conduit.hmp-northgate.example\n", "gateway: 192.0.2.7\n", 1)), 0o644)
		}, false, []string{"does not name the agency hmp-northgate", "an IP address does not count", "CN hmp-northgate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, ca := setUp(t)
			tc.spoil(t, dir, ca)
			warn, err := Check(load(t, dir), time.Now(), false)
			var got string
			if tc.fatal {
				var fe Error
				if !errors.As(err, &fe) {
					t.Fatalf("no fatal finding; warnings %v", warn)
				}
				got = fe.Error()
			} else {
				if err != nil {
					t.Fatalf("fatal: %v", err)
				}
				for _, w := range warn {
					got += w.String() + "\n"
				}
			}
			for _, s := range tc.says {
				if !strings.Contains(got, s) {
					t.Errorf("%q does not say %q", got, s)
				}
			}
		})
	}
}

// reissue replaces the gateway's certificate with one for other names.
func reissue(t *testing.T, dir string, ca *pki.CA, cn string, hosts []string) {
	t.Helper()
	key, keyPEM, err := pki.NewKey()
	tcheck(t, err, "key")
	cert, err := ca.Sign(key.Public(), cn, hosts, time.Now(), 24*time.Hour)
	tcheck(t, err, "sign")
	tcheck(t, os.WriteFile(filepath.Join(dir, "tls", "gateway.key"), keyPEM, 0o600), "write key")
	tcheck(t, os.WriteFile(filepath.Join(dir, "tls", "gateway.crt"), cert, 0o644), "write cert")
}
