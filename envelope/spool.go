package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// spool holds a decrypted payload on disk while its checks run, encrypted
// under a key that exists only in this process's memory: a crash or a
// failed check leaves nothing readable behind, and no plaintext reaches the
// caller before every check has passed. The file is unlinked as soon as it
// is created. The first spoolMemory bytes stay in memory, sealed the same
// way, which saves small packages a file creation; only what comes after
// them goes to the file, so that a large package's first megabyte is not
// written twice.
//
// Format: chunks of up to spoolChunk plaintext bytes, each sealed with
// AES-256-GCM under a nonce that is the chunk's index; the final chunk's
// additional data differs, so a truncated spool does not read as complete.
type spool struct {
	dir string
	// mem holds the first sealed chunks, each with its length in front,
	// up to spoolMemory: one slice each, so that holding more copies
	// none. The chunks after them are in f.
	mem     [][]byte
	memSize int
	f       *os.File
	aead    cipher.AEAD
	buf     []byte
	// sealed is the chunk being written to the file.
	sealed []byte
	// lent are the buffers the readers open full chunks in, given back
	// with the chunks in memory on Close, after which the readers fail.
	lent   [][]byte
	n      uint64 // chunks written
	size   int64
	max    int64
	done   bool
	closed bool
}

const (
	spoolChunk  = 64 << 10
	spoolMemory = 1 << 20
	// sealedChunk is a full chunk sealed, with its length in front and
	// GCM's tag after it.
	sealedChunk = 4 + spoolChunk + 16
)

var (
	adMore = []byte{0}
	adLast = []byte{1}
)

func newSpool(dir string, max int64) (*spool, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &spool{dir: dir, aead: aead, buf: chunkPool.Get().([]byte)[:0], max: max}, nil
}

// spill starts the file the chunks after the ones in memory go to.
func (s *spool) spill() error {
	f, err := os.CreateTemp(s.dir, "conduit-spool-*")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	// Unlink at once: the open descriptor keeps the data reachable for us
	// and for nobody else, and a crash leaves no file.
	_ = os.Remove(f.Name())
	s.f = f
	s.sealed = sealedPool.Get().([]byte)[:0]
	return nil
}

func (s *spool) nonce(i uint64) []byte {
	n := make([]byte, s.aead.NonceSize())
	binary.BigEndian.PutUint64(n[len(n)-8:], i)
	return n
}

func (s *spool) Write(p []byte) (int, error) {
	if s.max > 0 && s.size+int64(len(p)) > s.max {
		return 0, ErrTooLarge
	}
	total := len(p)
	for len(p) > 0 {
		// A whole chunk is sealed from p itself, without a copy into
		// s.buf. The last chunk is sealed by finish, with its own
		// additional data, even when that leaves it empty.
		if len(s.buf) == 0 && len(p) >= spoolChunk {
			if err := s.seal(p[:spoolChunk], adMore); err != nil {
				return 0, err
			}
			p = p[spoolChunk:]
			continue
		}
		n := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf = s.buf[:len(s.buf)+n]
		p = p[n:]
		if len(s.buf) == cap(s.buf) && len(p) > 0 {
			if err := s.flush(adMore); err != nil {
				return 0, err
			}
		}
	}
	s.size += int64(total)
	return total, nil
}

func (s *spool) flush(ad []byte) error {
	if err := s.seal(s.buf, ad); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return nil
}

// seal appends one chunk, its length first.
func (s *spool) seal(chunk, ad []byte) error {
	n := len(chunk) + s.aead.Overhead()
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(n))
	if s.f == nil && s.memSize+len(hdr)+n > spoolMemory {
		if err := s.spill(); err != nil {
			return err
		}
	}
	if s.f == nil {
		var c []byte
		if len(hdr)+n == sealedChunk {
			c = sealedPool.Get().([]byte)[:0]
		} else {
			c = make([]byte, 0, len(hdr)+n)
		}
		c = s.aead.Seal(append(c, hdr[:]...), s.nonce(s.n), chunk, ad)
		s.mem = append(s.mem, c)
		s.memSize += len(c)
	} else {
		// One write per chunk, from a buffer kept for the next.
		s.sealed = s.aead.Seal(append(s.sealed[:0], hdr[:]...), s.nonce(s.n), chunk, ad)
		if _, err := s.f.Write(s.sealed); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	s.n++
	return nil
}

// finish writes the last chunk; the spool can then be read.
func (s *spool) finish() error {
	if s.done {
		return nil
	}
	s.done = true
	return s.flush(adLast)
}

// reader returns a fresh reader over the whole spooled plaintext.
func (s *spool) reader() (io.Reader, error) {
	if !s.done {
		return nil, errors.New("spool: read before finish")
	}
	r := &spoolReader{s: s, mem: s.mem}
	if s.f != nil {
		// No buffer in between: each chunk is read whole, into the
		// buffer it is opened in.
		r.r = io.NewSectionReader(s.f, 0, 1<<62)
	}
	return r, nil
}

func (s *spool) Close() error {
	if s.buf != nil {
		chunkPool.Put(s.buf[:0])
		s.buf = nil
	}
	s.closed = true
	// Full chunks' buffers go back for the next package: they hold
	// ciphertext under a key that is gone with this spool, or, lent to
	// a reader, plaintext that no reader reaches after Close.
	for _, c := range s.mem {
		if cap(c) == sealedChunk {
			sealedPool.Put(c[:0])
		}
	}
	for _, b := range s.lent {
		sealedPool.Put(b[:0])
	}
	if s.sealed != nil {
		sealedPool.Put(s.sealed[:0])
	}
	s.mem, s.memSize, s.lent, s.sealed = nil, 0, nil, nil
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}

var chunkPool = sync.Pool{New: func() any { return make([]byte, 0, spoolChunk) }}

// sealedPool holds buffers of a full sealed chunk: a 1 MiB package's
// chunks in memory were most of what opening it allocated, and of the
// collector's work.
var sealedPool = sync.Pool{New: func() any { return make([]byte, 0, sealedChunk) }}

var errSpoolClosed = errors.New("spool: read after close")

type spoolReader struct {
	s   *spool
	mem [][]byte  // the sealed chunks in memory not yet read
	r   io.Reader // the file the later ones are in, if any
	// buf holds one chunk, read sealed and opened in place.
	buf  []byte
	i    uint64
	cur  []byte
	last bool
}

func (r *spoolReader) Read(p []byte) (int, error) {
	if r.s.closed {
		return 0, errSpoolClosed
	}
	for len(r.cur) == 0 {
		if r.last {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// next opens the next chunk into r.cur.
func (r *spoolReader) next() error {
	var hdr [4]byte
	var c []byte // the chunk, when in memory
	switch {
	case len(r.mem) > 0:
		if len(r.mem[0]) < len(hdr) {
			return fmt.Errorf("spool: %w", io.ErrUnexpectedEOF)
		}
		c, r.mem = r.mem[0], r.mem[1:]
		copy(hdr[:], c)
	case r.r == nil:
		return fmt.Errorf("spool: %w", io.ErrUnexpectedEOF)
	default:
		if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
			return fmt.Errorf("spool: %w", io.ErrUnexpectedEOF)
		}
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > spoolChunk+uint32(r.s.aead.Overhead()) {
		return errors.New("spool: corrupt chunk length")
	}
	if cap(r.buf) < int(n) {
		// As large as the chunks read: a small package's reader stays
		// small.
		if n == sealedChunk-4 {
			r.buf = sealedPool.Get().([]byte)
			r.s.lent = append(r.s.lent, r.buf)
		} else {
			r.buf = make([]byte, n)
		}
	}
	var sealed []byte
	if c != nil {
		if uint32(len(c)-len(hdr)) != n {
			return errors.New("spool: corrupt chunk length")
		}
		sealed = c[len(hdr):]
	} else {
		sealed = r.buf[:n]
		if _, err := io.ReadFull(r.r, sealed); err != nil {
			return fmt.Errorf("spool: %w", io.ErrUnexpectedEOF)
		}
	}
	last := r.i == r.s.n-1
	ad := adMore
	if last {
		ad = adLast
	}
	// Opened into r.buf: in place when the chunk was read there, and
	// never into the spool's memory, which is read again.
	plain, err := r.s.aead.Open(r.buf[:0], r.s.nonce(r.i), sealed, ad)
	if err != nil {
		return errors.New("spool: chunk failed authentication")
	}
	r.i++
	r.last = last
	r.cur = plain
	return nil
}

// Spool holds a message on disk or in memory, encrypted under a key that
// exists only in this process, for callers that must read it more than
// once (the gateway seals one submitted message per destination). Write,
// then Finish, then Reader as often as needed; Close destroys it.
type Spool struct{ s *spool }

// NewSpool makes a spool in dir (os.TempDir when empty) that refuses more
// than max bytes (0: no limit) with ErrTooLarge.
func NewSpool(dir string, max int64) (*Spool, error) {
	s, err := newSpool(dir, max)
	if err != nil {
		return nil, err
	}
	return &Spool{s}, nil
}

func (s *Spool) Write(p []byte) (int, error) { return s.s.Write(p) }

// Finish ends writing.
func (s *Spool) Finish() error { return s.s.finish() }

// Reader reads the whole spooled message from the start.
func (s *Spool) Reader() (io.Reader, error) { return s.s.reader() }

// Size is the number of bytes written.
func (s *Spool) Size() int64 { return s.s.size }

// Close destroys the spool.
func (s *Spool) Close() error { return s.s.Close() }
