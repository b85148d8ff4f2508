package envelope

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
)

func TestSpoolRoundTripsInMemoryAndOnDisk(t *testing.T) {
	for _, size := range []int{0, 10, spoolChunk, spoolMemory / 2, 3*spoolMemory + 7} {
		data := make([]byte, size)
		rand.Read(data)
		sp, err := newSpool(t.TempDir(), 0)
		tcheck(t, err, "new spool")
		// Odd write sizes cross chunk boundaries.
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 7777)
			_, err := sp.Write(rest[:n])
			tcheck(t, err, "write")
			rest = rest[n:]
		}
		tcheck(t, sp.finish(), "finish")
		if onDisk := sp.f != nil; onDisk != (size > spoolMemory) {
			t.Errorf("size %d: on disk = %v", size, onDisk)
		}
		for pass := 0; pass < 2; pass++ {
			r, err := sp.reader()
			tcheck(t, err, "reader")
			got, err := io.ReadAll(r)
			tcheck(t, err, "read")
			if !bytes.Equal(got, data) {
				t.Fatalf("size %d pass %d: spool returned different bytes", size, pass)
			}
		}
		if size > 0 && sp.f == nil && bytes.Contains(sp.mem, data[:min(size, 64)]) {
			t.Errorf("size %d: plaintext visible in the spool", size)
		}
		sp.Close()
	}
}

func TestSpoolDetectsTamperingAndTruncation(t *testing.T) {
	sp, err := newSpool(t.TempDir(), 0)
	tcheck(t, err, "new spool")
	sp.Write(bytes.Repeat([]byte("x"), 2*spoolChunk+5))
	tcheck(t, sp.finish(), "finish")
	good := bytes.Clone(sp.mem)

	sp.mem[len(sp.mem)/2] ^= 1
	r, _ := sp.reader()
	if _, err := io.ReadAll(r); err == nil {
		t.Error("a flipped byte in the spool went unnoticed")
	}
	// Drop the last chunk: what remains must not read as complete.
	sp.mem = good[:4+spoolChunk+sp.aead.Overhead()]
	sp.n = 1
	r, _ = sp.reader()
	if _, err := io.ReadAll(r); err == nil {
		t.Error("a truncated spool read as complete")
	}
}

func TestSpoolRefusesOverMax(t *testing.T) {
	sp, err := newSpool(t.TempDir(), 100)
	tcheck(t, err, "new spool")
	defer sp.Close()
	if _, err := sp.Write(make([]byte, 101)); err != ErrTooLarge {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}
