package submission

import (
	"bufio"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
)

func header(t testing.TB, s string) textproto.Header {
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(s + "\r\n")))
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	return h
}

// TestTriageReplyNamesItsPackage: a triage reply's package comes from a
// Conduit-Package header or a package id in the subject first, else from
// the message it replies to (In-Reply-To, else the last References).
func TestTriageReplyNamesItsPackage(t *testing.T) {
	const a, b = "cdt-aaaaaaaaaaaaaaaaaaaaaaaa", "cdt-bbbbbbbbbbbbbbbbbbbbbbbb"
	for _, tc := range []struct {
		name   string
		header string
		ids    []string
		parent string
	}{
		{"the Conduit-Package header", "Conduit-Package: " + a + "\r\nIn-Reply-To: <x@y>\r\n", []string{a}, ""},
		{"an id in the subject", "Subject: Re: triaged " + strings.ToUpper(b) + " band 2\r\n", []string{b}, ""},
		{"both, once each", "Conduit-Package: " + a + "\r\nSubject: Re: " + a + " and " + b + "\r\n", []string{a, b}, ""},
		{"In-Reply-To", "In-Reply-To: <1@met.example>\r\nReferences: <0@met.example> <9@met.example>\r\n", nil, "<1@met.example>"},
		{"the last References", "References: <0@met.example>\r\n <9@met.example>\r\n", nil, "<9@met.example>"},
		{"a near miss is not an id", "Subject: cdt-short and xcdt-aaaaaaaaaaaaaaaaaaaaaaaa1\r\n", nil, ""},
		{"nothing", "Subject: Re: report\r\n", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, parent := replyRefs(header(t, tc.header))
			if !slices.Equal(ids, tc.ids) || parent != tc.parent {
				t.Errorf("got %v, %q; want %v, %q", ids, parent, tc.ids, tc.parent)
			}
		})
	}
}

// FuzzTriageReplyHeader: whatever header a reply carries, reading what it
// answers never fails and yields only well-formed package ids.
func FuzzTriageReplyHeader(f *testing.F) {
	f.Add("Subject: Re: cdt-aaaaaaaaaaaaaaaaaaaaaaaa\r\nIn-Reply-To: <a@b>\r\n")
	f.Add("References: <a@b>\r\n\t<c@d>\r\nConduit-Package: cdt-\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(s + "\r\n\r\n")))
		if err != nil {
			return
		}
		ids, _ := replyRefs(h)
		for _, id := range ids {
			if !packageIDRE.MatchString(id) || len(id) != 28 {
				t.Fatalf("%q is not a package id", id)
			}
		}
	})
}
