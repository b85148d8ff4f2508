package submission

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/policy"
)

// notifyOutcome tells the sender, in their mailbox, what became of an
// accepted package when it differs from what they addressed: sent
// elsewhere by a rule, held, refused for some destination. A mail client
// shows the 250 reply that says so to nobody, and a mail server (the relay
// account) does not pass it on. The notice comes from the gateway, is
// marked like the package and names the package, its reference and what
// the policy did, never its content. A notice that cannot be delivered is
// logged; the package stays accepted.
func (srv *Server) notifyOutcome(ctx context.Context, sender, pkgID string, m *envelope.Manifest, dec policy.Decision, keyHeld map[string]string) {
	var lines []string
	var went []string
	for _, d := range dec.Deliveries {
		if !slices.Contains(m.To, d.Agency) && !slices.Contains(went, d.Agency) {
			went = append(went, d.Agency)
		}
	}
	for _, st := range dec.Trace {
		switch st.Effect {
		case policy.EffectRedirect, policy.EffectCopy, policy.EffectRefuse, policy.EffectHold:
			lines = append(lines, fmt.Sprintf("  - %s: %s (%s)", st.Effect, st.Detail, st.Rule))
		}
	}
	for a, why := range keyHeld {
		lines = append(lines, fmt.Sprintf("  - held for %s: %s", a, why))
	}
	if len(went) == 0 && len(dec.Holds) == 0 && len(dec.Refusals) == 0 && len(keyHeld) == 0 {
		return // it went where it was addressed
	}
	subject := "your package " + pkgID
	switch {
	case len(went) > 0:
		subject += " also or instead went to " + strings.Join(went, ", ")
	case len(dec.Holds) > 0 || len(keyHeld) > 0:
		subject += " is held"
	default:
		subject += " was refused for some destinations"
	}
	from := keyring.Address(srv.keys.Identity())
	var b strings.Builder
	fmt.Fprintf(&b, "From: Conduit gateway <%s>\r\nTo: <%s>\r\nSubject: [%s] Conduit: %s\r\n", from, sender, m.Label.Marking(), subject)
	fmt.Fprintf(&b, "Date: %s\r\nAuto-Submitted: auto-generated\r\nConduit-Package: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		srv.now().Format("Mon, 02 Jan 2006 15:04:05 -0700"), pkgID)
	fmt.Fprintf(&b, "Your package %s (reference %s, %s) was addressed to %s.\r\n\r\n", pkgID, m.Label.Reference, m.Label.Marking(), strings.Join(m.To, ", "))
	b.WriteString("The sharing policy did this with it:\r\n")
	b.WriteString(strings.Join(lines, "\r\n") + "\r\n\r\n")
	if len(went) > 0 {
		fmt.Fprintf(&b, "It was sent to: %s.\r\n", strings.Join(went, ", "))
	}
	b.WriteString("You need do nothing unless this is wrong; then ask your Conduit administrator (conduit policy explain shows the rules and their sources).\r\n")
	if err := srv.deliver.Deliver(ctx, sender, srv.cfg.Agency, "notice-"+pkgID, nil, []byte(b.String())); err != nil {
		srv.log.Error("outcome notice not delivered to the sender", "package", pkgID, "sender", sender, "err", err)
		return
	}
	srv.log.Info("outcome notice delivered to the sender", "package", pkgID, "sender", sender, "went", went)
}
