package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
)

// demoAgencies are the gateways the demo runs: a police PIO unit, the
// RPIU, two prisons, the regional and the national CCU, and PAS (which the
// high-risk rule copies in).
var demoAgencies = []string{"northshire-pio", "rpiu-north-east", "hmp-northgate", "hmp-eastmoor", "ccu-north", "ccu-national", "pas"}

type demoScenario struct {
	title   string
	to      string // agency addressed
	subject string
	label   string
	headers []string
	// refused: the submission must be refused with a reply containing this.
	refused string
	// expect: agencies that must receive it (nothing else may).
	expect []string
	absent []string // agencies that must not receive it
}

const demoLabelBase = `v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=%s; sanitised=%s; originator=northshire-pio; reference=%s`

func demoScenarios() []demoScenario {
	return []demoScenario{
		{
			title: "Routine dissemination to a prison whose intake has no trained holder", to: "hmp-eastmoor",
			subject: "Drugs through visits, hall B",
			label:   fmt.Sprintf(demoLabelBase, "prison-security", "yes", "NP-DEMO-1"),
			expect:  []string{"hmp-eastmoor"},
		},
		{
			title: "The governing governor of HMP Northgate is a subject", to: "hmp-northgate",
			subject: "Allegation concerning the governor",
			label:   fmt.Sprintf(demoLabelBase, "corruption-prison", "yes", "NP-DEMO-2"),
			headers: []string{"Conduit-Topic: corruption", "Conduit-Subject: role=governing-governor; establishment=hmp-northgate"},
			expect:  []string{"ccu-north", "rpiu-north-east"},
			absent:  []string{"hmp-northgate"},
		},
		{
			title: "An escape is planned", to: "hmp-northgate",
			subject: "Escape plan during hospital escort",
			label:   fmt.Sprintf(demoLabelBase, "prison-security", "yes", "NP-DEMO-3"),
			headers: []string{"Conduit-Risk: escape"},
			expect:  []string{"hmp-northgate"},
		},
		{
			title: "A SECRET package", to: "hmp-northgate",
			subject: "Source report",
			label:   strings.Replace(fmt.Sprintf(demoLabelBase, "crime", "yes", "NP-DEMO-4"), "OFFICIAL-SENSITIVE", "SECRET", 1),
			refused: "classification-ceiling",
		},
		{
			title: "An unsanitised package", to: "hmp-eastmoor",
			subject: "Raw source debrief",
			label:   fmt.Sprintf(demoLabelBase, "prison-security", "no", "NP-DEMO-5"),
			refused: "sanitised-to-disseminate",
		},
	}
}

func demoMessageFor(from, to string, s demoScenario) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d.demo@northshire-pio.example>\r\nHandling-Label: %s\r\n",
		from, to, s.subject, time.Now().Format(time.RFC1123Z), time.Now().UnixNano(), s.label)
	for _, h := range s.headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\nDemo intelligence text: nothing real.\r\n")
	return []byte(b.String())
}

// runGatewayDemo runs several agencies' gateways on loopback and drives
// real packages through them over SMTP with TLS.
func runGatewayDemo(ctx context.Context, w io.Writer, keep, stay bool) (err error) {
	say := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "conduit-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	say("Conduit demo: %d agency gateways on loopback, real SMTP with TLS, real packages", len(demoAgencies))
	say("(working directory %s)", dir)
	say("")
	bed, err := testbed.Create(dir, bin, testbed.Options{RetryMin: "500ms", RetryMax: "2s", Console: true})
	if err != nil {
		return err
	}
	defer bed.StopAll()
	if err := bed.StartAll(ctx, demoAgencies...); err != nil {
		return err
	}
	say("1. Gateways started, each with its own OpenPGP key, TLS certificate, SQLite queue and Maildir:")
	for _, id := range demoAgencies {
		a := bed.Directory.Agency(id)
		say("   %-16s %-14s inbound %s  key %s", id, a.Kind, bed.Nodes[id].Inbound, a.Fingerprint[:16]+"...")
	}

	say("")
	say("   Web consoles (HTTPS, certificate from the demo CA %s; each account's password is the same):", filepath.Join(dir, "ca.crt"))
	for _, c := range []struct{ id, users string }{
		{"northshire-pio", "northshire-pio (sender), northshire-pio-supervisor, northshire-pio-admin"},
		{"ccu-north", "ccu-north-receiver (receiver), ccu-north-admin"},
	} {
		n := bed.Nodes[c.id]
		say("   %-16s https://%s/  sign in as %s, password %s", c.id, n.Console, c.users, n.Password)
	}
	if !stay {
		say("   (run `conduit demo --stay` to keep the gateways and consoles running after the demo)")
	}

	from := bed.Nodes["northshire-pio"].Address
	say("")
	say("2. The Northshire PIO (%s) submits packages over SMTP (STARTTLS, AUTH):", from)
	var failures []string
	scen := demoScenarios()
	for i, s := range scen {
		to := bed.Directory.Agency(s.to).Mailboxes[0].Address
		resp, err := bed.Submit(ctx, "northshire-pio", []string{to}, demoMessageFor(from, to, s))
		say("")
		say("   %c) %s, addressed to %s", 'a'+i, s.title, s.to)
		switch {
		case s.refused != "" && err != nil && strings.Contains(err.Error(), s.refused):
			say("      refused: %s", err)
		case s.refused != "":
			failures = append(failures, fmt.Sprintf("%s: expected a refusal by %s, got %v %s", s.title, s.refused, err, resp))
			say("      UNEXPECTED: %v %s", err, resp)
		case err != nil:
			failures = append(failures, fmt.Sprintf("%s: refused: %v", s.title, err))
			say("      UNEXPECTED refusal: %v", err)
		default:
			say("      accepted: %s", resp)
		}
	}

	// A tampered envelope on the wire: sealed by the PIO's key, its outer
	// marking lowered to OFFICIAL in transit.
	say("")
	say("   f) A package tampered with in transit, injected at HMP Northgate's inbound port")
	tampered, err := demoTampered(ctx, bed)
	if err != nil {
		return err
	}
	resp, err := bed.Inject(ctx, "hmp-northgate", "conduit@northshire-pio.example",
		[]string{bed.Directory.Agency("hmp-northgate").Mailboxes[0].Address}, tampered)
	if err != nil && strings.Contains(err.Error(), "quarantined") {
		say("      refused: %s", err)
	} else {
		failures = append(failures, fmt.Sprintf("tampered package not quarantined: %v %s", err, resp))
		say("      UNEXPECTED: %v %s", err, resp)
	}

	// Wait for every expected delivery.
	want := map[string]int{}
	for _, s := range scen {
		for _, a := range s.expect {
			want[a]++
		}
	}
	testbed.WaitFor(ctx, 30*time.Second, func() bool {
		for a, n := range want {
			if countDelivered(bed, a) < n {
				return false
			}
		}
		return true
	})

	say("")
	say("3. What each agency received, and why:")
	for _, id := range demoAgencies {
		boxes := bed.AllDelivered(id)
		if len(boxes) == 0 {
			say("   %-16s nothing", id)
			continue
		}
		var names []string
		for box := range boxes {
			names = append(names, box)
		}
		sort.Strings(names)
		for _, box := range names {
			for _, f := range boxes[box] {
				h, err := readHeaderFile(f)
				if err != nil {
					continue
				}
				say("   %-16s %s", id, h.Get("Subject"))
				say("   %-16s   to %s, signed by %s; inbound rules: %s", "", box, signerOf(h.Get(envelope.VerifiedHeader)), h.Get("Conduit-Decision"))
			}
		}
	}
	for _, s := range scen {
		for _, a := range s.absent {
			if countDeliveredSubject(bed, a, s.subject) > 0 {
				failures = append(failures, fmt.Sprintf("%s: %s received it", s.title, a))
			}
		}
		for _, a := range s.expect {
			if countDeliveredSubject(bed, a, s.subject) == 0 {
				failures = append(failures, fmt.Sprintf("%s: %s did not receive it", s.title, a))
			}
		}
	}
	q, _ := quarantineCount(ctx, bed, "hmp-northgate")
	say("")
	say("4. HMP Northgate's quarantine holds %d message(s); `conduit quarantine list --config %s` shows it.", q, bed.Nodes["hmp-northgate"].Config)

	say("")
	say("5. Signed receipts the Northshire PIO holds for what it sent:")
	testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(demoReceipts(ctx, bed)) >= len(want) })
	for _, line := range demoReceipts(ctx, bed) {
		say("   %s", line)
	}

	say("")
	say("6. The regional CCU has not triaged the report about the governor. Its gateway's clock is moved")
	say("   73 hours ahead (a test hook, never in a deployment): the 72-hour triage clock runs out.")
	if err := bed.MoveClock("ccu-north", 73*time.Hour); err != nil {
		return err
	}
	contact := bed.Directory.Agency("ccu-north").Escalation[0].Address
	if testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(bed.Delivered("ccu-north", contact)) > 0 }) {
		h, _ := readHeaderFile(bed.Delivered("ccu-north", contact)[0])
		say("   alert to %s: %s", contact, h.Get("Subject"))
	} else {
		failures = append(failures, "no overdue triage alert at ccu-north")
	}

	if stay {
		say("")
		say("   The gateways and their consoles keep running (addresses above); press Ctrl-C to stop them.")
		wait, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		<-wait.Done()
		stop()
	}
	bed.StopAll()
	say("")
	say("7. Every gateway stopped; each one's audit trail is checked with `conduit audit verify`:")
	for _, id := range demoAgencies {
		out, err := exec.CommandContext(ctx, bin, "audit", "verify", "--config", bed.Nodes[id].Config).CombinedOutput()
		line := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
		say("   %-16s %s", id, line)
		if err != nil {
			failures = append(failures, fmt.Sprintf("audit verify %s: %v %s", id, err, line))
		}
	}
	say("")
	if len(failures) > 0 {
		for _, f := range failures {
			say("FAILED: %s", f)
		}
		return errors.New("demo: some packages did not go where the policy says")
	}
	say("Every package went where the sharing policy says and nowhere else, was receipted, and every audit chain is intact.")
	return nil
}

func countDelivered(b *testbed.Bed, id string) int {
	n := 0
	for _, files := range b.AllDelivered(id) {
		n += len(files)
	}
	return n
}

func countDeliveredSubject(b *testbed.Bed, id, subject string) int {
	n := 0
	for _, files := range b.AllDelivered(id) {
		for _, f := range files {
			if h, err := readHeaderFile(f); err == nil && strings.Contains(h.Get("Subject"), subject) {
				n++
			}
		}
	}
	return n
}

func readHeaderFile(path string) (textproto.Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return textproto.Header{}, err
	}
	defer f.Close()
	return textproto.ReadHeader(bufio.NewReader(f))
}

func signerOf(verified string) string {
	for _, p := range strings.Split(verified, ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && k == "signer" {
			return v
		}
	}
	return "?"
}

// demoTampered seals a real package from the PIO to HMP Northgate with
// the bed's keys and lowers its outer marking, as an attacker on the wire
// might.
func demoTampered(ctx context.Context, bed *testbed.Bed) ([]byte, error) {
	id, err := (&keys.File{Path: filepath.Join(bed.Dir, "northshire-pio", "keys", "northshire-pio.key")}).Identity(ctx)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(bed.Dir, "certs", "hmp-northgate.pub.asc"))
	if err != nil {
		return nil, err
	}
	c, err := keys.ReadCert(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	l, err := envelope.ParseLabelPartial(fmt.Sprintf(demoLabelBase, "prison-security", "yes", "NP-DEMO-6"))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	msg := "Subject: Tampered in transit\r\nContent-Type: text/plain\r\n\r\nDemo text.\r\n"
	if _, err := envelope.Seal(ctx, &out, strings.NewReader(msg), envelope.SealParams{
		Signer: id, Recipients: []*keys.Cert{c}, Label: l,
	}); err != nil {
		return nil, err
	}
	return bytes.Replace(out.Bytes(), []byte("SIO-Label: marking=OFFICIAL-SENSITIVE"), []byte("SIO-Label: marking=OFFICIAL"), 1), nil
}

// demoReceipts lists the receipts the PIO's store holds, one line each.
func demoReceipts(ctx context.Context, b *testbed.Bed) []string {
	st, err := store.OpenSQLite(ctx, filepath.Join(b.Nodes["northshire-pio"].Dir, "conduit.db"))
	if err != nil {
		return nil
	}
	defer st.Close()
	items, err := st.List(ctx, store.Filter{State: store.Sent})
	if err != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		rs, _ := st.Receipts(ctx, it.PackageID)
		for _, r := range rs {
			if r.Agency == it.Destination {
				out = append(out, fmt.Sprintf("%s  %-16s delivered to %s", it.PackageID, r.Agency, strings.Join(r.Mailboxes, ", ")))
			}
		}
	}
	sort.Strings(out)
	return out
}

// quarantineCount reads a node's quarantine from its store (SQLite lets
// a reader in beside the running gateway).
func quarantineCount(ctx context.Context, b *testbed.Bed, id string) (int, error) {
	st, err := store.OpenSQLite(ctx, filepath.Join(b.Nodes[id].Dir, "conduit.db"))
	if err != nil {
		return 0, err
	}
	defer st.Close()
	q, err := st.ListQuarantine(ctx, store.Held)
	return len(q), err
}
