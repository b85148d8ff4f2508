package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
)

// Kind is what an agency is; the sharing policy routes by kind.
type Kind string

// The agency kinds (MoU section 4; Statement of Common Principles).
const (
	PoliceForce       Kind = "police-force"
	PIO               Kind = "pio"  // a force's Prison Intelligence Officer unit
	RPIU              Kind = "rpiu" // Regional Prison Intelligence Unit
	FIB               Kind = "fib"  // a force intelligence bureau
	Prison            Kind = "prison"
	ProbationDivision Kind = "probation-division"
	CRC               Kind = "crc"
	PECS              Kind = "pecs"
	PAS               Kind = "pas"
	CCUNational       Kind = "ccu-national"
	CCURegional       Kind = "ccu-regional"
	HMPPSHQ           Kind = "hmpps-hq"
)

// Kinds lists every kind, in the order of the documentation.
var Kinds = []Kind{PoliceForce, PIO, RPIU, FIB, Prison, ProbationDivision, CRC, PECS, PAS, CCUNational, CCURegional, HMPPSHQ}

// Police reports whether the agency kind is on the law-enforcement side of
// the agreements; everything else is HMPPS (PAS sits at HMPPS HQ).
func (k Kind) Police() bool {
	return k == PoliceForce || k == PIO || k == RPIU || k == FIB
}

// Function is what a mailbox is for; rules that need a particular reader
// (the national counter corruption analyst, the PECS Security Manager, the
// governing governor) ask for a function, never an address.
type Function string

// Mailbox functions.
const (
	Intake            Function = "intake"             // the agency's intelligence intake
	GoverningGovernor Function = "governing-governor" // Wormwood Scrubs report 7.2
	LCCM              Function = "lccm"               // Local Counter Corruption Manager (MoU 4.1)
	SecurityManager   Function = "security-manager"   // PECS Security Manager (MoU 4.1)
	NCCA              Function = "ncca"               // national counter corruption analyst (MoU 4.1, 6.1)
	RCCA              Function = "rcca"               // regional counter corruption analyst (MoU 4.1)
	Analyst           Function = "analyst"
	Duty              Function = "duty"
)

// Functions lists the mailbox functions.
var Functions = []Function{Intake, GoverningGovernor, LCCM, SecurityManager, NCCA, RCCA, Analyst, Duty}

// Mailbox is one address at an agency and the record of its holder's
// data-protection training (MoU Annex A, "Data security").
type Mailbox struct {
	Address  string   `yaml:"address"`
	Function Function `yaml:"function,omitempty"`
	// Holder is the post that holds the mailbox ("Head of Security"), not a
	// person's name.
	Holder string `yaml:"holder,omitempty"`
	// Trained is the date (YYYY-MM-DD) the holder last completed
	// data-protection training; empty means there is no record.
	Trained string `yaml:"trained,omitempty"`

	trained time.Time
}

// TrainedOn returns the training date, and false if there is no record.
func (m *Mailbox) TrainedOn() (time.Time, bool) { return m.trained, !m.trained.IsZero() }

// PostKind is what kind of post a post is, for administrators' rules
// (a rule may treat a senior manager differently from other staff).
type PostKind string

// The kinds of post.
const (
	PostStaff         PostKind = "staff"          // a member of staff (an officer, an analyst)
	PostSeniorManager PostKind = "senior-manager" // a senior manager: deputy governor grade, a head of function (MoU 4.1: the LCCM is at deputy governor grade)
	PostGovernor      PostKind = "governor"       // a governor grade: the governing governor, a duty governor
	PostPolice        PostKind = "police"         // a police officer based at the establishment (a PIO, MoU 4.2)
	PostContractor    PostKind = "contractor"     // staff of a contracted service provider (MoU 3.2, 6.1)
)

// PostKinds lists the kinds of post.
var PostKinds = []PostKind{PostStaff, PostSeniorManager, PostGovernor, PostPolice, PostContractor}

// Post is a post at an establishment that a package's subject may hold:
// the Local Counter Corruption Manager, the head of security, a deputy
// governor (MoU 4.1). Local agreements route by post (MoU 7.1).
type Post struct {
	// ID is how a package names the post (lccm, head-of-security).
	ID   string   `yaml:"id"`
	Name string   `yaml:"name"`
	Kind PostKind `yaml:"kind"`
	// Oversight marks a post with oversight of the intelligence function
	// at the establishment. A subject holding it is treated like the
	// governing governor: the establishment receives nothing (MoU 6.1
	// police, bullet 5: "if it is inappropriate to disseminate to prisons
	// (e.g. if it concerns the governing-governor)" — the governor is the
	// example, not the whole rule). The administrator decides which posts.
	Oversight bool `yaml:"oversight,omitempty"`
}

// EnvelopeProfile is the message format a partner's gateway speaks.
type EnvelopeProfile string

// The envelope profiles.
const (
	EnvelopeConduit EnvelopeProfile = "conduit"
	EnvelopePGPMIME EnvelopeProfile = "pgp-mime"
)

// PlainPGPMIME reports whether the agency speaks standard PGP/MIME only.
func (a *Agency) PlainPGPMIME() bool { return a != nil && a.Envelope == EnvelopePGPMIME }

// Agency is one entry of the directory.
type Agency struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
	Kind Kind   `yaml:"kind"`
	// Region is the region the agency is in (prisons, RPIUs, probation
	// divisions, forces).
	Region string `yaml:"region,omitempty"`
	// Covers lists the regions a regional CCU covers (each regional CCU
	// team covers two ROCU regions, MoU 4.1).
	Covers []string `yaml:"covers,omitempty"`
	// Force is, for a PIO or FIB, the police force it belongs to; for a
	// prison, the force in whose area it is located (its FIB is the conduit
	// when the prison has no PIO: Statement, FIB conduit).
	Force string `yaml:"force,omitempty"`
	// Serves lists the establishments a PIO serves (exclusively or shared:
	// MoU 4.2 "each prison should have access to a PIO").
	Serves []string `yaml:"serves,omitempty"`
	// Jurisdiction is the ISO 3166-1 alpha-2 country code (GB for the UK).
	Jurisdiction string `yaml:"jurisdiction"`
	// Ceiling is the highest classification the route to this agency is
	// accredited for; OFFICIAL-SENSITIVE if not given (MoU Annex A,
	// "Description of method of sharing": secure email).
	Ceiling envelope.Classification `yaml:"ceiling,omitempty"`
	// Gateway is the agency gateway's SMTP host[:port]: a host name
	// (RFC 1123: labels of letters, digits and inner hyphens, up to 63
	// characters each, 253 in all), an IPv4 address or a bracketed IPv6
	// address, and an optional port (25 when left out). Empty for an
	// agency that is not on Conduit: the policy still routes by it, and a
	// package that would go there is refused with that reason.
	Gateway string `yaml:"gateway,omitempty"`
	// Gateways lists several gateways of the agency (host[:port] each), in
	// order of preference, like MX records: a relay tries the next when
	// one cannot be reached, with the same TLS checks on each. When both
	// are given, Gateway is the first. The agency's gateways share one
	// store (PostgreSQL), so any of them takes any package.
	Gateways []string `yaml:"gateways,omitempty"`
	// Fingerprint pins the gateway's OpenPGP key (40 hex digits for v4,
	// 64 for v6); spaces are ignored. Required with a gateway.
	Fingerprint string `yaml:"fingerprint,omitempty"`
	// TLSPin, when set, pins the agency gateway's TLS key: the SHA-256 of
	// its certificate's SubjectPublicKeyInfo, 64 hex digits. The relay then
	// accepts that key whoever signed the certificate, and nothing else;
	// without a pin the certificate must verify against the agencies' CA.
	TLSPin string `yaml:"tls-pin,omitempty"`
	// MutualTLS requires the agency's gateway to present its TLS client
	// certificate (verified by the agencies' CA, naming the agency, and
	// matching TLSPin when there is one) when it delivers here.
	MutualTLS bool `yaml:"mutual-tls,omitempty"`
	// MessageBytes is the largest envelope the agency's gateway accepts
	// (its limits.message-bytes; default DefaultMessageBytes). A package
	// whose envelope would be larger is refused at submission, with a
	// 5xx, rather than accepted and then refused by the partner.
	MessageBytes int64 `yaml:"message-bytes,omitempty"`
	// Envelope is what the agency's gateway speaks: conduit (the default:
	// Conduit envelopes with a manifest and signed receipts) or pgp-mime
	// (a partner without Conduit: standard RFC 3156 PGP/MIME, read by
	// GnuPG, Kleopatra, Thunderbird or a commercial gateway, which sends
	// no receipts).
	Envelope  EnvelopeProfile `yaml:"envelope,omitempty"`
	Mailboxes []Mailbox       `yaml:"mailboxes"`
	// Escalation lists the contacts that receive immediate copies of
	// packages carrying a major or imminent risk (MoU 6.1).
	Escalation []Mailbox `yaml:"escalation,omitempty"`
	// Posts lists the posts at this establishment a package's subject may
	// hold (prisons, probation divisions, CRCs, PECS contractors).
	Posts []Post `yaml:"posts,omitempty"`
}

// DefaultPrisonPosts are the posts of a prison whose directory entry lists
// none: the two every prison must appoint (MoU 4.1: "Each HMPPS and
// Privately Contracted Prison must appoint a Local Counter Corruption
// Manager (LCCM) at Deputy Governor grade and a Deputy Local Counter
// Corruption Manager (D-LCCM)"), both the prison's lead for corruption and
// so with oversight of its intelligence on it. An administrator who lists
// posts replaces them.
func DefaultPrisonPosts() []Post {
	return []Post{
		{ID: "lccm", Name: "Local Counter Corruption Manager", Kind: PostSeniorManager, Oversight: true},
		{ID: "d-lccm", Name: "Deputy Local Counter Corruption Manager", Kind: PostStaff, Oversight: true},
	}
}

// Post returns the establishment's post with the id, or nil.
func (a *Agency) Post(id string) *Post {
	for i := range a.Posts {
		if a.Posts[i].ID == id {
			return &a.Posts[i]
		}
	}
	return nil
}

// PostIDs lists the establishment's post ids, for error messages.
func (a *Agency) PostIDs() []string {
	out := make([]string, len(a.Posts))
	for i, p := range a.Posts {
		out[i] = p.ID
	}
	return out
}

// GatewayHostPort returns the gateway's host name (or address) and the
// host:port to connect to, port 25 (SMTP) when the directory leaves it
// out; both empty for an agency not on Conduit.
func (a *Agency) GatewayHostPort() (host, addr string) { return HostPort(a.Gateway) }

// HostPort splits a directory gateway entry (host[:port]) into its host
// and the address to dial, port 25 when none is given.
func HostPort(g string) (host, addr string) {
	if g == "" {
		return "", ""
	}
	if h, _, err := net.SplitHostPort(g); err == nil {
		return h, g
	}
	h := strings.TrimSuffix(strings.TrimPrefix(g, "["), "]")
	return h, net.JoinHostPort(h, "25")
}

// Mailbox returns the first mailbox with the function, or nil.
func (a *Agency) Mailbox(f Function) *Mailbox {
	for i := range a.Mailboxes {
		if a.Mailboxes[i].Function == f {
			return &a.Mailboxes[i]
		}
	}
	return nil
}

// Directory is the agency directory: every agency a gateway may exchange
// packages with, and the indexes the sharing policy routes by.
type Directory struct {
	Agencies []*Agency `yaml:"agencies"`

	byID       map[string]*Agency
	regionalCC map[string]*Agency // region → regional CCU covering it
	pioFor     map[string]*Agency // prison → its PIO
	fibFor     map[string]*Agency // force → its FIB
	rpiuFor    map[string]*Agency // region → RPIU
	pas, ncca  *Agency
	hq         *Agency
}

// Agency returns the agency with the id, or nil.
func (d *Directory) Agency(id string) *Agency { return d.byID[id] }

// RegionalCCU returns the regional CCU covering a region, or nil.
func (d *Directory) RegionalCCU(region string) *Agency { return d.regionalCC[region] }

// PIOFor returns the PIO unit serving a prison, or nil if it has none.
func (d *Directory) PIOFor(prison string) *Agency { return d.pioFor[prison] }

// FIBOf returns the force intelligence bureau of a police force, or nil.
func (d *Directory) FIBOf(force string) *Agency { return d.fibFor[force] }

// RPIUFor returns the RPIU of a region, or nil.
func (d *Directory) RPIUFor(region string) *Agency { return d.rpiuFor[region] }

// PAS returns the Police Advisers Section.
func (d *Directory) PAS() *Agency { return d.pas }

// NationalCCU returns the national Counter Corruption Unit.
func (d *Directory) NationalCCU() *Agency { return d.ncca }

// HQ returns HMPPS headquarters, or nil if the directory has none.
func (d *Directory) HQ() *Agency { return d.hq }

// Organisation returns the id of the organisation an agency belongs to: a
// PIO unit or FIB is part of its force; every other agency is its own.
func (d *Directory) Organisation(id string) string {
	if a := d.byID[id]; a != nil && (a.Kind == PIO || a.Kind == FIB) && a.Force != "" {
		return a.Force
	}
	return id
}

// LoadDirectory reads a directory file.
func LoadDirectory(file string, src []byte) (*Directory, error) {
	doc, err := ParseDoc(file, src)
	if err != nil {
		return nil, err
	}
	return doc.directory("$")
}

// directory decodes and checks the directory at path in the document.
func (doc *Doc) directory(path string) (*Directory, error) {
	var d Directory
	if err := doc.Decode(path, &d); err != nil {
		return nil, err
	}
	if err := d.check(doc, path); err != nil {
		return nil, err
	}
	return &d, nil
}

const dateLayout = "2006-01-02"

// check validates every agency and the references between them, and
// builds the indexes. The first error is returned, with its line.
func (d *Directory) check(doc *Doc, base string) error {
	if len(d.Agencies) == 0 {
		return doc.Errorf(base+".agencies", "lists no agencies")
	}
	d.byID = make(map[string]*Agency, len(d.Agencies))
	d.regionalCC = map[string]*Agency{}
	d.pioFor = map[string]*Agency{}
	d.fibFor = map[string]*Agency{}
	d.rpiuFor = map[string]*Agency{}
	at := func(i int, field string) string {
		p := fmt.Sprintf("%s.agencies[%d]", base, i)
		if field != "" {
			p += "." + field
		}
		return p
	}
	addresses := map[string]string{}
	// First pass: each agency on its own.
	for i, a := range d.Agencies {
		if a == nil {
			return doc.Errorf(at(i, ""), "is empty")
		}
		if !envelope.IsAgencyID(a.ID) {
			return doc.Errorf(at(i, "id"), "%q is not an agency id: 1 to 64 lower-case letters, digits and hyphens", a.ID)
		}
		if _, dup := d.byID[a.ID]; dup {
			return doc.Errorf(at(i, "id"), "duplicate agency id %q", a.ID)
		}
		d.byID[a.ID] = a
		if strings.TrimSpace(a.Name) == "" {
			return doc.Errorf(at(i, "name"), "agency %s has no name", a.ID)
		}
		if !slices.Contains(Kinds, a.Kind) {
			return doc.Errorf(at(i, "kind"), "%q is not an agency kind; allowed: %s", a.Kind, joinKinds())
		}
		if !isCountry(a.Jurisdiction) {
			return doc.Errorf(at(i, "jurisdiction"), "%q is not an ISO 3166-1 alpha-2 country code (GB for the UK)", a.Jurisdiction)
		}
		if a.Ceiling == "" {
			a.Ceiling = envelope.OfficialSensitive
		} else if !slices.Contains(envelope.Classifications, a.Ceiling) {
			return doc.Errorf(at(i, "ceiling"), "%q is not a classification; allowed: OFFICIAL, OFFICIAL-SENSITIVE, SECRET, TOP SECRET", a.Ceiling)
		}
		if a.Gateway == "" && len(a.Gateways) > 0 {
			a.Gateway = a.Gateways[0]
		}
		if a.Gateway != "" {
			if err := CheckHostPort(a.Gateway); err != nil {
				return doc.Errorf(at(i, "gateway"), "%v", err)
			}
		}
		for j, g := range a.Gateways {
			if err := CheckHostPort(g); err != nil {
				return doc.Errorf(fmt.Sprintf("%s[%d]", at(i, "gateways"), j), "%v", err)
			}
		}
		if a.MessageBytes < 0 {
			return doc.Errorf(at(i, "message-bytes"), "must not be negative")
		}
		if a.MessageBytes == 0 {
			a.MessageBytes = DefaultMessageBytes
		}
		fp := strings.ToUpper(strings.ReplaceAll(a.Fingerprint, " ", ""))
		switch b, err := hex.DecodeString(fp); {
		case fp == "" && a.Gateway == "":
			// Not on Conduit: no key to pin.
		case fp == "":
			return doc.Errorf(at(i, "fingerprint"), "agency %s has a gateway but no fingerprint: give its OpenPGP fingerprint (conduit init prints it; conduit keys export shows it)", a.ID)
		case err != nil || (len(b) != 20 && len(b) != 32):
			return doc.Errorf(at(i, "fingerprint"), "must be an OpenPGP fingerprint: 40 hex digits (v4) or 64 (v6)")
		case a.Gateway == "":
			return doc.Errorf(at(i, "gateway"), "agency %s has a fingerprint but no gateway: give its gateway's host[:port], or leave both out if it is not on Conduit", a.ID)
		}
		a.Fingerprint = fp
		if a.TLSPin != "" {
			pin := strings.ToLower(strings.NewReplacer(" ", "", ":", "").Replace(a.TLSPin))
			if b, err := hex.DecodeString(pin); err != nil || len(b) != 32 {
				return doc.Errorf(at(i, "tls-pin"), "must be the SHA-256 of the gateway certificate's public key: 64 hex digits")
			}
			a.TLSPin = pin
		}
		if len(a.Mailboxes) == 0 {
			return doc.Errorf(at(i, "mailboxes"), "agency %s has no mailbox", a.ID)
		}
		lists := []struct {
			name string
			mbs  []Mailbox
		}{{"mailboxes", a.Mailboxes}, {"escalation", a.Escalation}}
		for _, l := range lists {
			for j := range l.mbs {
				m := &l.mbs[j]
				mp := fmt.Sprintf("%s[%d]", at(i, l.name), j)
				addr, err := mail.ParseAddress(m.Address)
				if err != nil || addr.Name != "" || addr.Address != m.Address {
					return doc.Errorf(mp+".address", "%q is not a bare mail address", m.Address)
				}
				if other, dup := addresses[strings.ToLower(m.Address)]; dup && other != a.ID {
					return doc.Errorf(mp+".address", "%s is already a mailbox of %s", m.Address, other)
				}
				addresses[strings.ToLower(m.Address)] = a.ID
				if l.name == "escalation" {
					if m.Function != "" && m.Function != Duty {
						return doc.Errorf(mp+".function", "escalation contacts have function duty (or none)")
					}
					m.Function = Duty
				} else if m.Function == "" {
					m.Function = Intake
				} else if !slices.Contains(Functions, m.Function) {
					return doc.Errorf(mp+".function", "%q is not a mailbox function; allowed: %s", m.Function, joinFunctions())
				}
				if m.Trained != "" {
					t, err := time.Parse(dateLayout, m.Trained)
					if err != nil {
						return doc.Errorf(mp+".trained", "%q is not a date such as 2026-03-01", m.Trained)
					}
					m.trained = t
				}
			}
		}
		switch a.Envelope {
		case "":
			a.Envelope = EnvelopeConduit
		case EnvelopeConduit, EnvelopePGPMIME:
		default:
			return doc.Errorf(at(i, "envelope"), "%q is not an envelope profile; allowed: conduit (the default), pgp-mime (a partner without Conduit)", a.Envelope)
		}
		if a.Kind == Prison && len(a.Posts) == 0 {
			a.Posts = DefaultPrisonPosts()
		}
		if len(a.Posts) > 0 && !slices.Contains([]Kind{Prison, ProbationDivision, CRC, PECS}, a.Kind) {
			return doc.Errorf(at(i, "posts"), "only an establishment (a prison, probation division, CRC or PECS contractor) lists posts")
		}
		for j, p := range a.Posts {
			pp := fmt.Sprintf("%s[%d]", at(i, "posts"), j)
			if !envelope.IsAgencyID(p.ID) {
				return doc.Errorf(pp+".id", "%q is not a post id: lower-case letters, digits and hyphens, such as lccm or head-of-security", p.ID)
			}
			if slices.ContainsFunc(a.Posts[:j], func(q Post) bool { return q.ID == p.ID }) {
				return doc.Errorf(pp+".id", "duplicate post %q at %s", p.ID, a.ID)
			}
			if strings.TrimSpace(p.Name) == "" {
				return doc.Errorf(pp+".name", "post %s at %s has no name", p.ID, a.ID)
			}
			if !slices.Contains(PostKinds, p.Kind) {
				return doc.Errorf(pp+".kind", "%q is not a kind of post; allowed: %s", p.Kind, joinPostKinds())
			}
		}
		if a.Mailbox(Intake) == nil {
			return doc.Errorf(at(i, "mailboxes"), "agency %s has no intake mailbox (a mailbox with function intake, the default)", a.ID)
		}
		need := map[Kind]Function{Prison: GoverningGovernor, CCUNational: NCCA, PECS: SecurityManager}
		if f, ok := need[a.Kind]; ok && a.Mailbox(f) == nil {
			return doc.Errorf(at(i, "mailboxes"), "a %s needs a mailbox with function %s", a.Kind, f)
		}
		switch a.Kind {
		case Prison, RPIU, ProbationDivision, CRC:
			if a.Region == "" {
				return doc.Errorf(at(i, ""), "a %s needs a region", a.Kind)
			}
		case CCURegional:
			if len(a.Covers) == 0 {
				return doc.Errorf(at(i, ""), "a regional CCU needs covers: the regions it covers")
			}
		}
		if len(a.Covers) > 0 && a.Kind != CCURegional {
			return doc.Errorf(at(i, "covers"), "only a regional CCU covers regions")
		}
		if len(a.Serves) > 0 && a.Kind != PIO {
			return doc.Errorf(at(i, "serves"), "only a PIO unit serves establishments")
		}
		switch a.Kind {
		case PAS:
			if d.pas != nil {
				return doc.Errorf(at(i, "kind"), "a second PAS (%s; %s is already the Police Advisers Section)", a.ID, d.pas.ID)
			}
			d.pas = a
		case CCUNational:
			if d.ncca != nil {
				return doc.Errorf(at(i, "kind"), "a second national CCU (%s; %s already is)", a.ID, d.ncca.ID)
			}
			d.ncca = a
		case HMPPSHQ:
			if d.hq != nil {
				return doc.Errorf(at(i, "kind"), "a second HMPPS HQ (%s; %s already is)", a.ID, d.hq.ID)
			}
			d.hq = a
		}
	}
	// Second pass: references between agencies.
	for i, a := range d.Agencies {
		for j, r := range a.Covers {
			if prev := d.regionalCC[r]; prev != nil {
				return doc.Errorf(fmt.Sprintf("%s[%d]", at(i, "covers"), j), "region %s is already covered by %s", r, prev.ID)
			}
			d.regionalCC[r] = a
		}
		if a.Force != "" {
			// The force may be left out of a small directory; when it
			// is listed, it must be a police force.
			if f := d.byID[a.Force]; f != nil && f.Kind != PoliceForce {
				return doc.Errorf(at(i, "force"), "%q is a %s, not a police-force", a.Force, f.Kind)
			} else if !envelope.IsAgencyID(a.Force) {
				return doc.Errorf(at(i, "force"), "%q is not an agency id: 1 to 64 lower-case letters, digits and hyphens", a.Force)
			}
		}
		switch a.Kind {
		case FIB:
			if a.Force == "" {
				break
			}
			if prev := d.fibFor[a.Force]; prev != nil {
				return doc.Errorf(at(i, "force"), "force %s already has FIB %s", a.Force, prev.ID)
			}
			d.fibFor[a.Force] = a
		case RPIU:
			if prev := d.rpiuFor[a.Region]; prev != nil {
				return doc.Errorf(at(i, "region"), "region %s already has RPIU %s", a.Region, prev.ID)
			}
			d.rpiuFor[a.Region] = a
		case PIO:
			for j, p := range a.Serves {
				sp := fmt.Sprintf("%s[%d]", at(i, "serves"), j)
				pr := d.byID[p]
				if pr == nil {
					return doc.Errorf(sp, "PIO %s serves %q, which is not in the directory", a.ID, p)
				}
				if pr.Kind != Prison {
					return doc.Errorf(sp, "PIO %s serves %s, which is a %s, not a prison", a.ID, p, pr.Kind)
				}
				if prev := d.pioFor[p]; prev != nil {
					return doc.Errorf(sp, "prison %s is already served by PIO %s", p, prev.ID)
				}
				d.pioFor[p] = a
			}
		}
	}
	// A directory may be small: two agencies that exchange packages are
	// a valid directory. A rule that needs an agency the directory lacks
	// (PAS, the national CCU, the regional CCU covering a region, the FIB
	// conduit of a prison without a PIO) refuses the packages that need
	// it, with that reason, when they are submitted.
	return nil
}

// CheckHostPort checks a gateway address: a host name by the rules of
// RFC 1123 section 2.1 (labels of 1 to 63 letters, digits and hyphens, not
// beginning or ending with a hyphen; 253 characters in all), an IPv4
// address, or an IPv6 address in brackets, then an optional :port. The
// error says what is expected.
func CheckHostPort(s string) error {
	const want = "expected a host name (such as conduit.hmp-northgate.example or localhost), an IPv4 address or a bracketed IPv6 address, with an optional :port"
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		host = h
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: the port %q is not a number from 1 to 65535", s, port)
		}
		if strings.Contains(h, ":") {
			if ip := net.ParseIP(h); ip == nil {
				return fmt.Errorf("%q: %q is not an IPv6 address; %s", s, h, want)
			}
			return nil
		}
	} else if strings.Contains(s, ":") {
		if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") && net.ParseIP(s[1:len(s)-1]) != nil {
			return nil
		}
		return fmt.Errorf("%q: %s (an IPv6 address needs brackets: [2001:db8::1]:25)", s, want)
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if err := checkHostName(host); err != nil {
		return fmt.Errorf("%q: %v; %s", s, err, want)
	}
	return nil
}

// GatewayHosts lists the agency's gateways in order of preference:
// Gateways, with Gateway first when it is not among them.
func (a *Agency) GatewayHosts() []string {
	if len(a.Gateways) == 0 {
		if a.Gateway == "" {
			return nil
		}
		return []string{a.Gateway}
	}
	if a.Gateway != "" && !slices.Contains(a.Gateways, a.Gateway) {
		return append([]string{a.Gateway}, a.Gateways...)
	}
	return a.Gateways
}

// checkHostName applies RFC 1123's host name rules.
func checkHostName(h string) error {
	name := strings.TrimSuffix(h, ".")
	if name == "" {
		return errors.New("the host name is empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("the host name is %d characters long, more than 253", len(name))
	}
	for _, l := range strings.Split(name, ".") {
		switch {
		case l == "":
			return errors.New("the host name has an empty label (two dots in a row)")
		case len(l) > 63:
			return fmt.Errorf("the label %q is longer than 63 characters", l)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Errorf("the label %q begins or ends with a hyphen", l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("the label %q holds %q; only letters, digits and hyphens are allowed", l, c)
			}
		}
	}
	return nil
}

func isCountry(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

func joinKinds() string {
	var ks []string
	for _, k := range Kinds {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

func joinFunctions() string {
	var fs []string
	for _, f := range Functions {
		fs = append(fs, string(f))
	}
	return strings.Join(fs, ", ")
}

func joinPostKinds() string {
	var ks []string
	for _, k := range PostKinds {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}
