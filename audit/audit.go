// Package audit is in charge of the gateway's audit trail: an append-only,
// hash-chained log of every decision and movement of a package (received,
// refused with the rule, redirected, sealed, queued, sent, delivered,
// receipted, quarantined, released, purged, dropped) and of administrative
// events (key changes, policy reloads, alerts). It proves the chain
// unbroken (Verify), answers "what happened to this package" (Query) and
// exports events as JSON lines for a SIEM (Export).
//
// The trail holds metadata only. An Event has no field for package
// content, and Detail must never carry content, a subject's identity or key
// material (docs/design.md, security invariant 2): it is for reasons such as
// "unknown signer" or "retry 3, 451 4.4.1", and is bounded in length.
//
// # What the chain proves
//
// Each event's Hash covers a canonical, length-prefixed encoding of all of
// its fields and the previous event's hash; the first event chains from a
// fixed genesis value. Verify recomputes every hash in sequence order and
// names the first entry that was edited, deleted or moved.
//
// Without a key (SHA-256), the chain proves the log consistent: an
// accidental or naive change (an edited row, a deleted row, rows put in
// another order) is found. It does not stop someone who can rewrite the
// whole file from recomputing every hash after an edit.
//
// With a key (HMAC-SHA-256, the key kept outside the database), nobody
// without the key can produce a valid chain: an edit, a deletion, a
// reordering or a wholesale recomputation is found. The newest entry (the
// head) is also authenticated in the log's metadata, so removing the most
// recent entries is found too. What no in-file scheme can show is a roll
// back of the whole file to an earlier copy of itself: export the trail
// to a SIEM (Export) or record the head that Verify reports elsewhere to
// anchor it.
package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is what happened. The set is fixed; Append refuses any other value.
type Kind string

// The event kinds.
const (
	Received     Kind = "received"      // a package was accepted for intake (submission or inbound)
	Refused      Kind = "refused"       // the policy or a check refused it (Rule says which)
	Redirected   Kind = "redirected"    // the policy sent it elsewhere (Rule, Destination)
	Sealed       Kind = "sealed"        // signed and encrypted for a destination
	Queued       Kind = "queued"        // durably queued for a destination
	Sent         Kind = "sent"          // the partner gateway acknowledged it (250)
	Delivered    Kind = "delivered"     // delivered to a local mailbox
	Receipt      Kind = "receipt"       // a signed receipt was sent or received
	Quarantined  Kind = "quarantined"   // kept aside after a failed check (Rule names the check)
	Released     Kind = "released"      // an administrator released a held or quarantined item
	Purged       Kind = "purged"        // destroyed at the end of its retention period
	Dropped      Kind = "dropped"       // an administrator dropped a queued item
	Retried      Kind = "retried"       // a delivery attempt failed temporarily
	Failed       Kind = "failed"        // delivery given up
	KeyChange    Kind = "key-change"    // a key was generated, rotated, pinned or a change is pending
	PolicyReload Kind = "policy-reload" // the policy was (re)loaded
	Alert        Kind = "alert"         // an alert was raised (overdue deadline, tampering...)
	Triaged      Kind = "triaged"       // a received report was triaged (its 72-hour clock stopped)
	Marking      Kind = "marking"       // a legacy marking was read as a classification by the table in force
	AuthFailed   Kind = "auth-failed"   // a submission login failed (Actor: the client address; Detail: the account name tried)
	AuthLocked   Kind = "auth-locked"   // an account or a client address was locked out after failed logins
	AuthUnlocked Kind = "auth-unlocked" // an administrator lifted a lockout (conduit user unlock)
)

// Kinds lists every kind, in the order above.
var Kinds = []Kind{Received, Refused, Redirected, Sealed, Queued, Sent, Delivered, Receipt,
	Quarantined, Released, Purged, Dropped, Retried, Failed, KeyChange, PolicyReload, Alert, Triaged, Marking,
	AuthFailed, AuthLocked, AuthUnlocked}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// Event is one entry of the trail: metadata about a package or the
// gateway, never content. Seq, PrevHash and Hash are assigned by Append;
// Time is set by Append when zero.
type Event struct {
	Seq         int64     `json:"seq"`
	Time        time.Time `json:"time"`
	Agency      string    `json:"agency"`      // the agency whose gateway writes the event
	Kind        Kind      `json:"kind"`        // what happened
	Package     string    `json:"package"`     // the package id, when about a package
	Destination string    `json:"destination"` // the agency it goes to or came from
	Rule        string    `json:"rule"`        // the policy rule or check that decided
	Actor       string    `json:"actor"`       // who caused it: a submitter address, an administrator, "gateway"
	// Detail is a short reason, for people. Never content, never a
	// subject's identity, never key material.
	Detail   string  `json:"detail"`
	PrevHash HexHash `json:"prev_hash"`
	Hash     HexHash `json:"hash"`
}

// HexHash is a hash, written in JSON as lower-case hex.
type HexHash []byte

// MarshalText writes h as hex.
func (h HexHash) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText reads hex.
func (h *HexHash) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("hash: %w", err)
	}
	*h = v
	return nil
}

// String is the hash in hex.
func (h HexHash) String() string { return hex.EncodeToString(h) }

// Limits on the text fields: identifiers are short, and a bounded Detail
// leaves no room to paste a package into the trail. Append cuts longer
// text (see check).
const (
	MaxField  = 256
	MaxDetail = 1024
)

// HashSize is the size of an event hash (SHA-256 or HMAC-SHA-256).
const HashSize = sha256.Size

// Genesis is the hash the first event chains from.
var Genesis = func() []byte { h := sha256.Sum256([]byte("conduit audit genesis v1")); return h[:] }()

// encodingTag separates the event encoding from anything else hashed.
const encodingTag = "conduit-audit-event-v1"

// check validates the kind and time, and makes the text fields fit: an
// audit event is better kept imperfect than lost, so text is never a
// reason to refuse one. Invalid UTF-8 and NUL bytes become U+FFFD, and a
// field over its limit is cut (at a character boundary) and ends with
// truncMark.
func (e *Event) check() error {
	if !e.Kind.Valid() {
		return fmt.Errorf("audit event: unknown kind %q", e.Kind)
	}
	for _, f := range []struct {
		p   *string
		max int
	}{
		{&e.Agency, MaxField}, {&e.Package, MaxField}, {&e.Destination, MaxField},
		{&e.Rule, MaxField}, {&e.Actor, MaxField}, {&e.Detail, MaxDetail},
	} {
		*f.p = fitText(*f.p, f.max)
	}
	if e.Time.Before(minTime) || e.Time.After(maxTime) {
		return fmt.Errorf("audit event: time %s out of range", e.Time)
	}
	return nil
}

// truncMark ends a field that was cut to its limit.
const truncMark = "…[truncated]"

func fitText(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	if len(s) <= max {
		return s
	}
	cut := max - len(truncMark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncMark
}

// The times a unix-nanosecond int64 can hold, with a margin.
var (
	minTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// encode writes the canonical form of e (all fields but Hash, with the
// given seq and prev) to h: a tag, then each field as an 8-byte big-endian
// length and its bytes, in a fixed order. No two different events have
// the same encoding.
func encode(h hash.Hash, e *Event, seq int64, prev []byte) {
	var n [8]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	putInt := func(v int64) {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(v))
		put(b[:])
	}
	put([]byte(encodingTag))
	putInt(seq)
	putInt(e.Time.UnixNano())
	for _, s := range []string{e.Agency, string(e.Kind), e.Package, e.Destination, e.Rule, e.Actor, e.Detail} {
		put([]byte(s))
	}
	put(prev)
}

// hasher makes the chain's hash: HMAC-SHA-256 under key, or SHA-256.
func hasher(key []byte) hash.Hash {
	if key != nil {
		return hmac.New(sha256.New, key)
	}
	return sha256.New()
}

// eventHash is the hash of e at position seq after prev.
func eventHash(key []byte, e *Event, seq int64, prev []byte) []byte {
	h := hasher(key)
	encode(h, e, seq, prev)
	return h.Sum(nil)
}

// keyCheck is what the log's metadata keeps to recognise its key, without
// revealing it.
func keyCheck(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("conduit audit key check v1"))
	return m.Sum(nil)
}

// headMAC authenticates the newest entry, so that removing the newest
// entries is found in keyed mode.
func headMAC(key []byte, seq int64, h []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("conduit audit head v1"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(seq))
	m.Write(b[:])
	m.Write(h)
	return m.Sum(nil)
}

// Errors a caller may branch on.
var (
	// ErrKeyMismatch: the log was created with a key and none (or another)
	// was given, or without a key and one was given. Either the
	// configuration is wrong or the log has been rewritten.
	ErrKeyMismatch = errors.New("audit key mismatch")
	// ErrBroken: Append found the log's head does not match its newest
	// entry (entries were removed or added outside conduit); it refuses
	// to chain on, which would hide that. Run Verify and raise an alert.
	ErrBroken = errors.New("audit log broken")
)

// Filter selects events for Query and Export. Zero fields match all.
type Filter struct {
	Package string
	Since   time.Time // events at or after
	Until   time.Time // events before
	Rule    string
	Kind    Kind
	// AfterSeq selects events with a larger sequence number, for a SIEM
	// that resumes an export.
	AfterSeq int64
	// Limit caps the number of events; 0 or less is no limit.
	Limit int
}

// ParseSince reads a --since value: an RFC 3339 time
// ("2026-11-23T10:00:00Z"), a date ("2026-11-23", midnight UTC), or an age
// before now: a Go duration ("36h", "90m") or a number of days ("7d").
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("empty time")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return rangeCheck(t.UTC(), s)
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return rangeCheck(t, s)
	}
	var age time.Duration
	if d, ok := strings.CutSuffix(s, "d"); ok && d != "" && strings.Trim(d, "0123456789") == "" {
		if len(d) > 5 {
			return time.Time{}, fmt.Errorf("%q: too many days", s)
		}
		var n int64
		for _, c := range d {
			n = n*10 + int64(c-'0')
		}
		age = time.Duration(n) * 24 * time.Hour
	} else {
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: not a time (2026-11-23T10:00:00Z), a date (2026-11-23) or an age (36h, 7d)", s)
		}
		age = d
	}
	if age < 0 {
		return time.Time{}, fmt.Errorf("%q: a negative age", s)
	}
	return rangeCheck(now.Add(-age).UTC(), s)
}

func rangeCheck(t time.Time, s string) (time.Time, error) {
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, fmt.Errorf("%q: out of range (1970 to 2261)", s)
	}
	return t, nil
}

// ReadKeyFile reads a chain key: the file's bytes, surrounding white space
// removed, at least 16 of them (make one with `head -c 32 /dev/urandom |
// base64 > audit.key`). The file must not be readable by group or others.
// Errors never quote the file's content.
func ReadKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s: readable by group or others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < 16 {
		return nil, fmt.Errorf("audit key %s: %d bytes, fewer than 16", path, len(b))
	}
	return b, nil
}
