package policy

import (
	"slices"

	"github.com/conduit-gateway/conduit/envelope"
)

// Params are the switchable parameters of the built-in rules. The zero
// value is never used: DefaultParams gives the values the agreements set,
// and a policy file overrides them field by field.
type Params struct {
	ClassificationCeiling CeilingParams    `yaml:"classification-ceiling,omitempty"`
	PurposeApproved       PurposeParams    `yaml:"purpose-approved,omitempty"`
	ImminentRisk          EscalationParams `yaml:"imminent-risk-escalation,omitempty"`
	HighRiskSeniority     SeniorityParams  `yaml:"high-risk-seniority,omitempty"`
	Triage                TriageParams     `yaml:"triage-72h,omitempty"`
	TrainedRecipients     TrainingParams   `yaml:"trained-recipients,omitempty"`
	Retention             RetentionParams  `yaml:"retention,omitempty"`
	HandlingCode          HandlingParams   `yaml:"handling-code,omitempty"`
}

// CeilingParams: classification-ceiling.
type CeilingParams struct {
	// Max is the highest classification this gateway sends or accepts on
	// any route. Secure email carries OFFICIAL, including
	// OFFICIAL-SENSITIVE (MoU Annex A, "Description of method of
	// sharing"); SECRET and above belong to accredited systems.
	Max envelope.Classification `yaml:"max,omitempty"`
	// Routes lowers (never raises above Max) the directory's ceiling for
	// particular agencies.
	Routes map[string]envelope.Classification `yaml:"routes,omitempty"`
}

// PurposeParams: purpose-approved. Each list may only narrow the defaults.
type PurposeParams struct {
	// HMPPSToPolice: purposes for which prison and probation information
	// may go to law enforcement (Statement of Common Principles, "Prison
	// information to be disclosed to LEAs"; MoU Annex A "Purpose").
	HMPPSToPolice []envelope.Purpose `yaml:"hmpps-to-police,omitempty"`
	// PoliceToHMPPS: purposes for which law enforcement shares with HMPPS.
	PoliceToHMPPS []envelope.Purpose `yaml:"police-to-hmpps,omitempty"`
	// Internal: purposes for sharing within one side.
	Internal []envelope.Purpose `yaml:"internal,omitempty"`
}

// EscalationParams: imminent-risk-escalation.
type EscalationParams struct {
	// AcknowledgeHours is the deadline for acknowledging an escalated
	// package; overdue, administrators are alerted.
	AcknowledgeHours int `yaml:"acknowledge-hours,omitempty"`
	// Risks are the risk flags that call for immediate escalation.
	Risks []string `yaml:"risks,omitempty"`
	// Contacts replaces the directory's escalation contacts of an agency
	// with some of its mailboxes or contacts (by address).
	Contacts map[string][]string `yaml:"contacts,omitempty"`
}

// SeniorityParams: high-risk-seniority.
type SeniorityParams struct {
	Risks []string `yaml:"risks,omitempty"`
	// CopyPAS sends the seniority copy to PAS as well as to the governing
	// governor (docs/design.md; Wormwood Scrubs report 7.2 "any previous Police
	// Advisor Section applications").
	CopyPAS *bool `yaml:"copy-pas,omitempty"`
}

// TriageParams: triage-72h.
type TriageParams struct {
	Hours int `yaml:"hours,omitempty"`
}

// TrainingParams: trained-recipients.
type TrainingParams struct {
	// ValidDays is how long a training record counts; 0 means a recorded
	// date suffices (the MoU requires training but sets no refresh period).
	ValidDays int `yaml:"valid-days,omitempty"`
}

// HandlingParams: handling-code.
type HandlingParams struct {
	// HoldHours is how long a package held under 5x5x5 handling code 5
	// ("no further dissemination: refer to the originator") may wait for
	// the originator's decision before its administrators are alerted. The
	// sources set no period (the NIM guide the Statement of Common
	// Principles cites as its Appendix D is not among them); the default,
	// 72 hours, is the MoU's only turnaround period for received
	// intelligence (6.1, triage within 72 hours), used here by analogy.
	HoldHours int `yaml:"hold-hours,omitempty"`
}

// RetentionParams: retention.
type RetentionParams struct {
	// Days after which stored copies are crypto-shredded.
	Days int `yaml:"days,omitempty"`
}

var allPurposes = func() []envelope.Purpose {
	var ps []envelope.Purpose
	for _, c := range envelope.Purposes {
		ps = append(ps, envelope.Purpose(c.Code))
	}
	return ps
}()

// DefaultParams returns the parameters the agreements set.
func DefaultParams() Params {
	copyPAS := true
	return Params{
		ClassificationCeiling: CeilingParams{Max: envelope.OfficialSensitive},
		PurposeApproved: PurposeParams{
			// Statement of Common Principles: "the prevention, detection,
			// investigation or prosecution of crime; in the interests of
			// national security or public safety and for the purposes of
			// securing or maintaining prison security or good order and
			// discipline"; MoU Annex A adds the three Approved Purposes.
			// Assessing a prisoner's risk is what law enforcement shares
			// with HMPPS for, not a purpose for HMPPS to share with it.
			HMPPSToPolice: []envelope.Purpose{"crime", "national-security", "prison-security",
				"service-threats", "corruption-prison", "corruption-probation"},
			PoliceToHMPPS: slices.Clone(allPurposes),
			Internal:      slices.Clone(allPurposes),
		},
		ImminentRisk: EscalationParams{
			AcknowledgeHours: 1,
			// MoU 6.1 (both sides): "potential abscond, escape or threat
			// to life".
			Risks: []string{"escape", "abscond", "threat-to-life"},
		},
		HighRiskSeniority: SeniorityParams{
			// Wormwood Scrubs report 7.1: "the possible use of firearms
			// made this incident both high profile and high risk".
			Risks:   []string{"firearms", "high-profile"},
			CopyPAS: &copyPAS,
		},
		// MoU 6.1 prison and probation responsibilities: "analysed and
		// triaged at a local level within 72 hours".
		Triage:            TriageParams{Hours: 72},
		TrainedRecipients: TrainingParams{ValidDays: 0},
		// The MoU sets no period ("the period necessary for the Approved
		// Purposes and in line with approved policies"); six years is a
		// conservative records default that an administrator should set.
		Retention: RetentionParams{Days: 6 * 365},
		// No period in the sources: see HandlingParams.
		HandlingCode: HandlingParams{HoldHours: 72},
	}
}

// ukEEA lists the jurisdictions a package may go to: the United Kingdom
// and the European Economic Area (MoU Annex A, "Data handling": "The
// parties will not transfer the data received under this MoU outside the
// UK / EEA"). Not a parameter: the agreement leaves no room to widen it.
var ukEEA = map[string]bool{
	"GB": true,
	"AT": true, "BE": true, "BG": true, "HR": true, "CY": true, "CZ": true, "DK": true,
	"EE": true, "FI": true, "FR": true, "DE": true, "GR": true, "HU": true, "IE": true,
	"IT": true, "LV": true, "LT": true, "LU": true, "MT": true, "NL": true, "PL": true,
	"PT": true, "RO": true, "SK": true, "SI": true, "ES": true, "SE": true,
	"IS": true, "LI": true, "NO": true,
}
