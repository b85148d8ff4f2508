package keys

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Typed errors for a key that can no longer be used. Callers hold work
// for the key's agency on them (never drop it, never send it elsewhere).
var (
	ErrKeyExpired  = errors.New("key expired")
	ErrKeyRevoked  = errors.New("key revoked")
	ErrNoEncryptTo = errors.New("no valid encryption subkey")
)

// Status is what an operator needs to know about a key at a time.
type Status struct {
	Fingerprint string
	Created     time.Time
	// Expires is when the primary key expires; zero if never.
	Expires time.Time
	Revoked bool
	// RevocationReason is the revocation's reason text, if revoked.
	RevocationReason string
	// Subkeys lists the encryption subkeys, newest last.
	Subkeys []SubkeyStatus
	// Usable is nil when the key can sign or be encrypted to now;
	// otherwise it wraps ErrKeyExpired, ErrKeyRevoked or ErrNoEncryptTo.
	Usable error
}

// SubkeyStatus is one encryption subkey's state.
type SubkeyStatus struct {
	Fingerprint string
	KeyID       string
	Created     time.Time
	Expires     time.Time // zero if never
	Revoked     bool
	// Current is true for the subkey partners encrypt to now.
	Current bool
}

// StatusOf reports a key's state at now.
func StatusOf(e *openpgp.Entity, now time.Time) Status {
	st := Status{Fingerprint: Fingerprint(e), Created: e.PrimaryKey.CreationTime}
	if sig, err := e.PrimarySelfSignature(time.Time{}, nil); err == nil && sig != nil && sig.KeyLifetimeSecs != nil && *sig.KeyLifetimeSecs != 0 {
		st.Expires = e.PrimaryKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
	}
	for _, r := range e.Revocations {
		if e.PrimaryKey.VerifyRevocationSignature(r.Packet) == nil {
			st.Revoked = true
			st.RevocationReason = r.Packet.RevocationReasonText
		}
	}
	current, curErr := e.EncryptionKeyWithError(now, nil)
	for _, sk := range e.Subkeys {
		sig, err := sk.LatestValidBindingSignature(time.Time{}, nil)
		if err != nil || sig == nil || sig.FlagsValid && !sig.FlagEncryptCommunications && !sig.FlagEncryptStorage {
			continue
		}
		ss := SubkeyStatus{
			Fingerprint: strings.ToUpper(hex.EncodeToString(sk.PublicKey.Fingerprint)),
			KeyID:       sk.PublicKey.KeyIdString(),
			Created:     sk.PublicKey.CreationTime,
			Revoked:     sk.Revoked(sig, now),
			Current:     curErr == nil && current.PublicKey.KeyId == sk.PublicKey.KeyId,
		}
		if sig.KeyLifetimeSecs != nil && *sig.KeyLifetimeSecs != 0 {
			ss.Expires = sk.PublicKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
		}
		st.Subkeys = append(st.Subkeys, ss)
	}
	st.Usable = usable(e, now, st)
	return st
}

func usable(e *openpgp.Entity, now time.Time, st Status) error {
	if _, err := e.VerifyPrimaryKey(now, nil); err != nil {
		switch {
		case errors.Is(err, pgperrors.ErrKeyRevoked) || st.Revoked:
			why := "revoked"
			if st.RevocationReason != "" {
				why += ": " + st.RevocationReason
			}
			return fmt.Errorf("%w: %s is %s", ErrKeyRevoked, st.Fingerprint, why)
		case errors.Is(err, pgperrors.ErrKeyExpired) && !st.Expires.IsZero():
			return fmt.Errorf("%w: %s expired on %s", ErrKeyExpired, st.Fingerprint, st.Expires.UTC().Format("2006-01-02 15:04 MST"))
		case errors.Is(err, pgperrors.ErrKeyExpired):
			return fmt.Errorf("%w: %s is expired", ErrKeyExpired, st.Fingerprint)
		}
		return fmt.Errorf("%w: %s: %v", ErrKeyExpired, st.Fingerprint, err)
	}
	if _, err := e.EncryptionKeyWithError(now, nil); err != nil {
		return fmt.Errorf("%w: %s has no encryption subkey valid on %s (each has expired or been revoked)",
			ErrNoEncryptTo, st.Fingerprint, now.UTC().Format("2006-01-02"))
	}
	return nil
}

// Usable says whether a partner certificate can be encrypted to now; the
// error names the key and why (expired on a date, revoked with its
// reason), for the hold that the caller records.
func (c *Cert) Usable(now time.Time) error {
	// The relay and intake ask for every package: the full status (and
	// its reason) is built only when the key cannot be used.
	if _, err := c.Entity.EncryptionKeyWithError(now, nil); err == nil {
		return nil
	}
	return StatusOf(c.Entity, now).Usable
}

// HasValidSubkey reports whether keyID is one of the certificate's
// encryption keys that is still valid at now (not expired, not revoked):
// an envelope sealed to it can still be read by its owner.
func (c *Cert) HasValidSubkey(keyID uint64, now time.Time) bool {
	if _, err := c.Entity.VerifyPrimaryKey(now, nil); err != nil {
		return false
	}
	for _, sk := range c.Entity.Subkeys {
		if sk.PublicKey.KeyId != keyID {
			continue
		}
		_, err := sk.Verify(now, nil)
		return err == nil
	}
	return false
}

// HasKeyID reports whether keyID is the primary key or any subkey of the
// entity, whatever its state.
func HasKeyID(e *openpgp.Entity, keyID uint64) bool {
	if e.PrimaryKey.KeyId == keyID {
		return true
	}
	for _, sk := range e.Subkeys {
		if sk.PublicKey.KeyId == keyID {
			return true
		}
	}
	return false
}

// clone copies an entity with its secret key material, so that a
// lifecycle change is made on a copy and the identity in use stays as it
// was until the new one is stored.
func clone(e *openpgp.Entity) (*openpgp.Entity, error) {
	var buf bytes.Buffer
	if e.PrivateKey != nil {
		if err := e.SerializePrivateWithoutSigning(&buf, nil); err != nil {
			return nil, fmt.Errorf("copy key: %w", err)
		}
	} else if err := e.Serialize(&buf); err != nil {
		return nil, fmt.Errorf("copy key: %w", err)
	}
	return openpgp.ReadEntity(packet.NewReader(&buf))
}

// Rotate returns a copy of the identity with a new encryption subkey
// created at now (valid for lifetime; zero means no expiry). The primary
// key, and so the fingerprint partners pin, stays; every earlier subkey is
// kept so that packages sealed to it still open. Partners encrypt to the
// newest valid subkey once they have the updated certificate.
func Rotate(id *Identity, now time.Time, lifetime time.Duration) (*Identity, error) {
	if id.Entity.PrivateKey == nil {
		return nil, errors.New("rotate: the identity has no secret key")
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("rotate: lifetime %s is negative", lifetime)
	}
	if st := StatusOf(id.Entity, now); st.Revoked {
		return nil, fmt.Errorf("rotate: %w: a revoked key cannot be rotated; generate a new key", ErrKeyRevoked)
	}
	e, err := clone(id.Entity)
	if err != nil {
		return nil, err
	}
	cfg := ProfileOf(e).Config()
	cfg.Time = func() time.Time { return now }
	cfg.KeyLifetimeSecs = uint32(lifetime / time.Second)
	if err := e.AddEncryptionSubkey(cfg); err != nil {
		return nil, fmt.Errorf("rotate %s: %w", id.Agency, err)
	}
	return &Identity{Agency: id.Agency, Entity: e}, nil
}

// RevokeSubkey returns a copy of the identity with the encryption subkey
// whose fingerprint or key id is given revoked (key compromised, or
// superseded after a rotation). The newest valid subkey cannot be revoked
// unless another valid one remains: rotate first.
func RevokeSubkey(id *Identity, which, reason string, superseded bool, now time.Time) (*Identity, error) {
	which = NormalizeFingerprint(which)
	e, err := clone(id.Entity)
	if err != nil {
		return nil, err
	}
	idx := -1
	for i, sk := range e.Subkeys {
		fp := strings.ToUpper(hex.EncodeToString(sk.PublicKey.Fingerprint))
		if fp == which || strings.ToUpper(sk.PublicKey.KeyIdString()) == which {
			idx = i
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("revoke: %s has no subkey %s", id.Agency, which)
	}
	code := packet.KeyCompromised
	if superseded {
		code = packet.KeySuperseded
	}
	cfg := ProfileOf(e).Config()
	cfg.Time = func() time.Time { return now }
	if err := e.Subkeys[idx].Revoke(code, reason, cfg); err != nil {
		return nil, fmt.Errorf("revoke subkey: %w", err)
	}
	if _, err := e.EncryptionKeyWithError(now, nil); err != nil {
		return nil, fmt.Errorf("revoke: %w: no other valid encryption subkey would remain; run conduit keys rotate first", ErrNoEncryptTo)
	}
	return &Identity{Agency: id.Agency, Entity: e}, nil
}

// Revoke returns a copy of the identity with its primary key revoked: no
// partner will encrypt to it or accept its signatures once they have the
// revoked certificate. The agency then needs a new key, which partners
// approve as a key change.
func Revoke(id *Identity, reason string, compromised bool, now time.Time) (*Identity, error) {
	e, err := clone(id.Entity)
	if err != nil {
		return nil, err
	}
	code := packet.KeyRetired
	if compromised {
		code = packet.KeyCompromised
	}
	cfg := ProfileOf(e).Config()
	cfg.Time = func() time.Time { return now }
	if err := e.Revoke(code, reason, cfg); err != nil {
		return nil, fmt.Errorf("revoke %s: %w", id.Agency, err)
	}
	return &Identity{Agency: id.Agency, Entity: e}, nil
}

// GenerateFor is Generate with a key lifetime (zero: no expiry), after
// which partners stop encrypting to the key and the agency must have
// rotated or replaced it.
func GenerateFor(agency, email string, profile Profile, now time.Time, lifetime time.Duration) (*Identity, error) {
	if lifetime < 0 {
		return nil, fmt.Errorf("generate key: lifetime %s is negative", lifetime)
	}
	return generate(agency, email, profile, now, uint32(lifetime/time.Second))
}

// UpdateCert decides what a certificate offered for a pinned agency does
// to the pinned one. The same primary key (same fingerprint) is an update
// the key itself signed: new subkeys, a new expiry, revocations. It is
// taken, except that a revocation is never undone by an older copy. A
// different fingerprint is a key change that an administrator must
// approve: ErrFingerprintMismatch.
func UpdateCert(pinned, offered *Cert) (*Cert, error) {
	if offered.Fingerprint() != pinned.Fingerprint() {
		return nil, fmt.Errorf("%w: %s offered %s, pinned %s", ErrFingerprintMismatch, pinned.Agency, offered.Fingerprint(), pinned.Fingerprint())
	}
	// Same fingerprint, same key: the pin binds it to the pinned agency
	// whatever its user IDs say.
	cp := *offered
	cp.Agency = pinned.Agency
	offered = &cp
	if StatusOf(pinned.Entity, time.Now()).Revoked && !StatusOf(offered.Entity, time.Now()).Revoked {
		return pinned, nil
	}
	// Keep any subkey revocation the pinned copy has and the offered one
	// lacks: a revocation is never undone.
	for _, old := range pinned.Entity.Subkeys {
		for i := range offered.Entity.Subkeys {
			nw := &offered.Entity.Subkeys[i]
			if nw.PublicKey.KeyId == old.PublicKey.KeyId && len(nw.Revocations) < len(old.Revocations) {
				nw.Revocations = old.Revocations
			}
		}
	}
	return offered, nil
}
