package envelope

import "errors"

// The checks Open makes, each its own error so that callers (the gateway's
// quarantine, the CLI's exit status) can say precisely what failed. None of
// them is returned with any plaintext released.
var (
	// ErrMalformed: not a PGP/MIME envelope of ours (RFC 3156 section 4
	// structure, or the protected payload's structure).
	ErrMalformed = errors.New("malformed envelope")
	// ErrTruncated: the message ends before the envelope does.
	ErrTruncated = errors.New("envelope is truncated")
	// ErrNotEncrypted: the OpenPGP message is not encrypted.
	ErrNotEncrypted = errors.New("envelope is not encrypted")
	// ErrNoIntegrity: the ciphertext has no integrity protection
	// (Symmetrically Encrypted Data without MDC); decrypting it would
	// expose the receiver to EFAIL-style attacks, so it is refused before
	// any decryption.
	ErrNoIntegrity = errors.New("envelope has no integrity protection (no MDC or AEAD)")
	// ErrTampered: the integrity check (MDC, AEAD tag or armor checksum)
	// failed: the ciphertext was changed.
	ErrTampered = errors.New("envelope failed its integrity check: the ciphertext was altered")
	// ErrNoKey: the envelope is not encrypted to any key of ours.
	ErrNoKey = errors.New("envelope is not encrypted to this gateway's key")
	// ErrNotSigned: the payload carries no signature.
	ErrNotSigned = errors.New("envelope is not signed")
	// ErrBadSignature: a signature is present but does not verify.
	ErrBadSignature = errors.New("envelope signature does not verify")
	// ErrSignerNotPinned: the signature verifies but was not made by the
	// pinned key of the agency named as originator (no "valid signature
	// by someone" acceptance).
	ErrSignerNotPinned = errors.New("envelope was not signed by the pinned key of its originating agency")
	// ErrMarkingMismatch: the outer marking (SIO-Label, subject prefix,
	// package id) disagrees with the signed inner label: tampering.
	ErrMarkingMismatch = errors.New("outer marking disagrees with the signed inner label")
	// ErrLabelInvalid: the inner label is missing or not a valid label.
	ErrLabelInvalid = errors.New("inner handling label is invalid")
	// ErrReplay: this package was already accepted.
	ErrReplay = errors.New("envelope is a replay of a package already accepted")
	// ErrOutsideWindow: the signed date is outside the allowed clock window.
	ErrOutsideWindow = errors.New("envelope date is outside the allowed clock window")
	// ErrTooLarge: the payload exceeds the configured size limit.
	ErrTooLarge = errors.New("envelope payload is larger than allowed")
)

// CheckError is a failed open check: Check is one of the sentinel errors
// above, Detail says more (never any plaintext content), Err is the cause.
type CheckError struct {
	Check  error
	Detail string
	Err    error
}

func (e *CheckError) Error() string {
	s := e.Check.Error()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is makes errors.Is(err, ErrTampered) and the like work.
func (e *CheckError) Is(target error) bool { return target == e.Check }

// Unwrap returns the underlying cause.
func (e *CheckError) Unwrap() error { return e.Err }

func checkErr(check error, detail string, cause error) error {
	return &CheckError{Check: check, Detail: detail, Err: cause}
}
