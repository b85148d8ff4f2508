package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../examples/conduit.yaml")
	tcheck(t, err, "load example")
	d := c.Directory
	if c.Agency != "northshire-pio" || c.Self().Kind != PIO {
		t.Errorf("self %s", c.Agency)
	}
	if c.Policy != filepath.Join("..", "examples", "policy.yaml") {
		t.Errorf("policy path %q not resolved against the config file", c.Policy)
	}
	for _, tc := range []struct{ got, want string }{
		{d.PIOFor("hmp-northgate").ID, "northshire-pio"},
		{d.FIBOf("northshire-police").ID, "northshire-fib"},
		{d.RegionalCCU("north-east").ID, "ccu-north"},
		{d.RegionalCCU("yorkshire").ID, "ccu-north"},
		{d.RegionalCCU("north-west").ID, "ccu-north-west"},
		{d.RPIUFor("north-east").ID, "rpiu-north-east"},
		{d.PAS().ID, "pas"},
		{d.NationalCCU().ID, "ccu-national"},
		{d.HQ().ID, "hmpps-hq"},
		{d.Organisation("northshire-pio"), "northshire-police"},
		{d.Organisation("hmp-northgate"), "hmp-northgate"},
		{string(d.Agency("hmp-northgate").Ceiling), "OFFICIAL-SENSITIVE"},
		{string(d.Agency("pecs-northway").Ceiling), "OFFICIAL"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
	if d.PIOFor("hmp-fellside") != nil {
		t.Errorf("hmp-fellside should have no PIO")
	}
	if _, ok := d.Agency("hmp-eastmoor").Mailbox(Intake).TrainedOn(); ok {
		t.Errorf("hmp-eastmoor's intake should have no training record")
	}
	if tr, ok := d.Agency("hmp-northgate").Mailbox(Intake).TrainedOn(); !ok || tr.Format("2006-01-02") != "2026-01-09" {
		t.Errorf("training date %v %v", tr, ok)
	}
	if d.Agency("hmp-northgate").Escalation[0].Function != Duty {
		t.Errorf("escalation contacts have function duty")
	}
	if legacy := c.Legacy(); legacy["RESTRICTED"] != "OFFICIAL-SENSITIVE" {
		t.Errorf("default legacy table not in force")
	}
}

// base is a small valid directory; tests break one thing at a time.
const base = `agencies:
  - id: northshire-police
    name: Northshire Police
    kind: police-force
    region: north-east
    jurisdiction: GB
    gateway: conduit.northshire-police.example
    fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567
    mailboxes:
      - {address: intel@northshire-police.example, trained: 2026-01-01}
  - id: northshire-pio
    name: Northshire PIO
    kind: pio
    force: northshire-police
    serves: [hmp-northgate]
    jurisdiction: GB
    gateway: conduit.northshire-pio.example:2525
    fingerprint: 0123 4567 89AB CDEF 0123 4567 89AB CDEF 0123 4568
    mailboxes:
      - {address: pio@northshire-pio.example, trained: 2026-01-01}
  - id: northshire-fib
    name: Northshire FIB
    kind: fib
    force: northshire-police
    jurisdiction: GB
    gateway: conduit.northshire-fib.example
    fingerprint: 0123456789ABCDEF0123456789ABCDEF01234569
    mailboxes:
      - {address: fib@northshire-fib.example}
  - id: hmp-northgate
    name: HMP Northgate
    kind: prison
    region: north-east
    force: northshire-police
    jurisdiction: GB
    gateway: conduit.northgate.example
    fingerprint: 0123456789ABCDEF0123456789ABCDEF0123456A
    mailboxes:
      - {address: intel@northgate.example}
      - {address: governor@northgate.example, function: governing-governor}
  - id: ccu-north
    name: CCU North
    kind: ccu-regional
    covers: [north-east]
    jurisdiction: GB
    gateway: conduit.ccu-north.example
    fingerprint: 0123456789ABCDEF0123456789ABCDEF0123456B
    mailboxes:
      - {address: rcca@ccu-north.example}
  - id: ccu-national
    name: CCU
    kind: ccu-national
    jurisdiction: GB
    gateway: conduit.ccu.example
    fingerprint: 0123456789ABCDEF0123456789ABCDEF0123456C
    mailboxes:
      - {address: ccu@ccu.example}
      - {address: ncca@ccu.example, function: ncca}
  - id: pas
    name: PAS
    kind: pas
    jurisdiction: GB
    gateway: conduit.pas.example
    fingerprint: 0123456789ABCDEF0123456789ABCDEF0123456D
    mailboxes:
      - {address: pas@pas.example}
`

func lineOf(t *testing.T, src, needle string) int {
	t.Helper()
	i := strings.Index(src, needle)
	if i < 0 {
		t.Fatalf("test bug: %q not in source", needle)
	}
	return strings.Count(src[:i], "\n") + 1
}

func TestBaseDirectoryIsValid(t *testing.T) {
	d, err := LoadDirectory("dir.yaml", []byte(base))
	tcheck(t, err, "base directory")
	if d.Agency("northshire-pio").Fingerprint != "0123456789ABCDEF0123456789ABCDEF01234568" {
		t.Errorf("fingerprint not normalised: %s", d.Agency("northshire-pio").Fingerprint)
	}
}

func TestDirectoryErrorsNameFileLineAndField(t *testing.T) {
	for _, tc := range []struct {
		name       string
		old, new   string
		lineAt     string // the line the error must point at
		field      string
		reasonPart string
	}{
		{"unknown field", "    kind: pas\n", "    kind: pas\n    colour: blue\n", "colour: blue", "colour", `unknown field "colour"`},
		{"duplicate id", "  - id: pas\n", "  - id: ccu-north\n", "  - id: ccu-north\n    name: PAS", "$.agencies[6].id", `duplicate agency id "ccu-north"`},
		{"unknown kind", "kind: pas", "kind: police-advisers", "kind: police-advisers", "$.agencies[6].kind", "is not an agency kind"},
		{"PIO serving an unknown prison", "serves: [hmp-northgate]", "serves: [hmp-northgate, hmp-nowhere]", "serves: [hmp-northgate, hmp-nowhere]", "$.agencies[1].serves[1]", `serves "hmp-nowhere", which is not in the directory`},
		{"PIO serving a non-prison", "serves: [hmp-northgate]", "serves: [hmp-northgate, pas]", "serves: [hmp-northgate, pas]", "$.agencies[1].serves[1]", "not a prison"},
		{"PIO whose force is not a police force", "    force: northshire-police\n    serves", "    force: pas\n    serves", "force: pas", "$.agencies[1].force", "is a pas, not a police-force"},
		{"bad jurisdiction", "    kind: pas\n    jurisdiction: GB", "    kind: pas\n    jurisdiction: UK-ish", "jurisdiction: UK-ish", "$.agencies[6].jurisdiction", "ISO 3166-1"},
		{"bad fingerprint", "0123456789ABCDEF0123456789ABCDEF0123456D", "0123456789ABCDEF", "fingerprint: 0123456789ABCDEF\n", "$.agencies[6].fingerprint", "OpenPGP fingerprint"},
		{"bad mailbox address", "pas@pas.example", "Police Advisers <pas@pas.example>", "Police Advisers", "$.agencies[6].mailboxes[0].address", "bare mail address"},
		{"bad training date", "{address: intel@northshire-police.example, trained: 2026-01-01}", "{address: intel@northshire-police.example, trained: last spring}", "last spring", "$.agencies[0].mailboxes[0].trained", "not a date"},
		{"address shared by two agencies", "rcca@ccu-north.example", "ccu@ccu.example", "ccu@ccu.example}\n      - {address: ncca", "$.agencies[5].mailboxes[0].address", "already a mailbox of ccu-north"},
		{"national CCU without an analyst mailbox", "      - {address: ncca@ccu.example, function: ncca}\n", "", "- {address: ccu@ccu.example}", "$.agencies[5].mailboxes", "function ncca"},
		{"region covered twice", "  - id: ccu-national\n", "  - id: ccu-north-2\n    name: x\n    kind: ccu-regional\n    covers: [north-east]\n    jurisdiction: GB\n    gateway: a.example\n    fingerprint: 0123456789ABCDEF0123456789ABCDEF0123456E\n    mailboxes: [{address: x@a.example}]\n  - id: ccu-national\n", "covers: [north-east]\n    jurisdiction: GB\n    gateway: a.example", "$.agencies[5].covers[0]", "already covered by ccu-north"},
		{"a wrong YAML type", "covers: [north-east]", "covers: north-east", "covers: north-east", "", "where sequence is expected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.old) {
				t.Fatalf("test bug: %q not in base", tc.old)
			}
			src := strings.Replace(base, tc.old, tc.new, 1)
			_, err := LoadDirectory("dir.yaml", []byte(src))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *config.Error", err, err)
			}
			want := lineOf(t, src, tc.lineAt)
			if ce.File != "dir.yaml" || ce.Line != want {
				t.Errorf("error at %s:%d, want dir.yaml:%d: %v", ce.File, ce.Line, want, err)
			}
			if tc.field != "" && ce.Field != tc.field {
				t.Errorf("field %q, want %q", ce.Field, tc.field)
			}
			if !strings.Contains(ce.Reason, tc.reasonPart) {
				t.Errorf("reason %q does not say %q", ce.Reason, tc.reasonPart)
			}
			if ce.Source == "" || !strings.Contains(ce.Error(), ">") {
				t.Errorf("error does not quote the source line: %v", err)
			}
		})
	}
}

// A directory that lacks an agency some rule needs (a PAS, a FIB conduit)
// is valid: the rule refuses the packages that need it (policy's
// TestSmallDirectoryRefusesOnlyWhatNeedsAMissingAgency).
func TestDirectoryMayLackAgenciesRulesNeed(t *testing.T) {
	noConduit := strings.Replace(base, "serves: [hmp-northgate]", "serves: []", 1)
	noConduit = strings.Replace(noConduit, "    kind: fib\n", "    kind: police-force\n", 1)
	noConduit = strings.Replace(noConduit, "    force: northshire-police\n    jurisdiction: GB\n    gateway: conduit.northshire-fib", "    jurisdiction: GB\n    gateway: conduit.northshire-fib", 1)
	i := strings.Index(base, "  - id: pas\n")
	for name, src := range map[string]string{"prison without PIO or FIB": noConduit, "no PAS": base[:i]} {
		if _, err := LoadDirectory("dir.yaml", []byte(src)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestConfigInlineDirectoryKeepsLines(t *testing.T) {
	indented := "  " + strings.ReplaceAll(strings.TrimSuffix(base, "\n"), "\n", "\n  ") + "\n"
	src := "agency: northshire-pio\npolicy: policy.yaml\ndirectory:\n" + indented
	c, err := Parse("conduit.yaml", []byte(src), nil)
	tcheck(t, err, "inline directory")
	if c.DirectoryFile != "conduit.yaml" || c.Directory.Agency("pas") == nil {
		t.Errorf("inline directory not loaded")
	}
	bad := strings.Replace(src, "kind: pas", "kind: pass", 1)
	_, err = Parse("conduit.yaml", []byte(bad), nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != lineOf(t, bad, "kind: pass") || ce.Field != "$.directory.agencies[6].kind" {
		t.Errorf("inline directory error: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tcheck(t, os.WriteFile(filepath.Join(dir, "directory.yaml"), []byte(base), 0o600), "write directory")
	for _, tc := range []struct {
		name, src, want string
		line            int
	}{
		{"agency not in directory", "agency: hmp-nowhere\ndirectory: directory.yaml\npolicy: p.yaml\n", `"hmp-nowhere" is not an agency in the directory`, 1},
		{"no policy", "agency: pas\ndirectory: directory.yaml\n", "policy is missing", 1},
		{"no directory", "agency: pas\npolicy: p.yaml\n", "directory is missing", 1},
		{"directory file missing", "agency: pas\ndirectory: nowhere.yaml\npolicy: p.yaml\n", "cannot read the directory file", 2},
		{"unknown top-level field", "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\nlistne: 25\n", `unknown field "listne"`, 4},
		{"legacy marking to a non-classification", "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\nlegacy-markings: {RESTRICTED: SORTA-SECRET}\n", "not a classification", 4},
		{"syntax error", "agency: pas\ndirectory: [\n", "", 2},
		{"administrator not an address", "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\nalerts:\n  administrators: [ops@pas.example, Duty Admin]\n", `"Duty Admin" is not a mailbox address`, 5},
		{"unknown console role", "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\nusers:\n  - {name: a, address: pas@pas.example, password-hash: \"$2a$04$0123456789012345678901u8mZ.uP1U4SjJt1GJ6wDz0Tb3TtMwcS\", role: admin}\n", `"admin" is not a role; allowed: sender, receiver, supervisor, administrator`, 5},
		{"console certificate without its key", "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\nconsole:\n  cert: c.crt\n", "give console.cert and console.key together", 5},
		{"console not host:port", "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\nlisten:\n  console: 8443\n", `"8443" is not host:port`, 5},
		{"negative expiry warning", "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\nkeys:\n  expiry-warning: -24h\n", "must not be negative", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "conduit.yaml")
			tcheck(t, os.WriteFile(path, []byte(tc.src), 0o600), "write config")
			_, err := Load(path)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *config.Error", err, err)
			}
			if !strings.Contains(ce.Error(), tc.want) || ce.Line != tc.line {
				t.Errorf("error %q at line %d; want line %d saying %q", ce.Error(), ce.Line, tc.line, tc.want)
			}
		})
	}
	path := filepath.Join(dir, "conduit.yaml")
	tcheck(t, os.WriteFile(path, []byte("agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\npid-file: run/conduit.pid\nlegacy-markings: {protect: OFFICIAL}\n"), 0o600), "write")
	c, err := Load(path)
	tcheck(t, err, "valid config")
	if c.PIDFile != filepath.Join(dir, "run/conduit.pid") {
		t.Errorf("pid-file %q not resolved", c.PIDFile)
	}
	if c.Legacy()["PROTECT"] != "OFFICIAL" {
		t.Errorf("configured legacy table not used: %v", c.Legacy())
	}
}
