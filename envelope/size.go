package envelope

// The size an envelope will have, so that a sending gateway refuses at
// submission what a partner would refuse as too large (RFC 5321 section
// 4.5.3.1.10, 552 5.3.4), instead of answering 250 and bouncing later.
const (
	// sealOverhead covers what sealing adds besides the payload's armor:
	// the outer header section and the PGP/MIME parts, the session key,
	// signature and packet framing, the protected headers (HP-Outer
	// records, label, package id) and the manifest part. Measured at
	// about 6 KiB with a full manifest; kept generous.
	sealOverhead = 32 << 10
)

// SealedSize is an upper bound on the size of the envelope for a message
// of n bytes: ASCII armor turns 3 bytes into 4, in lines of 64 characters
// and a CRLF (RFC 9580 section 6.2; RFC 4880 section 6.3), so 1.375
// times the payload, plus the fixed overhead. Sealing does not compress.
func SealedSize(n int64) int64 {
	// OpenPGP partial-length framing adds at most 1 byte per 512 bytes
	// (the smallest partial chunk go-crypto writes is larger).
	bin := n + n/512 + 1024
	armored := (bin + 2) / 3 * 4
	return armored + armored/64*2 + sealOverhead
}

// MaxPayload is the largest message whose envelope stays within limit
// bytes (the receiving gateway's message size limit).
func MaxPayload(limit int64) int64 {
	if limit <= sealOverhead {
		return 0
	}
	// Invert SealedSize, then step down until it fits: the bound is
	// monotonic and the first guess is within a few bytes.
	n := (limit - sealOverhead) * 3 / 4 * 64 / 66 * 512 / 513
	for n > 0 && SealedSize(n) > limit {
		n -= 64
	}
	return max(n, 0)
}
