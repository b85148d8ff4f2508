package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// Citations: the seed documents the rules implement (../shared/seeds).
const (
	mou  = "002_7fa272ff2a5b7e4b.txt, HMPPS/NPCC MoU 2019, "
	stmt = "000_8d469ee3e549c8f4.txt, Statement of Common Principles 2012, "
	wws  = "000_8d469ee3e549c8f4.txt, Wormwood Scrubs report, "
)

// The phases a built-in rule may take part in, found by type assertion.
type (
	// gater judges the whole outgoing package before routing.
	gater interface{ gate(e *eval) }
	// redirector replaces destinations.
	redirector interface{ redirect(e *eval) }
	// adder adds copies, raises priority or starts clocks.
	adder interface{ add(e *eval) }
	// destGater judges one destination, however it got there.
	destGater interface{ destGate(e *eval, d *dest) }
	// receiver judges a received package at this gateway.
	receiver interface{ receive(e *eval) }
)

// Builtins returns the built-in catalogue in docs/design.md order, with the
// given parameters.
func builtins(p *Params) []Rule {
	return []Rule{
		&senderIsFrom{meta{"sender-is-from", "docs/design.md, Security invariant 5 (a submitter may only send as its own agency)",
			"the package's from must be the authenticated sending agency"}},
		&knownRecipient{meta{"known-recipient", "docs/design.md, Security invariant 5 (a recipient not in the directory is refused)",
			"every addressee must be in the agency directory"}},
		&labelRequired{meta{"label-required", mou + "Annex A (Data handling; Accuracy)",
			"a package without a complete label (classification, grading, basis, data subjects, purpose) is refused"}},
		&purposeApproved{meta{"purpose-approved", mou + "Annex A (Purpose); " + stmt + "Prison information to be disclosed to LEAs",
			"the purpose must be approved for the direction of sharing"}, &p.PurposeApproved},
		&classificationCeiling{meta{"classification-ceiling", mou + "Annex A (Description of method of sharing)",
			"a route carries at most its accredited classification; SECRET and above are refused and alerted"}, &p.ClassificationCeiling},
		&ukEEAOnly{meta{"uk-eea-only", mou + "Annex A (Data handling)",
			"no destination outside the UK/EEA"}},
		&handlingCode{meta{"handling-code", "NIM 5x5x5 / 3x5x2 handling codes (" + stmt + "Appendix D reference); " + mou + "Annex A (Data handling)",
			"5x5x5: 4 stays in the originating agency, 5 is held for the originator, 3 has no lawful destination, 2 needs an authorisation; 3x5x2 C needs its conditions"}, &p.HandlingCode},
		&sanitisedToDisseminate{meta{"sanitised-to-disseminate", mou + "6.1 (prison and probation responsibilities, sanitisation); Annex B (Sanitisation & dissemination)",
			"a package crossing from one agency to another must be marked sanitised"}},
		&noOnwardDisclosure{meta{"no-onward-disclosure", mou + "Annex A (Data handling: no onward disclosure except in accordance with the arrangements)",
			"a received package is not passed to a third agency without the originator's consent, except by a conduit the agreements name"}},
		// pecs-security-manager may send a PECS package to a prison (the
		// prison process), so it comes before the rules that judge prisons.
		&pecsSecurityManager{meta{"pecs-security-manager", mou + "4.1 (PECS Security Manager); Annex B (PECS pursue process)",
			"corruption concerning PECS goes to the PECS Security Manager; reports on prisoners or HMPPS staff follow the prison process"}},
		&governorToRegionalCCU{meta{"governor-to-regional-ccu", mou + "6.1 police responsibilities, bullet 5",
			"when the governing governor of the receiving prison, or a post the directory marks with oversight of its intelligence function, is a subject, the regional CCU covering it receives the package instead"}},
		&hqToNCCA{meta{"hq-to-ncca", mou + "6.1 police responsibilities, bullet 5",
			"when HMPPS HQ is concerned, the national counter corruption analyst in the CCU receives the package instead"}},
		&probationViaCCU{meta{"probation-via-ccu", mou + "6.1 police responsibilities, bullet 4; Annex B (Probation pursue process)",
			"police disseminations concerning probation go to the regional CCU on probation's behalf"}},
		&catAViaPAS{meta{"cat-a-via-pas", stmt + "PAS role (gatekeepers for Category A and terrorist prisoners)",
			"intelligence between law enforcement and HMPPS on Category A, potential Cat A, E-List and terrorist prisoners goes through PAS"}},
		&policeToPrisonViaPIO{meta{"police-to-prison-via-pio", mou + "6.1 police responsibilities, bullet 4; " + stmt + "PIO role; FIB conduit",
			"police disseminate to a prison through its PIO or the RPIU; a prison without a PIO through the FIB of the force where it is located"}},
		&imminentRiskEscalation{meta{"imminent-risk-escalation", mou + "6.1 (both sides: major or imminent risk escalated immediately)",
			"escape, abscond or threat to life: immediate priority, escalation copies, acknowledgement deadline"}, &p.ImminentRisk},
		&highRiskSeniority{meta{"high-risk-seniority", wws + "7.1-7.2",
			"firearms or high-profile risk: a copy to an officer of sufficient seniority (the governing governor unless a subject; PAS)"}, &p.HighRiskSeniority},
		&triage72h{meta{"triage-72h", mou + "6.1 prison and probation responsibilities (triage within 72 hours); Annex B (Triage: within 72 hours)",
			"a received corruption report starts a 72-hour triage clock"}, &p.Triage},
		&trainedRecipients{meta{"trained-recipients", mou + "Annex A (Data security: only appropriately trained individuals handle the data)",
			"deliver only to mailboxes held by staff with a data-protection training record"}, &p.TrainedRecipients},
		&retention{meta{"retention", mou + "Annex A (Description of method of sharing: retain only for the period necessary, then destroy securely)",
			"stored copies are crypto-shredded after the retention period"}, &p.Retention},
		&notices{meta{"notices", mou + "Annex A (Accuracy; Data loss; Subject rights requests)",
			"rectification, breach and subject-access notices go to the originator; a rectification to every agency that received the package"}},
	}
}

// --- sender-is-from ---------------------------------------------------

type senderIsFrom struct{ meta }

func (r *senderIsFrom) gate(e *eval) {
	if e.sender == nil {
		e.deny(r, "the sending agency is not in the directory")
		return
	}
	if e.sender != e.self {
		// docs/design.md, Security invariant 5: a gateway sends for its own agency only,
		// whatever the submitter claims.
		e.deny(r, "this gateway sends for %s only, not for %s", e.self.ID, e.sender.ID)
		e.alert(r, "submission as another agency (%s)", e.sender.ID)
		return
	}
	if e.m.From != e.sender.ID {
		e.deny(r, "the package says it is from %s but was submitted by %s", e.m.From, e.sender.ID)
	}
}

func (r *senderIsFrom) receive(e *eval) {
	if e.sender == nil {
		e.deny(r, "the sending gateway's agency is not in the directory")
		e.alert(r, "package from an agency not in the directory")
		return
	}
	if e.m.From != e.sender.ID {
		e.deny(r, "the package says it is from %s but was signed by %s", e.m.From, e.sender.ID)
		e.alert(r, "sender mismatch: manifest from %s, signer %s", e.m.From, e.sender.ID)
	}
}

// --- known-recipient --------------------------------------------------

type knownRecipient struct{ meta }

func (r *knownRecipient) gate(e *eval) {
	for _, to := range e.m.To {
		if e.d.Agency(to) == nil {
			e.trace(r, EffectRefuse, "%s: not in the agency directory", to)
			e.out.Refusals = append(e.out.Refusals, Refusal{Agency: to, Rule: r.id, Reason: "not in the agency directory"})
		}
	}
}

func (r *knownRecipient) receive(e *eval) {
	if slices.Contains(e.m.To, e.self.ID) {
		return
	}
	// The sender addressed someone else; a built-in redirection or
	// addition at the sending gateway may lawfully have sent it here
	// (the regional CCU instead of a prison whose governor is a
	// subject). Decide again as the sender's gateway would under the
	// built-in rules, and accept the package only if it comes here.
	if rule := e.p.builtinRouteTo(e); rule != "" {
		e.step(r, EffectRecord, "not addressed to "+e.self.ID+"; sent here by "+rule)
		return
	}
	e.deny(r, "the package is not addressed to this agency (%s) and no built-in rule sends it here", e.self.ID)
	e.alert(r, "misrouted package received")
}

// --- label-required ---------------------------------------------------

type labelRequired struct{ meta }

func (r *labelRequired) gate(e *eval) {
	// MoU Annex A, Data handling: distinguish facts from assessments and
	// the categories of data subject; Accuracy: give the receiver what it
	// needs to assess accuracy and reliability (the grading).
	if err := e.m.Label.Validate(); err != nil {
		e.deny(r, "incomplete or invalid label: %v", err)
	}
}

func (r *labelRequired) receive(e *eval) { r.gate(e) }

// --- purpose-approved -------------------------------------------------

type purposeApproved struct {
	meta
	p *PurposeParams
}

func (r *purposeApproved) allowed(from, to *config.Agency) ([]envelope.Purpose, string) {
	switch {
	case !from.Kind.Police() && to.Kind.Police():
		return r.p.HMPPSToPolice, "HMPPS to law enforcement"
	case from.Kind.Police() && !to.Kind.Police():
		return r.p.PoliceToHMPPS, "law enforcement to HMPPS"
	}
	return r.p.Internal, "within one side"
}

func (r *purposeApproved) destGate(e *eval, d *dest) {
	if e.m.Label.Purpose == "" {
		return // label-required has refused the package
	}
	ps, dir := r.allowed(e.sender, d.agency)
	if !slices.Contains(ps, e.m.Label.Purpose) {
		e.refuse(d, r, fmt.Sprintf("purpose %s is not approved for sharing %s (approved: %s)", e.m.Label.Purpose, dir, joinPurposes(ps)))
	}
}

func (r *purposeApproved) receive(e *eval) {
	if e.denied || e.m.Label.Purpose == "" {
		return
	}
	ps, dir := r.allowed(e.sender, e.self)
	if !slices.Contains(ps, e.m.Label.Purpose) {
		e.deny(r, "purpose %s is not approved for sharing %s", e.m.Label.Purpose, dir)
	}
}

func joinPurposes(ps []envelope.Purpose) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// --- classification-ceiling -------------------------------------------

type classificationCeiling struct {
	meta
	p *CeilingParams
}

// ceiling is the effective ceiling of the route to an agency: the lowest
// of the directory's accreditation, the gateway-wide maximum and any
// per-route override.
func (r *classificationCeiling) ceiling(a *config.Agency) envelope.Classification {
	c := a.Ceiling
	if r.p.Max.Rank() < c.Rank() {
		c = r.p.Max
	}
	if o, ok := r.p.Routes[a.ID]; ok && o.Rank() < c.Rank() {
		c = o
	}
	return c
}

func (r *classificationCeiling) gate(e *eval) {
	c := e.m.Label.Classification
	if c == "" {
		return
	}
	// MoU Annex A, Description of method of sharing: "Some information
	// sits at SECRET or TOP SECRET level ... stored in accredited systems
	// ... UK Sensitive Intelligence Network"; secure email is not one.
	if c.Rank() > r.p.Max.Rank() {
		e.deny(r, "%s is above what this gateway may carry (%s); use an accredited system", c, r.p.Max)
		e.alert(r, "%s package submitted to a gateway accredited to %s", c, r.p.Max)
	}
}

func (r *classificationCeiling) destGate(e *eval, d *dest) {
	c := e.m.Label.Classification
	if ceil := r.ceiling(d.agency); c.Rank() > ceil.Rank() {
		e.refuse(d, r, fmt.Sprintf("%s is above the route's ceiling of %s", c, ceil))
	}
}

func (r *classificationCeiling) receive(e *eval) {
	c := e.m.Label.Classification
	if c == "" {
		return
	}
	if ceil := r.ceiling(e.self); c.Rank() > ceil.Rank() {
		e.deny(r, "%s is above this gateway's ceiling of %s", c, ceil)
		e.alert(r, "%s package received over a route accredited to %s", c, ceil)
	}
}

// --- uk-eea-only ------------------------------------------------------

type ukEEAOnly struct{ meta }

func (r *ukEEAOnly) destGate(e *eval, d *dest) {
	// MoU Annex A, Data handling: "The parties will not transfer the data
	// received under this MoU outside the UK / EEA."
	if !ukEEA[d.agency.Jurisdiction] {
		e.refuse(d, r, fmt.Sprintf("jurisdiction %s is outside the UK/EEA", d.agency.Jurisdiction))
	}
}

// --- handling-code ----------------------------------------------------

type handlingCode struct {
	meta
	p *HandlingParams
}

func (r *handlingCode) gate(e *eval) {
	l := &e.m.Label
	switch {
	case l.Grading.Scheme == envelope.Scheme5x5x5 && l.Grading.Handling == "3":
		// Handling code 3 permits dissemination to non-EEA law
		// enforcement only, which uk-eea-only forbids: no destination
		// is lawful.
		e.deny(r, "5x5x5 handling code 3 (non-EEA law enforcement) has no lawful destination: the MoU forbids transfers outside the UK/EEA")
	case l.Grading.Scheme == envelope.Scheme5x5x5 && l.Grading.Handling == "2":
		if l.Authorisation == "" {
			e.deny(r, "5x5x5 handling code 2 (UK non-prosecuting parties) needs an authorisation reference")
		} else {
			e.trace(r, EffectRecord, "handling code 2 disseminated under authorisation %s", l.Authorisation)
		}
	case l.Grading.Scheme == envelope.Scheme3x5x2 && l.Grading.Handling == "C":
		if strings.TrimSpace(l.Conditions) == "" {
			e.deny(r, "3x5x2 handling code C (sharing subject to conditions) needs the conditions text")
		} else {
			e.trace(r, EffectRecord, "handling code C: the conditions travel inside the envelope")
		}
	}
}

func (r *handlingCode) destGate(e *eval, d *dest) {
	l := &e.m.Label
	if l.Grading.Scheme == envelope.Scheme5x5x5 && l.Grading.Handling == "4" && !e.sameOrg(d.agency.ID, l.Originator) {
		e.refuse(d, r, fmt.Sprintf("5x5x5 handling code 4: originating agency (%s) only", l.Originator))
	}
	if l.Grading.Scheme == envelope.Scheme5x5x5 && l.Grading.Handling == "5" && d.agency.ID == l.Originator {
		// "No further dissemination: refer to the originator" (NIM 5x5x5
		// handling code 5; DESIGN.md, The handling label): the originator
		// is the one destination the code allows, so the referral goes.
		e.trace(r, EffectRecord, "handling code 5: referred to the originator (%s), the one destination the code allows", l.Originator)
		return
	}
	if l.Grading.Scheme == envelope.Scheme5x5x5 && l.Grading.Handling == "5" {
		// "No further dissemination: refer to the originator": every
		// other destination waits for the originator's release.
		why := fmt.Sprintf("5x5x5 handling code 5: no further dissemination; refer to the originator (%s), who must release it", l.Originator)
		if d.addition {
			e.refuse(d, r, why)
		} else {
			e.hold(d, r, why)
			// The originator must act on a held package (docs/design.md,
			// handling: "5 no further dissemination: refer to the
			// originator"). Neither seed sets a period for that, so the
			// clock is a parameter (HandlingParams.HoldHours, default
			// 72 hours by analogy with MoU 6.1's 72-hour triage);
			// overdue, the administrators are alerted.
			e.deadline(r, DeadlineHold, r.p.HoldHours, "a package held for the originator's decision is alerted when it waits too long")
		}
	}
}

func (r *handlingCode) receive(e *eval) {
	l := &e.m.Label
	if l.Grading.Scheme == envelope.Scheme5x5x5 {
		switch l.Grading.Handling {
		case "3":
			e.deny(r, "5x5x5 handling code 3 has no lawful destination in the UK/EEA")
			e.alert(r, "handling code 3 package received")
		case "4":
			if !e.sameOrg(e.self.ID, l.Originator) {
				e.deny(r, "5x5x5 handling code 4: originating agency (%s) only", l.Originator)
				e.alert(r, "handling code 4 package received from outside the originating agency")
			}
		case "2":
			if l.Authorisation == "" {
				e.deny(r, "5x5x5 handling code 2 without an authorisation reference")
			}
		}
	}
	if l.Grading.Scheme == envelope.Scheme3x5x2 && l.Grading.Handling == "C" && strings.TrimSpace(l.Conditions) == "" {
		e.deny(r, "3x5x2 handling code C without its conditions")
	}
}

// --- sanitised-to-disseminate -----------------------------------------

type sanitisedToDisseminate struct{ meta }

func (r *sanitisedToDisseminate) destGate(e *eval, d *dest) {
	// MoU 6.1: disseminations "either internally or to the police protect
	// the source/ tactic used in gathering the intelligence"; Annex B puts
	// "Sanitise information" before every dissemination.
	if !e.m.Label.Sanitised && !e.sameOrg(e.sender.ID, d.agency.ID) {
		e.refuse(d, r, "not marked sanitised: source and tactic must be protected before a package leaves the agency")
	}
}

func (r *sanitisedToDisseminate) receive(e *eval) {
	if !e.m.Label.Sanitised && !e.sameOrg(e.sender.ID, e.self.ID) {
		e.deny(r, "received from %s without being marked sanitised", e.sender.ID)
		e.alert(r, "unsanitised package received from another agency")
	}
}

// --- no-onward-disclosure ---------------------------------------------

type noOnwardDisclosure struct{ meta }

// conduit reports whether the sender passing a package to the agency is
// one of the channels the agreements set up, which is disclosure "in
// accordance with the arrangements set out in this MoU".
func (r *noOnwardDisclosure) conduit(e *eval, to *config.Agency) (bool, string) {
	s := e.sender
	switch s.Kind {
	case config.PIO:
		if to.Kind == config.Prison && e.d.PIOFor(to.ID) == s {
			return true, "the PIO serving " + to.ID + " (Statement, PIO role)"
		}
	case config.FIB:
		if to.Kind == config.Prison && e.d.PIOFor(to.ID) == nil && to.Force == s.Force {
			return true, "the FIB conduit for " + to.ID + ", which has no PIO (Statement, FIB conduit)"
		}
	case config.RPIU:
		if (to.Kind == config.Prison || to.Kind == config.PIO) && to.Region == s.Region {
			return true, "the RPIU of region " + s.Region + " (MoU 6.1 police, bullet 4)"
		}
	case config.PAS:
		if crossing(s, to) || to.Kind == config.Prison {
			return true, "PAS as gatekeeper between law enforcement and HMPPS (Statement, PAS role)"
		}
	case config.CCURegional:
		if (to.Kind == config.ProbationDivision || to.Kind == config.CRC) && slices.Contains(s.Covers, to.Region) {
			return true, "the regional CCU acting on probation's behalf (MoU 6.1 police, bullet 4)"
		}
	}
	return false, ""
}

func (r *noOnwardDisclosure) destGate(e *eval, d *dest) {
	orig := e.m.Label.Originator
	if orig == "" || e.sameOrg(orig, e.sender.ID) || e.sameOrg(orig, d.agency.ID) {
		return // the originator's own package, or going back to it
	}
	if ok, why := r.conduit(e, d.agency); ok {
		e.trace(r, EffectRecord, "%s: passed on from %s by %s", d.agency.ID, orig, why)
		return
	}
	if e.consent != "" {
		e.trace(r, EffectRecord, "%s: passed on with the originator's consent %s", d.agency.ID, e.consent)
		return
	}
	if d.addition {
		e.refuse(d, r, fmt.Sprintf("received from %s; a copy to a third agency needs the originator's consent", orig))
		return
	}
	e.hold(d, r, fmt.Sprintf("received from %s: passing it to a third agency needs the originator's consent", orig))
}

// --- governor-to-regional-ccu -----------------------------------------

type governorToRegionalCCU struct{ meta }

// gate refuses a package whose subject names a post its establishment
// does not declare: whether the post has oversight of the intelligence
// function there cannot be judged, and guessing could send a package
// about the prison's own LCCM to the prison.
func (r *governorToRegionalCCU) gate(e *eval) {
	for i, s := range e.m.Subjects {
		if s.Post == "" {
			continue
		}
		if s.Establishment == "" {
			if !slices.ContainsFunc(e.d.Agencies, func(a *config.Agency) bool { return a.Post(s.Post) != nil }) {
				e.deny(r, "subject %d holds post %s, which no establishment in the directory declares; say which establishment, or ask your administrator to add the post", i+1, s.Post)
			}
			continue
		}
		a := e.d.Agency(s.Establishment)
		switch {
		case a == nil:
			e.deny(r, "subject %d holds post %s at %q, which is not an agency in the directory", i+1, s.Post, s.Establishment)
		case a.Post(s.Post) == nil:
			declared := strings.Join(a.PostIDs(), ", ")
			if declared == "" {
				declared = "none"
			}
			e.deny(r, "subject %d holds post %s at %s, which the directory does not declare there (declared posts: %s); ask your administrator to add it", i+1, s.Post, a.ID, declared)
		}
	}
}

func (r *governorToRegionalCCU) redirect(e *eval) {
	for _, d := range e.live() {
		if d.agency.Kind != config.Prison {
			continue
		}
		who, ok := e.oversightSubject(d.agency.ID)
		if !ok {
			continue
		}
		// MoU 6.1 police, bullet 5: "If it is inappropriate to
		// disseminate to prisons (e.g. if it concerns the
		// governing-governor), police should disseminate to the regional
		// CCU."
		ccu := e.d.RegionalCCU(d.agency.Region)
		e.redirect(d, ccu, config.Intake, r, who+" is a subject; the prison receives nothing")
	}
}

func (r *governorToRegionalCCU) blocks(e *eval, a *config.Agency) bool {
	return a.Kind == config.Prison && e.governorSubject(a.ID)
}

func (r *governorToRegionalCCU) receive(e *eval) {
	r.gate(e)
	if who, ok := e.oversightSubject(e.self.ID); ok && e.self.Kind == config.Prison {
		e.deny(r, "%s is a subject: the package belongs with the regional CCU", who)
		e.alert(r, "package about this prison's governing governor or a post with oversight received by the prison")
	}
}

// --- hq-to-ncca -------------------------------------------------------

type hqToNCCA struct{ meta }

func (r *hqToNCCA) blocks(e *eval, a *config.Agency) bool {
	switch a.Kind {
	case config.Prison, config.HMPPSHQ, config.CCURegional:
		return e.hasRole("hq")
	}
	return false
}

func (r *hqToNCCA) redirect(e *eval) {
	if !e.hasRole("hq") {
		return
	}
	ncca := e.d.NationalCCU()
	for _, d := range e.live() {
		switch {
		case r.blocks(e, d.agency):
			// MoU 6.1 police, bullet 5: "If reports or intelligence
			// concern HQ, the police should disseminate to the national
			// counter corruption analyst in the CCU."
			e.redirect(d, ncca, config.NCCA, r, "HMPPS HQ is concerned; the national counter corruption analyst receives it")
		case d.agency == ncca && d.fn != config.NCCA:
			e.setMailbox(d, config.NCCA, r)
			e.trace(r, EffectMailbox, "%s: to the national counter corruption analyst, HMPPS HQ being concerned", ncca.ID)
		}
	}
}

func (r *hqToNCCA) receive(e *eval) {
	if !e.hasRole("hq") {
		return
	}
	switch {
	case r.blocks(e, e.self):
		e.deny(r, "HMPPS HQ is concerned: the package belongs with the national counter corruption analyst")
		e.alert(r, "package concerning HMPPS HQ received outside the national CCU")
	case e.self.Kind == config.CCUNational:
		e.dests[0].fn, e.dests[0].rule = config.NCCA, r.id
		e.trace(r, EffectMailbox, "to the national counter corruption analyst, HMPPS HQ being concerned")
	}
}

// --- probation-via-ccu ------------------------------------------------

type probationViaCCU struct{ meta }

func (r *probationViaCCU) blocks(e *eval, a *config.Agency) bool {
	return e.sender.Kind.Police() && (a.Kind == config.ProbationDivision || a.Kind == config.CRC)
}

func (r *probationViaCCU) redirect(e *eval) {
	for _, d := range e.live() {
		if r.blocks(e, d.agency) {
			// MoU 6.1 police, bullet 4: disseminated "to the CCU (on
			// behalf of probation)"; Annex B: the DCCM or CRC-CCM works
			// "with input from CCU".
			ccu := e.d.RegionalCCU(d.agency.Region)
			e.redirect(d, ccu, config.Intake, r, "police disseminate to the CCU on behalf of probation")
		}
	}
}

func (r *probationViaCCU) receive(e *eval) {
	if r.blocks(e, e.self) {
		e.deny(r, "police disseminations to probation go through the CCU")
		e.alert(r, "police package received directly by probation")
	}
}

// --- pecs-security-manager --------------------------------------------

type pecsSecurityManager struct{ meta }

// prisonProcess reports whether the package is about prisoners or HMPPS
// staff only, which the PECS process hands to the prison process, and the
// prison named, if any.
func (r *pecsSecurityManager) prisonProcess(e *eval) (bool, *config.Agency) {
	if len(e.m.Subjects) == 0 {
		return false, nil
	}
	var prison *config.Agency
	for _, s := range e.m.Subjects {
		switch s.Role {
		case "prisoner", "staff", "governing-governor", "hq":
			if a := e.d.Agency(s.Establishment); a != nil && a.Kind == config.Prison && prison == nil {
				prison = a
			}
		default:
			return false, nil
		}
	}
	return true, prison
}

func (r *pecsSecurityManager) redirect(e *eval) {
	for _, d := range e.live() {
		if d.agency.Kind != config.PECS {
			continue
		}
		if ok, prison := r.prisonProcess(e); ok {
			// Annex B, PECS pursue process: "for reports on prisoners,
			// HMPPS staff or HMPPS processes, use prison process".
			if prison == nil {
				e.hold(d, r, "a report on prisoners or HMPPS staff follows the prison process, but no subject names a prison; an administrator must route it")
				continue
			}
			e.redirect(d, prison, config.Intake, r, "a report on prisoners or HMPPS staff follows the prison process")
			continue
		}
		if e.m.Topic == "corruption" && d.fn != config.SecurityManager {
			// MoU 4.1: the PECS Security Manager "will act as a single
			// point of contact for all corruption-related matters".
			e.setMailbox(d, config.SecurityManager, r)
			e.trace(r, EffectMailbox, "%s: corruption concerning PECS goes to the PECS Security Manager", d.agency.ID)
		}
	}
}

func (r *pecsSecurityManager) receive(e *eval) {
	if e.self.Kind == config.PECS && e.m.Topic == "corruption" {
		e.dests[0].fn, e.dests[0].rule = config.SecurityManager, r.id
		e.trace(r, EffectMailbox, "corruption concerning PECS goes to the PECS Security Manager")
	}
}

// --- cat-a-via-pas ----------------------------------------------------

type catAViaPAS struct{ meta }

func (r *catAViaPAS) blocks(e *eval, a *config.Agency) bool {
	return e.catA() && e.sender.Kind != config.PAS && a.Kind != config.PAS && crossing(e.sender, a)
}

func (r *catAViaPAS) redirect(e *eval) {
	if !e.catA() {
		return
	}
	pas := e.d.PAS()
	for _, d := range e.live() {
		if r.blocks(e, d.agency) {
			// Statement, PAS role: "PAS will act as gatekeepers for the
			// intelligence exchange between police/law enforcement NOMS in
			// relation to Category A prisoners and terrorist prisoners".
			e.redirect(d, pas, config.Intake, r, "a Category A, potential Cat A, E-List or terrorist prisoner is a subject; PAS is the gatekeeper")
		}
	}
}

func (r *catAViaPAS) receive(e *eval) {
	if r.blocks(e, e.self) {
		e.deny(r, "intelligence on a Category A, E-List or terrorist prisoner between law enforcement and HMPPS goes through PAS")
		e.alert(r, "Category A intelligence received without passing through PAS")
	}
}

// --- police-to-prison-via-pio -----------------------------------------

type policeToPrisonViaPIO struct{ meta }

// conduit returns the agency through which the police reach a prison: its
// PIO, or the FIB of the force where it is located; nil if the sender may
// send directly (it is that conduit, or the RPIU of the prison's region).
func (r *policeToPrisonViaPIO) conduit(e *eval, prison *config.Agency) (*config.Agency, string) {
	s := e.sender
	if s.Kind == config.RPIU && s.Region == prison.Region {
		return nil, ""
	}
	if pio := e.d.PIOFor(prison.ID); pio != nil {
		if pio == s {
			return nil, ""
		}
		return pio, "police disseminate to " + prison.ID + " through its PIO"
	}
	// Statement, FIB conduit: "Where there isn't a PIO for the prison
	// establishment, the force FIB where the prison is located will be
	// the conduit."
	fib := e.d.FIBOf(prison.Force)
	if fib != nil && fib == s {
		return nil, ""
	}
	// fib is nil when the directory has no FIB for the force: the
	// redirection then refuses the destination, saying so.
	return fib, prison.ID + " has no PIO; the FIB of the force where it is located is the conduit"
}

func (r *policeToPrisonViaPIO) redirect(e *eval) {
	if !e.sender.Kind.Police() {
		return
	}
	for _, d := range e.live() {
		if d.agency.Kind != config.Prison {
			continue
		}
		if to, why := r.conduit(e, d.agency); why != "" {
			e.redirect(d, to, config.Intake, r, why)
		}
	}
}

// --- imminent-risk-escalation -----------------------------------------

type imminentRiskEscalation struct {
	meta
	p *EscalationParams
}

// contacts returns the escalation addresses of an agency.
func (r *imminentRiskEscalation) contacts(a *config.Agency) []string {
	if cs, ok := r.p.Contacts[a.ID]; ok {
		return cs
	}
	var cs []string
	for _, c := range a.Escalation {
		cs = append(cs, c.Address)
	}
	return cs
}

func escalate(e *eval, r Rule, risks []string, hours int, contacts func(*config.Agency) []string) {
	live := e.live()
	var agencies []string
	for _, d := range live {
		d.priority = Immediate
		if !slices.Contains(agencies, d.agency.ID) {
			agencies = append(agencies, d.agency.ID)
		}
	}
	e.trace(r, EffectEscalate, "%s: immediate priority to %s", strings.Join(risks, ", "), joinIDs(agencies))
	for _, id := range agencies {
		a := e.d.Agency(id)
		for _, c := range contacts(a) {
			d := e.addDest(a, config.Duty, r.ID(), true)
			d.contact, d.priority = c, Immediate
			e.step(r, EffectCopy, "escalation copy to "+c+" at "+a.ID)
		}
	}
	e.deadline(r, DeadlineAcknowledge, hours, "an escalated package not acknowledged in time is alerted")
}

func (r *imminentRiskEscalation) add(e *eval) {
	// MoU 6.1 (both sides): "If the intelligence relates to a major
	// and/or imminent risk (e.g. potential abscond, escape or threat to
	// life) this should be immediately escalated through the appropriate
	// channels."
	if risks := e.hasAnyRisk(r.p.Risks); len(risks) > 0 {
		escalate(e, r, risks, r.p.AcknowledgeHours, r.contacts)
	}
}

func (r *imminentRiskEscalation) receive(e *eval) {
	if e.denied {
		return
	}
	r.add(e)
}

// --- high-risk-seniority ----------------------------------------------

type highRiskSeniority struct {
	meta
	p *SeniorityParams
}

// blocker is a redirection that keeps a package from an agency; an
// addition to that agency is dropped.
type blocker interface {
	Rule
	blocks(e *eval, a *config.Agency) bool
}

func (r *highRiskSeniority) add(e *eval) {
	risks := e.hasAnyRisk(r.p.Risks)
	if len(risks) == 0 {
		return
	}
	// The prisons concerned: those addressed and those a subject belongs
	// to (Wormwood Scrubs report 7.2: "a full briefing for the Governing
	// Governor").
	var prisons []*config.Agency
	for _, id := range e.m.To {
		if a := e.d.Agency(id); a != nil && a.Kind == config.Prison && !slices.Contains(prisons, a) {
			prisons = append(prisons, a)
		}
	}
	for _, s := range e.m.Subjects {
		if a := e.d.Agency(s.Establishment); a != nil && a.Kind == config.Prison && !slices.Contains(prisons, a) {
			prisons = append(prisons, a)
		}
	}
	why := strings.Join(risks, ", ") + " risk needs briefing to sufficient seniority"
	for _, pr := range prisons {
		if b := e.p.blockedBy(e, pr); b != nil {
			e.trace(r, EffectCopy, "%s: governing governor of %s", why, pr.ID)
			e.trace(b, EffectOverridden, "no copy to the governing governor of %s (high-risk-seniority): %s", pr.ID, blockReason(e, b.ID(), pr.ID))
			continue
		}
		e.addDest(pr, config.GoverningGovernor, r.id, true)
		e.step(r, EffectCopy, why+": governing governor of "+pr.ID)
	}
	if r.p.CopyPAS == nil || *r.p.CopyPAS {
		pas := e.d.PAS()
		if pas == nil {
			e.deny(r, "%s, and the copy goes to PAS, but the directory has no Police Advisers Section (kind pas); ask your administrator to add it, or to set this rule's copy-pas to false", why)
			return
		}
		e.addDest(pas, config.Intake, r.id, true)
		e.step(r, EffectCopy, why+": PAS ("+pas.ID+")")
	}
}

func blockReason(e *eval, rule, prison string) string {
	switch rule {
	case "governor-to-regional-ccu":
		who, _ := e.oversightSubject(prison)
		return who + " is a subject"
	case "hq-to-ncca":
		return "HMPPS HQ is concerned; the package goes to the national counter corruption analyst"
	case "cat-a-via-pas":
		return "PAS is the gatekeeper for this prisoner and receives the package"
	}
	return "a redirection keeps the package from " + prison
}

func (r *highRiskSeniority) receive(e *eval) {
	if e.denied || e.self.Kind != config.Prison || len(e.hasAnyRisk(r.p.Risks)) == 0 || e.governorSubject(e.self.ID) {
		return
	}
	e.addDest(e.self, config.GoverningGovernor, r.id, true)
	e.trace(r, EffectCopy, "%s risk: a copy to the governing governor", strings.Join(e.hasAnyRisk(r.p.Risks), ", "))
}

// --- triage-72h -------------------------------------------------------

type triage72h struct {
	meta
	p *TriageParams
}

func (r *triage72h) receive(e *eval) {
	if e.denied || e.m.Topic != "corruption" {
		return
	}
	switch e.self.Kind {
	case config.Prison, config.ProbationDivision, config.CRC, config.PECS, config.CCURegional, config.CCUNational:
		// MoU 6.1: "Reports and intelligence relating to corruption must
		// be analysed and triaged at a local level within 72 hours."
		e.deadline(r, DeadlineTriage, r.p.Hours, "a received corruption report must be triaged; overdue items are reported")
	}
}

// --- trained-recipients -----------------------------------------------

type trainedRecipients struct {
	meta
	p *TrainingParams
}

// valid reports whether a mailbox's holder has a training record that is
// still in force.
func (r *trainedRecipients) valid(e *eval, m *config.Mailbox) bool {
	t, ok := m.TrainedOn()
	if !ok || t.After(e.now) {
		return false
	}
	return r.p.ValidDays == 0 || e.now.Sub(t).Hours() <= float64(r.p.ValidDays*24)
}

// mailbox chooses the mailbox for a destination. MoU Annex A, Data
// security: "only individuals who have been appropriately trained in
// Personal Data protection ... will be responsible for handling data".
func (r *trainedRecipients) mailbox(e *eval, d *dest) (string, bool) {
	a := d.agency
	var candidates []*config.Mailbox
	if d.contact != "" {
		for _, l := range [][]config.Mailbox{a.Escalation, a.Mailboxes} {
			for i := range l {
				if strings.EqualFold(l[i].Address, d.contact) {
					candidates = append(candidates, &l[i])
				}
			}
		}
	} else {
		for i := range a.Mailboxes {
			if a.Mailboxes[i].Function == d.fn {
				candidates = append(candidates, &a.Mailboxes[i])
			}
		}
	}
	for _, m := range candidates {
		if r.valid(e, m) {
			return m.Address, true
		}
	}
	what := fmt.Sprintf("the %s mailbox of %s", d.fn, a.ID)
	if d.contact != "" {
		what = "escalation contact " + d.contact
	}
	reason := what + " has no data-protection training record in force"
	if len(candidates) == 0 {
		reason = what + " does not exist in the directory"
	}
	if d.addition {
		d.refused = true
		e.trace(r, EffectOverridden, "no copy to %s (added by %s): %s", a.ID, d.rule, reason)
		return "", false
	}
	e.hold(d, r, reason+"; held until the directory records trained staff")
	return "", false
}

// --- retention --------------------------------------------------------

type retention struct {
	meta
	p *RetentionParams
}

func (r *retention) finish(e *eval) {
	e.deadline(r, DeadlineRetention, r.p.Days*24, "stored copies are crypto-shredded when no longer needed")
}

// --- notices ----------------------------------------------------------

type notices struct{ meta }
