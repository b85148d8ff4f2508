package marking

import (
	"strings"
	"unicode"

	"github.com/conduit-gateway/conduit/envelope"
)

// SubjectSource names the subject line as the source of a marking.
const SubjectSource = "the subject line"

// replyPrefixes are what mail clients put before a subject on a reply or
// a forward, in the languages UK agencies' clients use.
var replyPrefixes = []string{"RE:", "FW:", "FWD:", "AW:", "WG:", "TR:"}

// FromSubject reads a classification marking from a subject line, in the
// forms staff type (the Government Security Classifications guidance puts
// the marking at the top of a message; mail clients and habits vary):
//
//	[OFFICIAL-SENSITIVE PERSONAL] Conveyance on wing C
//	OFFICIAL-SENSITIVE: Conveyance on wing C
//	OFFICIAL SENSITIVE - PERSONAL - Conveyance on wing C
//	RE: [EXTERNAL] (OFFICIAL) Conveyance on wing C
//	Conveyance on wing C [OFFICIAL-SENSITIVE]
//	Conveyance on wing C - OFFICIAL-SENSITIVE PERSONAL
//
// A bare marking at the start is a marking only when it is bracketed,
// followed by ":" or " - ", or typed in capitals ("OFFICIAL visit"), so
// that "Official visit on Tuesday" is not read as one. A marking at the
// start and another at the end must agree. Legacy markings are read
// through legacy, the table in force; one outside it is an *Error naming
// it. found is false when the subject carries no marking.
func FromSubject(subject string, legacy envelope.LegacyMarkings) (m Marking, found bool, err error) {
	s := normalizeDashes(strings.TrimSpace(subject))
	cands := candidates(legacy)
	lead, leadOK := leading(s, cands)
	trail, trailOK := trailing(s, cands)
	switch {
	case !leadOK && !trailOK:
		return Marking{}, false, nil
	case leadOK && trailOK && !samePhrase(lead, trail):
		return Marking{}, true, &Error{Msg: "the subject line carries two different markings (" + lead.text + " and " + trail.text + "); send it again with one"}
	case !leadOK:
		lead = trail
	}
	m, err = classify(lead.class, legacy, SubjectSource)
	if err != nil {
		return Marking{}, true, err
	}
	m.Descriptor, m.Caveat = lead.descriptor, lead.caveat
	return m, true, nil
}

// phrase is one marking as found: the classification words, an optional
// descriptor and caveat, and the text it was read from.
type phrase struct {
	class, descriptor, caveat, text string
}

func samePhrase(a, b phrase) bool {
	return envelope.NormalizeMarking(a.class) == envelope.NormalizeMarking(b.class) && a.descriptor == b.descriptor && a.caveat == b.caveat
}

func normalizeDashes(s string) string {
	return strings.NewReplacer("\u2013", "-", "\u2014", "-", "\u2011", "-", "\u00a0", " ").Replace(s)
}

// readPhrase reads a marking phrase at the start of s: a classification
// (case-insensitive; "OFFICIAL SENSITIVE" and "OFFICIAL_SENSITIVE" are
// OFFICIAL-SENSITIVE), then optionally a descriptor and a caveat, each
// after space, "-", ":" or "/". It returns the phrase and how many bytes
// it used; n is 0 when s does not start with a marking.
func readPhrase(s string, cands []string) (p phrase, n int) {
	up := strings.ToUpper(strings.ReplaceAll(s, "_", " "))
	for _, c := range cands {
		if !strings.HasPrefix(up, c) && !(c == "OFFICIAL-SENSITIVE" && strings.HasPrefix(up, "OFFICIAL - SENSITIVE")) {
			continue
		}
		l := len(c)
		if !strings.HasPrefix(up, c) {
			l = len("OFFICIAL - SENSITIVE")
		}
		if l < len(up) && isWordChar(rune(up[l])) {
			continue // "OFFICIALLY", "SECRETARY"
		}
		p.class, n = c, l
		break
	}
	if n == 0 {
		return p, 0
	}
	if c := strings.ReplaceAll(p.class, " ", "-"); c == "OFFICIAL-SENSITIVE" {
		p.class = c
	}
	// Descriptor, then caveat, each after a separator.
	for _, extra := range []struct {
		dst   *string
		words []string
	}{{&p.descriptor, envelope.Descriptors}, {&p.caveat, envelope.Caveats}} {
		i := n
		for i < len(up) && (up[i] == ' ' || up[i] == '-' || up[i] == ':' || up[i] == '/') {
			i++
		}
		for _, w := range extra.words {
			if strings.HasPrefix(up[i:], w) && (i+len(w) == len(up) || !isWordChar(rune(up[i+len(w)]))) {
				*extra.dst, n = w, i+len(w)
				break
			}
		}
	}
	p.text = strings.TrimSpace(s[:n])
	return p, n
}

func isWordChar(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// onlyPhrase reports whether s, trimmed, is exactly one marking phrase.
func onlyPhrase(s string, cands []string) (phrase, bool) {
	s = strings.TrimSpace(s)
	p, n := readPhrase(s, cands)
	if n == 0 || strings.TrimSpace(s[n:]) != "" {
		return phrase{}, false
	}
	return p, true
}

// leading finds a marking at the start of a subject, after reply prefixes
// and bracketed tags that are not markings ("[EXTERNAL]").
func leading(s string, cands []string) (phrase, bool) {
	for guard := 0; guard < 16 && s != ""; guard++ {
		up := strings.ToUpper(s)
		stripped := false
		for _, rp := range replyPrefixes {
			if strings.HasPrefix(up, rp) {
				s, stripped = strings.TrimSpace(s[len(rp):]), true
				break
			}
		}
		if stripped {
			continue
		}
		if s[0] == '[' || s[0] == '(' {
			end := strings.IndexByte(s, map[byte]byte{'[': ']', '(': ')'}[s[0]])
			if end < 0 {
				return phrase{}, false
			}
			if p, ok := onlyPhrase(s[1:end], cands); ok {
				return p, true
			}
			s = strings.TrimSpace(s[end+1:]) // another tag: look past it
			continue
		}
		p, n := readPhrase(s, cands)
		if n == 0 {
			return phrase{}, false
		}
		rest := s[n:]
		trimmed := strings.TrimLeft(rest, " ")
		switch {
		case rest == "" || strings.HasPrefix(trimmed, ":") || strings.HasPrefix(trimmed, "- ") || trimmed == "-" || strings.HasPrefix(trimmed, "|"):
			return p, true
		case strings.HasPrefix(rest, " ") && s[:n] == strings.ToUpper(s[:n]):
			// Typed in capitals and followed by the title.
			return p, true
		}
		return phrase{}, false
	}
	return phrase{}, false
}

// trailing finds a marking at the end of a subject: bracketed, or in
// capitals after " - ", ": " or " | ".
func trailing(s string, cands []string) (phrase, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return phrase{}, false
	}
	if last := s[len(s)-1]; last == ']' || last == ')' {
		open := strings.LastIndexByte(s, map[byte]byte{']': '[', ')': '('}[last])
		if open < 0 {
			return phrase{}, false
		}
		return onlyPhrase(s[open+1:len(s)-1], cands)
	}
	cut := -1
	for _, sep := range []string{" - ", ": ", " | "} {
		if i := strings.LastIndex(s, sep); i > cut {
			cut = i + len(sep)
		}
	}
	// Unbracketed at the end, only in capitals: "Meeting - official" is a
	// title, "Meeting - OFFICIAL" a marking.
	if cut < 0 || s[cut:] != strings.ToUpper(s[cut:]) {
		return phrase{}, false
	}
	return onlyPhrase(s[cut:], cands)
}
