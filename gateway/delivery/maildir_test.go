package delivery

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestMailboxDirCannotEscapeTheMaildir(t *testing.T) {
	for in, want := range map[string]string{
		"Intel@Northgate.example": "intel@northgate.example",
		"../../etc/passwd":        "..%2f..%2fetc%2fpasswd",
		"..":                      "invalid",
		"a b@c":                   "a%20b@c",
	} {
		if got := MailboxDir(in); got != want {
			t.Errorf("MailboxDir(%q) = %q, want %q", in, got, want)
		}
	}
}

// A package delivered again (the sender retried after a lost 250) is
// found wherever a mail reader has put it since, and written only once.
func TestMaildirRepeatFindsTheCopyWhereverAReaderMovedIt(t *testing.T) {
	root := t.TempDir()
	d := New(root, "", "gw.example")
	const mb, orig = "intel@northgate.example", "northshire-pio"
	box := filepath.Join(root, MailboxDir(mb))
	count := func() int {
		n := 0
		for _, sub := range []string{"new", "cur"} {
			es, err := os.ReadDir(filepath.Join(box, sub))
			if err != nil {
				t.Fatal(err)
			}
			n += len(es)
		}
		return n
	}
	deliver := func(id string) {
		t.Helper()
		if err := d.Deliver(context.Background(), mb, orig, id, []byte("X-A: 1\r\n"), []byte("body\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	for i, move := range []func(name string) string{
		func(string) string { return "" },                      // still in new/
		func(name string) string { return name + ":2," },       // seen by a reader
		func(name string) string { return name + ":2,RS" },     // flags added
		func(name string) string { return name + ",S=17:2,S" }, // a store's size field
		func(name string) string { return name + "!2,S" },      // no ':' on the file system
		func(name string) string { return "" },                 // moved back to new/
		func(name string) string { return name + ":2,FRS" },    // and to cur/ again
	} {
		id := fmt.Sprintf("pkg-%d", i)
		deliver(id)
		name := Name(orig, id, mb)
		if to := move(name); to != "" {
			if err := os.Rename(filepath.Join(box, "new", name), filepath.Join(box, "cur", to)); err != nil {
				t.Fatal(err)
			}
		}
		before := count()
		deliver(id)
		if got := count(); got != before {
			t.Fatalf("move %d: a repeated delivery wrote a second copy (%d files, had %d)", i, got, before)
		}
		if before != i+1 {
			t.Fatalf("move %d: %d files, want %d", i, before, i+1)
		}
	}
	// A reader moving a message from cur/ back to new/ and a new package
	// in the same second: the listing of cur/ is not trusted while its
	// change is recent, and the new package is still written.
	deliver("fresh")
	if got := count(); got != 8 {
		t.Fatalf("%d files, want 8", got)
	}
}

// The folder removed under a running gateway is made again.
func TestMaildirFolderRemovedUnderTheGatewayIsMadeAgain(t *testing.T) {
	root := t.TempDir()
	d := New(root, "", "gw.example")
	const mb = "intel@northgate.example"
	if err := d.Deliver(context.Background(), mb, "o", "1", nil, []byte("a\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, MailboxDir(mb))); err != nil {
		t.Fatal(err)
	}
	err := d.Deliver(context.Background(), mb, "o", "2", nil, []byte("b\r\n"))
	if err == nil {
		t.Fatal("a delivery into a removed folder reported success without writing")
	}
	if err := d.Deliver(context.Background(), mb, "o", "2", nil, []byte("b\r\n")); err != nil {
		t.Fatalf("the retry did not make the folder again: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, MailboxDir(mb), "new", Name("o", "2", mb))); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkMaildirDeliverFullMailbox is one delivery (written, synced,
// renamed) into a mailbox that already keeps 20,000 messages, half of
// them read (cur/): the cost must not grow with the mailbox.
func BenchmarkMaildirDeliverFullMailbox(b *testing.B) {
	root := b.TempDir()
	d := New(root, "", "gw.example")
	const mb = "intel@northgate.example"
	box := filepath.Join(root, MailboxDir(mb))
	for _, sub := range []string{"tmp", "new", "cur"} {
		os.MkdirAll(filepath.Join(box, sub), 0o700)
	}
	for i := 0; i < 20000; i++ {
		name := Name("o", fmt.Sprint("old-", i), mb)
		p := filepath.Join(box, "new", name)
		if i%2 == 1 {
			p = filepath.Join(box, "cur", name+":2,S")
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	msg := make([]byte, 16<<10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.Deliver(context.Background(), mb, "o", fmt.Sprint("new-", i), nil, msg); err != nil {
			b.Fatal(err)
		}
	}
}
