package marking

import (
	"fmt"
	"strings"

	"github.com/conduit-gateway/conduit/envelope"
)

// PurviewHeader is the header Microsoft Purview Information Protection
// (Outlook's sensitivity labels) writes on a labelled message.
const PurviewHeader = "msip_labels"

// PurviewLabel is the administrator's entry for one sensitivity label of a
// partner's Purview tenant: what the label means as a handling marking.
// The label's GUID is what identifies it; its display name is shown to
// people but can be renamed by the tenant, so it is never trusted.
type PurviewLabel struct {
	GUID           string
	Name           string
	Classification envelope.Classification
	Descriptor     string
	Caveat         string
}

// PurviewTable maps lower-case label GUIDs to their entries.
type PurviewTable map[string]PurviewLabel

// purviewProp is one label's properties in the header.
type purviewProp struct {
	guid    string
	enabled string
	name    string
}

// maxPurviewHeader bounds the header read: a real one is a few hundred
// bytes per label.
const maxPurviewHeader = 16 << 10

// FromPurview reads the sensitivity label of an msip_labels header, in the
// syntax Purview writes: "MSIP_Label_<guid>_<Property>=<value>" pairs
// separated by ";", for example
//
//	MSIP_Label_3c9e4a1b-..._Enabled=true; MSIP_Label_3c9e4a1b-..._SetDate=2026-11-23T10:00:00Z;
//	MSIP_Label_3c9e4a1b-..._Method=Privileged; MSIP_Label_3c9e4a1b-..._Name=OFFICIAL-SENSITIVE PERSONAL;
//	MSIP_Label_3c9e4a1b-..._SiteId=<tenant guid>; MSIP_Label_3c9e4a1b-..._ActionId=<guid>;
//	MSIP_Label_3c9e4a1b-..._ContentBits=0
//
// The label in force is the one whose Enabled is true; a message with none
// is unlabelled (found false), with two is refused. The label's GUID must
// be in the administrator's table, which says what it means; a label that
// is not is an *Error naming it.
func FromPurview(header string, table PurviewTable) (m Marking, found bool, err error) {
	if strings.TrimSpace(header) == "" {
		return Marking{}, false, nil
	}
	if len(header) > maxPurviewHeader {
		return Marking{}, true, &Error{Msg: fmt.Sprintf("the %s header is longer than %d bytes", PurviewHeader, maxPurviewHeader)}
	}
	props := map[string]*purviewProp{}
	var order []string
	for _, part := range strings.Split(unfoldHeader(header), ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return Marking{}, true, &Error{Msg: fmt.Sprintf("the %s header is malformed: %q is not Property=value", PurviewHeader, clip(part))}
		}
		guid, prop, ok := splitPurviewKey(strings.TrimSpace(k))
		if !ok {
			// Other MSIP properties (MSIP_Label-independent keys) are not
			// labels; Purview may add some.
			continue
		}
		p := props[guid]
		if p == nil {
			p = &purviewProp{guid: guid}
			props[guid] = p
			order = append(order, guid)
		}
		switch strings.ToLower(prop) {
		case "enabled":
			p.enabled = strings.ToLower(strings.TrimSpace(v))
		case "name":
			p.name = strings.TrimSpace(v)
		}
	}
	var on []*purviewProp
	for _, g := range order {
		if props[g].enabled == "true" {
			on = append(on, props[g])
		}
	}
	switch len(on) {
	case 0:
		return Marking{}, false, nil
	case 1:
	default:
		return Marking{}, true, &Error{Msg: fmt.Sprintf("the %s header applies %d sensitivity labels at once; apply one label and send it again", PurviewHeader, len(on))}
	}
	p := on[0]
	e, ok := table[p.guid]
	if !ok {
		name := p.name
		if name == "" {
			name = "(no name)"
		}
		return Marking{}, true, &Error{Msg: fmt.Sprintf("the sensitivity label %q (%s) is not one this gateway knows; apply an OFFICIAL or OFFICIAL-SENSITIVE label of your organisation, or ask your administrator to add this one to the gateway's purview-labels table", clip(name), p.guid)}
	}
	source := "the sensitivity label " + quoteName(e.Name, p.name)
	return Marking{Classification: e.Classification, Descriptor: e.Descriptor, Caveat: e.Caveat, Source: source}, true, nil
}

func quoteName(configured, sent string) string {
	if configured != "" {
		return fmt.Sprintf("%q", configured)
	}
	return fmt.Sprintf("%q", clip(sent))
}

// splitPurviewKey splits "MSIP_Label_<guid>_<Property>".
func splitPurviewKey(k string) (guid, prop string, ok bool) {
	const prefix = "msip_label_"
	if len(k) < len(prefix)+36+2 || !strings.EqualFold(k[:len(prefix)], prefix) {
		return "", "", false
	}
	rest := k[len(prefix):]
	guid = strings.ToLower(rest[:36])
	if !IsGUID(guid) || rest[36] != '_' {
		return "", "", false
	}
	return guid, rest[37:], rest[37:] != ""
}

// IsGUID reports whether s is a GUID in its 8-4-4-4-12 hex form.
func IsGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func unfoldHeader(s string) string {
	return strings.NewReplacer("\r\n", "", "\n", "", "\t", " ").Replace(s)
}

// clip keeps a quoted piece of outside input short in a reply.
func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "..."
	}
	return s
}
