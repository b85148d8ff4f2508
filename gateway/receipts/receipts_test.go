package receipts

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
)

// oldBody is the receipt body as gateways before receipt lists wrote it
// (inbound.receiptBody): a receipt alone must stay byte for byte what they
// wrote and read.
type oldBody struct {
	Package   string    `json:"package"`
	Agency    string    `json:"agency"`
	Mailboxes []string  `json:"mailboxes"`
	Delivered time.Time `json:"delivered"`
	Released  string    `json:"released,omitempty"`
}

func TestAReceiptAloneKeepsTheSingleForm(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
	for _, b := range []Body{
		{Package: "cdt-a", Agency: "hmp-northgate", Mailboxes: []string{"intel@hmp-northgate.example"}, Delivered: at},
		{Package: "cdt-b", Agency: "hmp-northgate", Mailboxes: []string{"a@x", "b@x"}, Delivered: at, Released: "Q7, released by admin"},
	} {
		ctype, got, err := Encode([]Body{b})
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(oldBody(b))
		if ctype != Type || string(got) != string(want) {
			t.Errorf("single receipt: %s %s; want %s %s", ctype, got, Type, want)
		}
		// What an older gateway does with it.
		var old oldBody
		if err := json.Unmarshal(got, &old); err != nil || old.Package != b.Package {
			t.Errorf("an older gateway reads %+v, %v", old, err)
		}
	}
}

func TestDecodeTakesBothFormsAndRefusesAnythingElseWhole(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	a := Body{Package: "cdt-a", Agency: "hmp-northgate", Mailboxes: []string{"m@x"}, Delivered: at}
	b := Body{Package: "cdt-b", Agency: "hmp-northgate", Mailboxes: []string{"m@x"}, Delivered: at}
	_, list, err := Encode([]Body{a, b})
	if err != nil {
		t.Fatal(err)
	}
	_, single, _ := Encode([]Body{a})
	for _, c := range []struct {
		name string
		body string
		want []string // packages; nil: refused
	}{
		{"single", string(single), []string{"cdt-a"}},
		{"single with CRLF around it", "\r\n" + string(single) + "\r\n", []string{"cdt-a"}},
		{"list", string(list), []string{"cdt-a", "cdt-b"}},
		{"list of one", `{"receipts":[{"package":"cdt-a","agency":"x","mailboxes":["m@x"]}]}`, []string{"cdt-a"}},
		{"not JSON", "package cdt-a", nil},
		{"neither", `{"agency":"hmp-northgate"}`, nil},
		{"both forms", `{"package":"cdt-a","receipts":[{"package":"cdt-b"}]}`, nil},
		{"a list with a single's fields", `{"agency":"x","receipts":[{"package":"cdt-b"}]}`, nil},
		{"empty list", `{"receipts":[]}`, nil},
		{"an entry without a package", `{"receipts":[{"package":"cdt-a"},{"agency":"x"}]}`, nil},
		{"a package listed twice", `{"receipts":[{"package":"cdt-a"},{"package":"cdt-a"}]}`, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode([]byte(c.body))
			if c.want == nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("decoded %+v, %v; want ErrInvalid", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var pkgs []string
			for _, g := range got {
				pkgs = append(pkgs, g.Package)
			}
			if strings.Join(pkgs, ",") != strings.Join(c.want, ",") {
				t.Fatalf("packages %v; want %v", pkgs, c.want)
			}
		})
	}
}

const baseLabel = `v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=prison-security; sanitised=yes; originator=northshire-pio; reference=REF-1; created="2026-11-23T10:00:00Z"`

func TestReceiptsShareAnEnvelopeOnlyUnderTheSameHandlingLabel(t *testing.T) {
	base, err := envelope.ParseLabel(baseLabel)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		edit     func(string) string
		together bool
	}{
		{"another reference", func(s string) string { return strings.Replace(s, "REF-1", "REF-2", 1) }, true},
		{"another created time", func(s string) string { return strings.Replace(s, "10:00:00Z", "11:30:00Z", 1) }, true},
		{"OFFICIAL", func(s string) string { return strings.Replace(s, "OFFICIAL-SENSITIVE", "OFFICIAL", 1) }, false},
		{"a descriptor", func(s string) string {
			return strings.Replace(s, "OFFICIAL-SENSITIVE;", "OFFICIAL-SENSITIVE; descriptor=PERSONAL;", 1)
		}, false},
		{"a caveat", func(s string) string {
			return strings.Replace(s, "OFFICIAL-SENSITIVE;", `OFFICIAL-SENSITIVE; caveat="UK EYES ONLY";`, 1)
		}, false},
		{"another handling code", func(s string) string { return strings.Replace(s, "handling=1", "handling=4", 1) }, false},
		{"an authorisation", func(s string) string {
			return strings.Replace(s, "handling=1", "handling=2; authorisation=PAS-1", 1)
		}, false},
		{"another purpose", func(s string) string { return strings.Replace(s, "prison-security", "risk-management", 1) }, false},
		{"a review date", func(s string) string { return s + "; review=2027-01-01" }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := envelope.ParseLabel(c.edit(baseLabel))
			if err != nil {
				t.Fatal(err)
			}
			if got := Group(l) == Group(base); got != c.together {
				t.Fatalf("same group: %v; want %v\n%s\n%s", got, c.together, Group(l), Group(base))
			}
		})
	}
}
