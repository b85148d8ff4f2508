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
		if sp.f != nil {
			// The first megabyte stays in memory; only the rest is
			// written to the file.
			st, err := sp.f.Stat()
			tcheck(t, err, "stat")
			sealed := int64(size) + int64(sp.n)*int64(4+sp.aead.Overhead())
			if sp.memSize == 0 || sp.memSize > spoolMemory || st.Size()+int64(sp.memSize) != sealed {
				t.Errorf("size %d: %d bytes in memory, %d in the file, %d sealed", size, sp.memSize, st.Size(), sealed)
			}
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
		for _, c := range sp.mem {
			if size > 0 && bytes.Contains(c, data[:min(size, 64)]) {
				t.Errorf("size %d: plaintext visible in the spool", size)
			}
		}
		sp.Close()
	}
}

func TestSpoolDetectsTamperingAndTruncation(t *testing.T) {
	sp, err := newSpool(t.TempDir(), 0)
	tcheck(t, err, "new spool")
	sp.Write(bytes.Repeat([]byte("x"), 2*spoolChunk+5))
	tcheck(t, sp.finish(), "finish")
	good := sp.mem[0]
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	sp.mem[0] = flipped
	r, _ := sp.reader()
	if _, err := io.ReadAll(r); err == nil {
		t.Error("a flipped byte in the spool went unnoticed")
	}
	// Drop the last chunk: what remains must not read as complete.
	sp.mem[0] = good
	sp.mem = sp.mem[:1]
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

// TestSpoolReaderFailsAfterClose: Close gives the chunks' buffers back for
// other packages, so a reader left over must not read on.
func TestSpoolReaderFailsAfterClose(t *testing.T) {
	sp, err := newSpool(t.TempDir(), 0)
	tcheck(t, err, "new spool")
	sp.Write(bytes.Repeat([]byte("x"), 3*spoolChunk))
	tcheck(t, sp.finish(), "finish")
	r, err := sp.reader()
	tcheck(t, err, "reader")
	if _, err := r.Read(make([]byte, 10)); err != nil {
		t.Fatalf("read before close: %v", err)
	}
	sp.Close()
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != errSpoolClosed {
		t.Fatalf("read after close: %d bytes, err %v", n, err)
	}
}
