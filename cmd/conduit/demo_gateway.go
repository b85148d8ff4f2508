package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/jackc/pgx/v5"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/policy"
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
func runGatewayDemo(ctx context.Context, w io.Writer, keep, stay bool, pgDSN string) (err error) {
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
	if keep {
		say("(working directory %s, kept at the end)", dir)
	} else {
		say("(working directory %s, removed at the end; --keep keeps it for inspection)", dir)
	}
	say("")
	opt := testbed.Options{RetryMin: "500ms", RetryMax: "2s", Console: true}
	start := demoAgencies
	storeKind := "SQLite"
	if pgDSN != "" {
		dbs, drop, err := demoDatabases(ctx, pgDSN, demoAgencies)
		if err != nil {
			return err
		}
		if !keep {
			defer drop()
		}
		opt.Postgres = dbs
		opt.Gateways = map[string]int{"hmp-northgate": 2}
		start = append(slices.Clone(demoAgencies), "hmp-northgate/2")
		storeKind = "PostgreSQL"
	}
	bed, err := testbed.Create(dir, bin, opt)
	if err != nil {
		return err
	}
	bed.Postgres = opt.Postgres
	defer bed.StopAll()
	if err := bed.StartAll(ctx, start...); err != nil {
		return err
	}
	say("1. Gateways started, each with its own OpenPGP key, TLS certificate, %s queue and Maildir:", storeKind)
	if pgDSN != "" {
		say("   (hmp-northgate runs two gateways on one database: %s)", strings.Join(bed.Directory.Agency("hmp-northgate").GatewayHosts(), ", "))
	}
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
	var replies []string // the replies' texts name rules too
	for i, s := range scen {
		to := bed.Directory.Agency(s.to).Mailboxes[0].Address
		resp, err := bed.Submit(ctx, "northshire-pio", []string{to}, demoMessageFor(from, to, s))
		say("")
		say("   %c) %s, addressed to %s", 'a'+i, s.title, s.to)
		switch {
		case s.refused != "" && err != nil && strings.Contains(err.Error(), s.refused):
			say("      refused: %s", err)
			replies = append(replies, err.Error())
		case s.refused != "":
			failures = append(failures, fmt.Sprintf("%s: expected a refusal by %s, got %v %s", s.title, s.refused, err, resp))
			say("      UNEXPECTED: %v %s", err, resp)
		case err != nil:
			failures = append(failures, fmt.Sprintf("%s: refused: %v", s.title, err))
			say("      UNEXPECTED refusal: %v", err)
		default:
			say("      accepted: %s", resp)
			replies = append(replies, resp)
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
	var seenRules []string
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
				for _, r := range strings.Split(h.Get("Conduit-Decision"), ",") {
					if r = strings.TrimSpace(r); r != "" && !slices.Contains(seenRules, r) {
						seenRules = append(seenRules, r)
					}
				}
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
	say("   The rules named above (conduit policy check lists every rule with its source):")
	for _, line := range ruleLegend(bed.Nodes["northshire-pio"].Config, seenRules, replies) {
		say("     %s", line)
	}
	q, _ := quarantineCount(ctx, bed, "hmp-northgate")
	say("")
	if keep {
		say("4. HMP Northgate's quarantine holds %d message(s); `conduit quarantine list --config %s` shows it.", q, bed.Nodes["hmp-northgate"].Config)
	} else {
		say("4. HMP Northgate's quarantine holds %d message(s); run `conduit demo --keep`, then `conduit quarantine list --config FOLDER/hmp-northgate/conduit.yaml` shows it.", q)
	}

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
	st, err := b.OpenAnyStore(ctx, "northshire-pio")
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
	st, err := b.OpenAnyStore(ctx, id)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	q, err := st.ListQuarantine(ctx, store.Held)
	return len(q), err
}

// ruleLegend explains rule ids: "addressed" (the sender's own choice),
// the built-in rules, and the example administrator rules, each with its
// summary and whether it is built in or the administrator's.
func ruleLegend(cfgPath string, ids, replies []string) []string {
	pol, _, err := policy.Load(cfgPath)
	if err != nil {
		return nil
	}
	all := strings.Join(replies, "\n")
	if strings.Contains(all, "(addressed") && !slices.Contains(ids, "addressed") {
		ids = append([]string{"addressed"}, ids...)
	}
	for _, r := range pol.Rules() {
		id := r.ID()
		if !slices.Contains(ids, id) && (strings.Contains(all, "("+id) || strings.Contains(all, ", "+id+")") || strings.Contains(all, ", "+id+",")) {
			ids = append(ids, id)
		}
	}
	admin := map[string]bool{}
	for _, r := range pol.AdminRules() {
		admin[r.ID()] = true
	}
	var out []string
	for _, id := range ids {
		if id == "addressed" {
			out = append(out, fmt.Sprintf("%-26s the sender addressed it there", id))
			continue
		}
		for _, r := range pol.Rules() {
			if r.ID() != id {
				continue
			}
			what := "built-in rule"
			if admin[id] {
				what = "administrator rule in examples/policy.yaml"
			}
			sum := ""
			if d, ok := r.(policy.Described); ok {
				sum = d.Summary()
			}
			out = append(out, fmt.Sprintf("%-26s %s: %s", id, what, sum))
		}
	}
	return out
}

// demoDatabases creates a database per agency on the PostgreSQL server of
// dsn and returns their connection strings and a function that drops
// them.
func demoDatabases(ctx context.Context, dsn string, agencies []string) (map[string]string, func(), error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("--postgres: %w", err)
	}
	suffix := strconv.FormatInt(time.Now().Unix()%1000000, 10)
	out := map[string]string{}
	var made []string
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, name := range made {
			conn.Exec(dctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		}
		conn.Close(dctx)
	}
	for _, a := range agencies {
		name := "conduit_demo_" + suffix + "_" + strings.ReplaceAll(a, "-", "_")
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			drop()
			return nil, nil, fmt.Errorf("--postgres: create database %s: %w", name, err)
		}
		made = append(made, name)
		out[a] = withDatabase(dsn, name)
	}
	return out, drop, nil
}

// withDatabase is dsn naming another database.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name
}
