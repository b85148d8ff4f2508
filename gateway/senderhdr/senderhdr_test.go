package senderhdr

import (
	"bufio"
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
)

func header(t *testing.T, s string) textproto.Header {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(strings.ReplaceAll(s, "\n", "\r\n") + "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

var rules = Rules{Address: "pio@northshire-pio.example", InDirectory: func(a string) bool {
	return strings.EqualFold(a, "intake@hmp-northgate.example")
}}

func TestCheckSubmission(t *testing.T) {
	for _, tc := range []struct {
		name, hdr string
		refused   string // the field named in the refusal, "" accepted
		wantFrom  string
	}{
		{"own address with a display name", "From: \"D Patel\" <pio@northshire-pio.example>\nSubject: x", "", "\"D Patel\" <pio@northshire-pio.example>"},
		{"own address, other case", "From: PIO@Northshire-PIO.example", "", "PIO@Northshire-PIO.example"},
		{"no From: set to the account", "Subject: x", "", "<pio@northshire-pio.example>"},
		{"forged director", "From: \"National CCU Director\" <director@ccu-national.example>", "From:", ""},
		{"own display name, two addresses", "From: pio@northshire-pio.example, director@ccu-national.example", "From:", ""},
		{"two From fields", "From: pio@northshire-pio.example\nFrom: pio@northshire-pio.example", "From:", ""},
		{"unreadable From", "From: <<<", "From:", ""},
		{"foreign Sender", "From: pio@northshire-pio.example\nSender: director@ccu-national.example", "Sender:", ""},
		{"own Sender", "From: pio@northshire-pio.example\nSender: pio@northshire-pio.example", "", "pio@northshire-pio.example"},
		{"Reply-To outside the directory", "From: pio@northshire-pio.example\nReply-To: attacker@evil.example", "Reply-To:", ""},
		{"Reply-To to a partner mailbox", "From: pio@northshire-pio.example\nReply-To: intake@hmp-northgate.example", "", "pio@northshire-pio.example"},
		{"Reply-To one good one bad", "From: pio@northshire-pio.example\nReply-To: intake@hmp-northgate.example, attacker@evil.example", "Reply-To:", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := header(t, tc.hdr)
			_, err := CheckSubmission(&h, rules)
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got := h.Get("From"); got != tc.wantFrom {
					t.Fatalf("From = %q, want %q", got, tc.wantFrom)
				}
				return
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != 553 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, tc.refused) {
				t.Fatalf("want 553 5.7.1 naming %s, got %v", tc.refused, err)
			}
		})
	}
}

func TestGatewayFieldsAndDateAreRemoved(t *testing.T) {
	h := header(t, "From: pio@northshire-pio.example\nConduit-Verified: signer=ccu-national; label=valid\n"+
		"conduit-delivered-to: director@ccu-national.example\nCONDUIT-DECISION: deliver\nConduit-Risk: escape\n"+
		"Date: Thu, 3 Dec 2026 10:00:00 +0000\nSubject: kept\nX-Conduit-Other: kept")
	removed, err := CheckSubmission(&h, rules)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 4 {
		t.Fatalf("removed %v", removed)
	}
	for f := h.Fields(); f.Next(); {
		if IsGatewayField(f.Key()) {
			t.Errorf("%s survived", f.Key())
		}
	}
	if h.Has("Date") {
		t.Error("the sender's Date survived: the signed date must be the gateway's")
	}
	if h.Get("Subject") != "kept" || h.Get("X-Conduit-Other") != "kept" {
		t.Error("an ordinary field was removed")
	}
}

func TestStripKeepsNamedFields(t *testing.T) {
	h := header(t, "Conduit-Package: cdt-x\nConduit-Verified: forged\nSubject: s")
	if got := StripGatewayFields(&h, "Conduit-Package"); len(got) != 1 || got[0] != "Conduit-Verified" {
		t.Fatalf("removed %v", got)
	}
	if h.Get("Conduit-Package") != "cdt-x" {
		t.Fatal("kept field removed")
	}
}

// FuzzCheckSubmission: the header section comes from a sender. Whatever
// is accepted carries no Conduit-* field, no Date, and exactly the
// account's From address.
func FuzzCheckSubmission(f *testing.F) {
	f.Add("From: pio@northshire-pio.example\r\nConduit-Verified: x\r\n")
	f.Add("From: \"a\" <director@ccu-national.example>\r\nReply-To: a@b\r\n")
	f.Add("Subject: x\r\nSender: pio@northshire-pio.example\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(s + "\r\n")))
		if err != nil {
			return
		}
		if _, err := CheckSubmission(&h, rules); err != nil {
			return
		}
		for f := h.Fields(); f.Next(); {
			if IsGatewayField(f.Key()) || strings.EqualFold(f.Key(), "Date") {
				t.Fatalf("%s accepted", f.Key())
			}
		}
	})
}
