package marking

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/conduit-gateway/conduit/envelope"
)

// FuzzFromSubject: a subject line is outside input. The reader must never
// panic, and what it reads must be a current classification with allowed
// descriptor and caveat, or a clear error.
func FuzzFromSubject(f *testing.F) {
	for _, s := range []string{"[OFFICIAL-SENSITIVE PERSONAL] x", "OFFICIAL: y", "RE: [EXT] (SECRET) z", "x - OFFICIAL-SENSITIVE",
		"[RESTRICTED]", "OFFICIAL - SENSITIVE UK EYES ONLY:", "[(", "OFFICIAL_SENSITIVE\u2013"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, found, err := FromSubject(s, nil)
		if err != nil {
			if !found || err.Error() == "" {
				t.Fatalf("error without a marking found: %v", err)
			}
			return
		}
		if !found {
			return
		}
		if m.Classification.Rank() >= len(envelope.Classifications) {
			t.Fatalf("read %q from %q", m.Classification, s)
		}
		if m.Descriptor != "" && !strings.Contains(strings.Join(envelope.Descriptors, ","), m.Descriptor) {
			t.Fatalf("descriptor %q", m.Descriptor)
		}
		if !utf8.ValidString(m.String()) && utf8.ValidString(s) {
			t.Fatalf("invalid UTF-8 made from valid input")
		}
	})
}

// FuzzFromPurview: the msip_labels header is outside input.
func FuzzFromPurview(f *testing.F) {
	f.Add(purviewHeader(osPersonalGUID, "OFFICIAL-SENSITIVE PERSONAL", "true"))
	f.Add(purviewHeader(officialGUID, "x", "false") + ";" + purviewHeader(osPersonalGUID, "y", "true"))
	f.Add("MSIP_Label_;=;;==")
	f.Fuzz(func(t *testing.T, h string) {
		m, found, err := FromPurview(h, table)
		if err != nil {
			if !found {
				t.Fatalf("error without a label found: %v", err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error quotes too much input: %d bytes", len(err.Error()))
			}
			return
		}
		if found && m.Classification != envelope.Official && m.Classification != envelope.OfficialSensitive {
			t.Fatalf("a label outside the table was read: %+v", m)
		}
	})
}
