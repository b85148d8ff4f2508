package config

import (
	"strings"
	"testing"
)

// FuzzParse feeds config files with an inline directory (administrator
// input, and the directory may come from a partner) to the parser: it
// must never panic, every error must say where, and an accepted
// directory must hold the references routing relies on.
//
// The seeds are small on purpose: the fuzzer minimises every interesting
// input, and minimising a large directory takes longer than a CI run.
// More seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	indented := "  " + strings.ReplaceAll(strings.TrimSuffix(base, "\n"), "\n", "\n  ") + "\n"
	f.Add([]byte("agency: northshire-pio\npolicy: policy.yaml\ndirectory:\n" + indented))
	f.Add([]byte("agency: pas\ndirectory: [\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse("fuzz.yaml", src, nil)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		d := c.Directory
		if c.Self() == nil || d.PAS() == nil || d.NationalCCU() == nil {
			t.Fatal("accepted a directory without its national agencies or this gateway")
		}
		for _, a := range d.Agencies {
			if a.Mailbox(Intake) == nil {
				t.Fatalf("%s accepted without an intake mailbox", a.ID)
			}
			if a.Kind == Prison {
				if d.RegionalCCU(a.Region) == nil {
					t.Fatalf("prison %s accepted without a regional CCU", a.ID)
				}
				if d.PIOFor(a.ID) == nil && d.FIBOf(a.Force) == nil {
					t.Fatalf("prison %s accepted without a conduit", a.ID)
				}
			}
		}
	})
}
