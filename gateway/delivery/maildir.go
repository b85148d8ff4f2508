package delivery

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// deliverMaildir writes an opened package into a mailbox's Maildir
// (tmp/ then new/, each step synced), under a name derived from the
// originator, the package id and the mailbox, so that delivering the same
// package twice (the sender retried after a lost 250) finds it there and
// writes nothing.
func (d *Deliverer) deliverMaildir(mailbox, originator, pkgID string, extraHeader, msg []byte) error {
	dir := filepath.Join(d.maildir, MailboxDir(mailbox))
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return fmt.Errorf("maildir: %w", err)
		}
	}
	name := Name(originator, pkgID, mailbox)
	for _, sub := range []string{"new", "cur"} {
		matches, _ := filepath.Glob(filepath.Join(dir, sub, name+"*"))
		if len(matches) > 0 {
			return nil
		}
	}
	tmp := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	_, err = f.Write(extraHeader)
	if err == nil {
		_, err = f.Write(msg)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("maildir: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new", name)); err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	return syncDir(filepath.Join(dir, "new"))
}

// Name is the Maildir file name of a package delivered to a
// mailbox: the same for every delivery of it, so a repeat finds it.
func Name(originator, pkgID, mailbox string) string {
	sum := sha256.Sum256([]byte(originator + "\x00" + pkgID + "\x00" + strings.ToLower(mailbox)))
	return "conduit-" + hex.EncodeToString(sum[:12])
}

// MailboxDir is the folder name of a mailbox: its address, which the
// directory restricts to safe characters; anything else is refused by
// escaping it.
func MailboxDir(addr string) string {
	addr = strings.ToLower(addr)
	var b strings.Builder
	for _, r := range addr {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', strings.ContainsRune("@.-_+", r):
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, "%%%02x", r)
		}
	}
	s := b.String()
	if s == "" || s == "." || s == ".." {
		return "invalid"
	}
	return s
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

// Copies finds a package's delivered copies in the Maildirs of the given
// mailboxes by the names deliverMaildir gives them (retention).
func Copies(maildir string, mailboxes []string, originator, pkgID string) []string {
	if maildir == "" {
		return nil
	}
	var out []string
	for _, mb := range mailboxes {
		name := Name(originator, pkgID, mb)
		for _, sub := range []string{"new", "cur"} {
			m, _ := filepath.Glob(filepath.Join(maildir, MailboxDir(mb), sub, name+"*"))
			out = append(out, m...)
		}
	}
	return out
}
