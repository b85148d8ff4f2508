package delivery

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// deliverMaildir writes an opened package into a mailbox's Maildir
// (tmp/ then new/, each step synced), under a name derived from the
// originator, the package id and the mailbox, so that delivering the same
// package twice (the sender retried after a lost 250) finds it there and
// writes nothing.
func (d *Deliverer) deliverMaildir(mailbox, originator, pkgID string, extraHeader, msg []byte) error {
	dir := filepath.Join(d.maildir, MailboxDir(mailbox))
	name := Name(originator, pkgID, mailbox)
	there, err := d.mailboxes.holds(dir, name)
	if err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	if there {
		return nil
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

// mailboxCache makes the check "is this package already in the mailbox?"
// cost a lookup by name instead of a read of the folder, which grew with
// every message the mailbox keeps (a mailbox of 100,000 messages was read
// whole for each delivery). A delivered package is new/NAME until a mail
// reader moves it to cur/NAME:2,FLAGS, with flags that change as the user
// works; so new/ is asked by name, and cur/ is listed once and listed again
// only when its modification time moves (every rename into or out of it
// moves it).
type mailboxCache struct {
	mu    sync.Mutex
	boxes map[string]*mailboxState
}

type mailboxState struct {
	curMod time.Time           // cur/'s modification time when it was listed
	trust  bool                // the listing can be reused while curMod holds
	cur    map[string]struct{} // names in cur/, without the ":2,FLAGS" info
}

// racyWindow: a listing taken within this time of cur/'s last change is
// not reused, since a second change within the file system's timestamp
// granularity would leave the modification time as it was (the problem
// git calls "racy" index entries).
const racyWindow = 2 * time.Second

// holds reports whether the mailbox folder dir already holds a message
// named name (in new/ or cur/), making the folder's tmp/, new/ and cur/
// the first time it is used.
func (c *mailboxCache) holds(dir, name string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.boxes == nil {
		c.boxes = map[string]*mailboxState{}
	}
	b := c.boxes[dir]
	if b == nil {
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				return false, err
			}
		}
		b = &mailboxState{}
		c.boxes[dir] = b
	}
	if _, err := os.Lstat(filepath.Join(dir, "new", name)); err == nil {
		return true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	cur := filepath.Join(dir, "cur")
	st, err := os.Stat(cur)
	if err != nil {
		// The folder went away under the gateway (an administrator
		// moved it): make it again on the next delivery.
		delete(c.boxes, dir)
		return false, err
	}
	if !b.trust || !st.ModTime().Equal(b.curMod) {
		names, err := curNames(cur)
		if err != nil {
			return false, err
		}
		b.cur, b.curMod = names, st.ModTime()
		b.trust = time.Since(st.ModTime()) > racyWindow
	}
	_, ok := b.cur[name]
	return ok, nil
}

// curNames lists the gateway's messages in cur/ by the names it gave
// them.
func curNames(dir string) (map[string]struct{}, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]struct{}{}
	for {
		batch, err := f.Readdirnames(1024)
		for _, n := range batch {
			// Only the gateway's own names, whatever a mail store
			// appended ("NAME:2,FLAGS", "NAME,S=1234:2,S").
			if strings.HasPrefix(n, namePrefix) && len(n) >= nameLen {
				names[n[:nameLen]] = struct{}{}
			}
		}
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// Name is the Maildir file name of a package delivered to a
// mailbox: the same for every delivery of it, so a repeat finds it.
func Name(originator, pkgID, mailbox string) string {
	sum := sha256.Sum256([]byte(originator + "\x00" + pkgID + "\x00" + strings.ToLower(mailbox)))
	return namePrefix + hex.EncodeToString(sum[:nameBytes])
}

const (
	namePrefix = "conduit-"
	nameBytes  = 12
	nameLen    = len(namePrefix) + 2*nameBytes
)

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
