package policy

import "testing"

// 5x5x5 handling code 5, "no further dissemination: refer to the
// originator": a package addressed to its originator is delivered there,
// with the referral in the trace; every other destination is held for the
// originator's release, as before.
func TestHandlingCode5IsReferredToTheOriginator(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	m := pkg("hmp-northgate", "northshire-pio", "rpiu-north-east")
	m.Label.Originator = "northshire-pio"
	m.Label.Grading.Handling = "5"
	d := decide(p, m)
	wantDelivery(t, d, "northshire-pio", "pio@northshire-pio.example", Normal, "addressed")
	wantTrace(t, d, "handling-code", EffectRecord, "referred to the originator (northshire-pio)")
	wantHold(t, d, "rpiu-north-east", "handling-code")
	wantOutcome(t, d, Hold)

	// Addressed to the originator alone: delivered, nothing waits.
	m.To = []string{"northshire-pio"}
	d = decide(p, m)
	wantOutcome(t, d, Deliver)
	if _, ok := d.Deadline(DeadlineHold); ok {
		t.Errorf("a hold clock was started for a referral to the originator")
	}
}
