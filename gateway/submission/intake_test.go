package submission

import (
	"bufio"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
)

func TestSubjectHeaderParsing(t *testing.T) {
	s, err := parseSubjectHeader(`role=prisoner; establishment=hmp-northgate; flags="cat-a, e-list"`)
	if err != nil || s.Role != "prisoner" || s.Establishment != "hmp-northgate" || len(s.Flags) != 2 {
		t.Errorf("got %+v, %v", s, err)
	}
	for _, bad := range []string{"establishment=x", "role", "role=x; colour=red"} {
		if _, err := parseSubjectHeader(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// testGateway is a gateway value with the example directory, enough for
// the intake's header parsing (no listeners, keys or store).
func testServer(t testing.TB) *Server {
	t.Helper()
	dir, err := config.LoadDirectory("directory.yaml", examples.Directory)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Agency: "northshire-pio", Directory: dir}
	return &Server{cfg: cfg, self: dir.Agency("northshire-pio"), now: time.Now}
}

func TestManifestFromHeader(t *testing.T) {
	g := testServer(t)
	// The classification from the subject marking, the rest of the label
	// from a Handling-Label header without one.
	hdr := "Subject: [OFFICIAL-SENSITIVE] x\r\nConduit-Risk: escape, Firearms\r\nConduit-Topic: corruption\r\n" +
		"Handling-Label: v=1; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; reference=NP-1\r\n" +
		"Conduit-Subject: role=governing-governor; establishment=hmp-northgate\r\n\r\n"
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := g.manifestFromHeader(h, []string{"intel@northgate.hmpps.example"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Label.Classification != "OFFICIAL-SENSITIVE" || len(m.Risk) != 2 || m.Risk[1] != "firearms" ||
		m.Topic != "corruption" || len(m.To) != 1 || m.To[0] != "hmp-northgate" || m.Label.Originator != "northshire-pio" {
		t.Errorf("manifest = %+v", m)
	}
	// A wrong header value is a 554 that names it.
	h.Set(hdrRisk, "boredom")
	_, err = g.manifestFromHeader(h, []string{"intel@northgate.hmpps.example"})
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 || !strings.Contains(se.Message, "boredom") {
		t.Errorf("bad risk: %v", err)
	}
}

// FuzzIntakeHeaders: a submitted message's header is outside input. The
// intake must answer with a manifest or a 5xx, never panic.
func FuzzIntakeHeaders(f *testing.F) {
	g := testServer(f)
	f.Add("Subject: OFFICIAL: x\r\nHandling-Label: v=1; classification=OFFICIAL\r\n\r\n")
	f.Add("Conduit-Subject: role=prisoner; flags=cat-a\r\nConduit-Risk: ,,,\r\n\r\n")
	f.Add("Subject: [RESTRICTED\r\n\r\n")
	f.Fuzz(func(t *testing.T, hdr string) {
		h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(hdr)))
		if err != nil {
			return
		}
		m, err := g.manifestFromHeader(h, []string{"intel@northgate.hmpps.example"})
		var se *smtp.SMTPError
		if err != nil && (!errors.As(err, &se) || se.Code < 500) {
			t.Fatalf("error is not a 5xx reply: %v", err)
		}
		if err == nil && m == nil {
			t.Fatal("no manifest and no error")
		}
	})
}

// FuzzStrictCRLF: whatever passes is byte-identical and has no bare line
// ending; whatever has one fails.
