package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/keys"
)

// newDemoCmd builds `conduit demo`.
func newDemoCmd() *cobra.Command {
	var envelopeOnly, keep, stay bool
	var pgDSN string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run several agencies' gateways on loopback and send real packages through them",
		Long: `Demo needs no set-up. In a temporary directory it makes OpenPGP keys, a
private CA and TLS certificates for seven agencies (a police PIO unit, the
RPIU, two prisons, the regional and national Counter Corruption Units and the
Police Advisers Section), starts their gateways as separate processes on
loopback, and drives real packages through real SMTP with TLS: a routine
dissemination; the governing governor as a subject (it goes to the regional
CCU, the prison gets nothing); an escape risk (immediate escalation); a SECRET
package and an unsanitised one (refused, with their reasons); and a package
tampered with on the wire (quarantined). It prints what each agency received
and why, stops every gateway and exits 0, or exits 1 naming what went wrong.
Each gateway also serves its web console; the demo prints the addresses of
the PIO unit's and the regional CCU's consoles and their sign-ins (--stay
keeps them running until Ctrl-C).

With --envelope-only it shows the envelope alone, in one process: sealing,
the wire view, opening with every check, and a tampered, a forged and a
replayed copy refused.

With --postgres DSN each agency's store is a database of its own on that
PostgreSQL server (created for the demo, dropped after it unless --keep;
the role needs CREATEDB), and HMP Northgate runs two gateways sharing
theirs, listed in the directory as its gateways.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if envelopeOnly {
				return runEnvelopeDemo(cmd.Context(), cmd.OutOrStdout())
			}
			return runGatewayDemo(cmd.Context(), cmd.OutOrStdout(), keep, stay, pgDSN)
		},
	}
	c.Flags().BoolVar(&envelopeOnly, "envelope-only", false, "show the envelope alone, in one process")
	c.Flags().BoolVar(&stay, "stay", false, "keep the gateways and their web consoles running after the demo, until Ctrl-C")
	c.Flags().StringVar(&pgDSN, "postgres", "", "run the agencies' stores on this PostgreSQL server (a connection string)")
	c.Flags().BoolVar(&keep, "keep", false, "keep the working directory (keys, configs, stores, Maildirs) for inspection")
	return c
}

const demoMessage = "From: DS Patel <analyst@met.example>\r\n" +
	"To: Prison Intelligence Officer <pio@hmp-northgate.example>\r\n" +
	"Subject: Conveyance of mobile phones, wing C\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n\r\n" +
	"Source reports that a member of staff on wing C is being paid to convey\r\n" +
	"mobile phones. Sanitised: source and tactic protected by the Met PIO unit.\r\n"

const demoLabel = `v=1; classification=OFFICIAL-SENSITIVE; descriptor=PERSONAL; grading=5x5x5; source=B; intelligence=2; handling=2; authorisation=PAS-2026-0042; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; sanitised-by=met-pio; originator=met-pio; reference=MET-2026-000123`

type demoAgency struct {
	id   *keys.Identity
	cert *keys.Cert
}

func demoIdentity(agency string, profile keys.Profile) (*demoAgency, error) {
	id, err := keys.Generate(agency, "conduit@"+agency+".example", profile, time.Now().Add(-time.Minute))
	if err != nil {
		return nil, err
	}
	c, err := id.Public()
	if err != nil {
		return nil, err
	}
	return &demoAgency{id, c}, nil
}

// demoReplay is the demo's replay cache; the gateway keeps a durable one.
type demoReplay map[string]bool

func (d demoReplay) CheckReplay(_ context.Context, k envelope.ReplayKey) error {
	key := k.Originator + "/" + k.PackageID
	if d[key] {
		return envelope.ErrReplay
	}
	d[key] = true
	return nil
}

func runEnvelopeDemo(ctx context.Context, w io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	say := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	say("Conduit demo: one package from the Met PIO unit to HMP Northgate")
	say("")

	met, err := demoIdentity("met-pio", keys.ProfileRFC4880)
	if err != nil {
		return err
	}
	ng, err := demoIdentity("hmp-northgate", keys.ProfileRFC4880)
	if err != nil {
		return err
	}
	rogue, err := demoIdentity("hmp-eastfield", keys.ProfileRFC4880)
	if err != nil {
		return err
	}
	say("1. Keys (made now, held in memory only)")
	for _, a := range []*demoAgency{met, ng, rogue} {
		say("   %-14s %s  %s", a.id.Agency, keys.ProfileOf(a.id.Entity), a.id.Fingerprint())
	}
	// HMP Northgate pins the Met PIO's key and knows HMP Eastfield's.
	pins := keys.NewPartners()
	if err := pins.Add(met.cert, "met-pio", met.id.Fingerprint()); err != nil {
		return err
	}
	if err := pins.Add(rogue.cert, "hmp-eastfield", rogue.id.Fingerprint()); err != nil {
		return err
	}

	label, err := envelope.ParseLabelPartial(demoLabel)
	if err != nil {
		return err
	}
	var sealed bytes.Buffer
	_, err = envelope.Seal(ctx, &sealed, strings.NewReader(demoMessage), envelope.SealParams{
		Signer: met.id, Recipients: []*keys.Cert{ng.cert}, Label: label,
	})
	if err != nil {
		return err
	}
	say("")
	say("2. Sealed by met-pio: signed, then encrypted to hmp-northgate (%d bytes). What the wire shows:", sealed.Len())
	hdr, _, _ := bytes.Cut(sealed.Bytes(), []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(hdr), "\r\n") {
		say("   | %s", line)
	}
	if bytes.Contains(sealed.Bytes(), []byte("mobile phones")) {
		return errors.New("demo: plaintext visible on the wire")
	}
	say("   (the real subject, the body and the full label travel only inside the encryption)")

	cache := demoReplay{}
	open := func(msg []byte) (string, *envelope.Opened, error) {
		var out bytes.Buffer
		o, err := envelope.Open(ctx, &out, bytes.NewReader(msg), envelope.OpenParams{
			Identity: ng.id, Partners: pins, Replay: cache,
		})
		return out.String(), o, err
	}
	opened, o, err := open(sealed.Bytes())
	if err != nil {
		return fmt.Errorf("demo: open: %w", err)
	}
	say("")
	say("3. Opened by hmp-northgate, every check passed:")
	say("   signature: valid, by %s's pinned key %s", o.Signer.Agency, o.Signer.Fingerprint)
	say("   package:   %s, message %s", o.PackageID, o.MessageID)
	for _, line := range o.Label.Describe() {
		say("   label:     %s", line)
	}
	subject := ""
	for _, line := range strings.Split(opened, "\r\n") {
		if strings.HasPrefix(line, "Subject:") {
			subject = line
		}
	}
	say("   delivered: %s", subject)

	say("")
	say("4. The same checks refuse what they must, and release nothing:")
	refuse := func(what string, msg []byte, want error) error {
		out, _, err := open(msg)
		say("   %-40s -> refused: %v", what, err)
		if !errors.Is(err, want) || out != "" {
			return fmt.Errorf("demo: %s was not refused as %v", what, want)
		}
		return nil
	}
	tampered := bytes.Replace(sealed.Bytes(), []byte(`SIO-Label: marking="OFFICIAL-SENSITIVE PERSONAL"`), []byte(`SIO-Label: marking=OFFICIAL`), 1)
	if err := refuse("outer marking lowered in transit", tampered, envelope.ErrMarkingMismatch); err != nil {
		return err
	}
	// HMP Eastfield's own key signs a label claiming to come from met-pio.
	var forged bytes.Buffer
	impostor := &keys.Identity{Agency: "met-pio", Entity: rogue.id.Entity}
	if _, err := envelope.Seal(ctx, &forged, strings.NewReader(demoMessage), envelope.SealParams{
		Signer: impostor, Recipients: []*keys.Cert{ng.cert}, Label: label,
	}); err != nil {
		return err
	}
	if err := refuse("hmp-eastfield signs as met-pio", forged.Bytes(), envelope.ErrSignerNotPinned); err != nil {
		return err
	}
	if err := refuse("the original delivered a second time", sealed.Bytes(), envelope.ErrReplay); err != nil {
		return err
	}
	say("")
	say("Done. Run `conduit label check --explain LABEL` to check a label, `conduit --help` for the rest.")
	if f, ok := w.(*os.File); ok {
		f.Sync()
	}
	return nil
}
