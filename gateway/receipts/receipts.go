// Package receipts is in charge of the signed receipts a receiving
// gateway sends back to the gateway a package came from: their wire form
// (one receipt alone, as every Conduit gateway reads it, or a list of
// them), which receipts may travel together under one handling label, and
// the batcher that gathers the receipts recorded at delivery
// (store.PendingReceipt) per partner for a short, bounded time and seals
// one envelope for each group.
package receipts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
)

// Media types of a receipt's body. A receipt alone keeps the first (and
// its body byte for byte), so that a gateway that predates lists still
// reads it; a list of two or more has its own.
const (
	Type     = "application/vnd.conduit.receipt+json"
	ListType = "application/vnd.conduit.receipts+json"
)

// Body is what a receiving gateway states, signed, to the originator about
// one package: which package it delivered, where, and when. Nothing of the
// package's content.
type Body struct {
	Package   string    `json:"package"`
	Agency    string    `json:"agency"`
	Mailboxes []string  `json:"mailboxes"`
	Delivered time.Time `json:"delivered"`
	// Released, when set, says the package was delivered after an
	// administrator released it from this gateway's quarantine, where it
	// had first been refused (the sending gateway had then been told
	// 550): the originator records a late delivery, not a contradiction.
	Released string `json:"released,omitempty"`
}

// list is the body of a receipt that lists several packages.
type list struct {
	Receipts []Body `json:"receipts"`
}

// Encode returns the media type and body of a receipt for bs: the single
// form for one, the list form for more.
func Encode(bs []Body) (string, []byte, error) {
	switch len(bs) {
	case 0:
		return "", nil, errors.New("a receipt lists at least one package")
	case 1:
		b, err := json.Marshal(bs[0])
		return Type, b, err
	}
	b, err := json.Marshal(list{Receipts: bs})
	return ListType, b, err
}

// ErrInvalid: the body is not a receipt in either form.
var ErrInvalid = errors.New("the body is not a receipt")

// Decode reads a receipt's body in either form. A body that is both (a
// package and a list) or neither, an empty list, an entry without a
// package or a package listed twice is refused whole: a receipt is taken
// entire or not at all.
func Decode(body []byte) ([]Body, error) {
	var both struct {
		Body
		Receipts *[]Body `json:"receipts"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(body), &both); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var out []Body
	switch {
	case both.Receipts == nil && both.Package != "":
		out = []Body{both.Body}
	case both.Receipts != nil && both.Package == "" && both.Agency == "" && both.Mailboxes == nil && len(*both.Receipts) > 0:
		out = *both.Receipts
	default:
		return nil, ErrInvalid
	}
	seen := map[string]bool{}
	for _, b := range out {
		if b.Package == "" {
			return nil, fmt.Errorf("%w: an entry names no package", ErrInvalid)
		}
		if seen[b.Package] {
			return nil, fmt.Errorf("%w: package %s is listed twice", ErrInvalid, b.Package)
		}
		seen[b.Package] = true
	}
	return out, nil
}

// Group is what the receipts sealed in one envelope must share, besides
// their destination: the package's whole handling label but for what
// names one package (its reference and created time). A receipt is marked
// and handled as its package is, and the label's rules do not let one
// label stand for two that differ in anything else (a descriptor only
// with OFFICIAL-SENSITIVE, an authorisation only with 5x5x5 handling 2,
// conditions only with 3x5x2 C, their own review date): a batch is sealed
// under exactly the label of every package it covers, never a lower one.
func Group(l envelope.Label) string {
	l.Reference, l.Created = "", time.Time{}
	return l.Canonical()
}

// BatchID is the package id of an envelope that lists several receipts:
// derived from the first one's package, so that it is stable for the
// same batch however often it is sealed.
func BatchID(first string) string { return "rcpts-" + first }
