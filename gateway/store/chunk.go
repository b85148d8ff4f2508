package store

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Chunked envelopes. A queued envelope is stored as rows of at most
// EnvelopeChunk bytes (queue_chunk: item id, sequence number, data), so
// that the relay can stream it to the partner a chunk at a time instead of
// holding it whole: with 1,000 queued packages of 10 MiB, a delivery holds
// one chunk, not 10 MiB. SQLite's incremental blob I/O would read one row
// in pieces, but database/sql (and the pure-Go driver under it) does not
// reach it; rows of a bounded size do the same through plain queries. Each
// chunk is read by a statement of its own that ends as soon as the row is
// decrypted, so a slow partner never holds a read transaction open (which
// would pin SQLite's WAL, or a PostgreSQL snapshot, for the whole
// delivery).
//
// Every chunk is encrypted under the item's data key (datakey.go), with a
// random nonce of its own. The additional data binds the chunk to its place
// in one write of one envelope: the kind ("queue"), a random tag drawn for
// each write (Enqueue, ResealItem), the sequence number, and whether it is
// the last chunk. A reader therefore fails, rather than return a mix, when
// chunks of two writes meet (an envelope sealed again between two reads), a
// chunk is missing or out of place, or the envelope is cut after a chunk
// that is not the last: the item's size, read when the stream is opened,
// must be exactly what the chunks hold.
//
// Envelopes stored before chunks (schema version 6 and older) stay whole
// in queue_envelope and are read whole; new writes and reseals are chunked.

// EnvelopeChunk is the most plaintext one stored chunk holds. A delivery
// holds about two of them (the row as the driver returns it, and its
// decryption). 256 KiB keeps that small beside the sessions' buffers, and
// a 10 MiB envelope is 40 short reads.
const EnvelopeChunk = 256 << 10

// chunkMagic starts every stored chunk (its format's version).
var chunkMagic = []byte("CDC1")

const (
	chunkTagSize = 16
	chunkFinal   = 1 // flags: the envelope's last chunk
	// chunkHeader: magic, flags, tag; the nonce follows.
	chunkHeader = 4 + 1 + chunkTagSize
)

// Errors a reader of a stored envelope gives.
var (
	// ErrEnvelopeChanged: the stored envelope is not the one expected (its
	// size is not the caller's, or its chunks are not of one write, or are
	// missing). Items are not changed once queued but by a reseal, so a
	// delivery that meets this sends nothing and tries again later.
	ErrEnvelopeChanged = errors.New("the stored envelope changed or is incomplete")
	// ErrNoEnvelope: the item has no stored envelope (shredded by
	// retention, or a record that never had one).
	ErrNoEnvelope = errors.New("the item has no stored envelope")
)

// chunkAD is the additional data of one chunk's seal.
func chunkAD(dst, tag []byte, seq int64, flags byte) []byte {
	dst = append(dst, keyQueue...)
	dst = append(dst, tag...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(seq))
	return append(dst, flags)
}

// writeChunks seals env under key as one write of chunks and hands each to
// put, in order. An empty envelope is one empty, final chunk, so that
// chunk 0 exists for every chunked envelope. put's data is valid only
// until put returns.
func writeChunks(key, env []byte, put func(seq int64, data []byte) error) error {
	a, err := gcmOf(key)
	if err != nil {
		return fmt.Errorf("seal chunk: %w", err)
	}
	tag := make([]byte, chunkTagSize)
	if _, err := rand.Read(tag); err != nil {
		return fmt.Errorf("seal chunk: %w", err)
	}
	n := max(1, (len(env)+EnvelopeChunk-1)/EnvelopeChunk)
	buf := make([]byte, 0, chunkHeader+a.NonceSize()+min(len(env), EnvelopeChunk)+a.Overhead())
	var ad []byte
	for seq := range n {
		var flags byte
		if seq == n-1 {
			flags = chunkFinal
		}
		lo := seq * EnvelopeChunk
		hi := min(lo+EnvelopeChunk, len(env))
		buf = append(buf[:0], chunkMagic...)
		buf = append(buf, flags)
		buf = append(buf, tag...)
		nonce := buf[len(buf) : len(buf)+a.NonceSize()]
		if _, err := rand.Read(nonce); err != nil {
			return fmt.Errorf("seal chunk: %w", err)
		}
		buf = buf[:len(buf)+a.NonceSize()]
		ad = chunkAD(ad[:0], tag, int64(seq), flags)
		buf = a.Seal(buf, nonce, env[lo:hi], ad)
		if err := put(int64(seq), buf); err != nil {
			return err
		}
	}
	return nil
}

// chunkSource is a backend's reads of one stored envelope, each a short
// statement of its own.
type chunkSource interface {
	// envelopeMeta reads the item's size and data key (nil when it has
	// none); ErrNotFound when there is no such item.
	envelopeMeta(ctx context.Context, id int64) (size int64, key []byte, err error)
	// readChunk reads chunk seq of the item and hands its stored bytes to
	// use, which must not keep them; found is false when there is none.
	readChunk(ctx context.Context, id, seq int64, use func([]byte) error) (found bool, err error)
	// legacyEnvelope reads an envelope stored whole, before chunks; found
	// is false when there is none.
	legacyEnvelope(ctx context.Context, id int64) (data []byte, found bool, err error)
}

// openEnvelope opens item id's stored envelope, which the caller expects
// to be size bytes: chunked, it is read a chunk at a time as the reader is
// read; stored whole (before chunks), it is read whole now.
func openEnvelope(ctx context.Context, src chunkSource, id, size int64) (io.ReadCloser, error) {
	rc, err := openStored(ctx, src, id, size)
	if err != nil {
		return nil, fmt.Errorf("open envelope of item %d: %w", id, err)
	}
	return rc, nil
}

func openStored(ctx context.Context, src chunkSource, id, size int64) (io.ReadCloser, error) {
	stored, key, err := src.envelopeMeta(ctx, id)
	if err != nil {
		return nil, err
	}
	if stored != size {
		return nil, fmt.Errorf("%w: it is %d bytes, %d expected", ErrEnvelopeChanged, stored, size)
	}
	r := &envelopeReader{ctx: ctx, src: src, id: id, size: size}
	found, err := r.load(key, 0)
	if err != nil {
		return nil, err
	}
	if found {
		return r, nil
	}
	data, found, err := src.legacyEnvelope(ctx, id)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNoEnvelope
	}
	plain, err := openAtRest(key, keyQueue, data)
	if err != nil {
		return nil, err
	}
	if int64(len(plain)) != size {
		return nil, fmt.Errorf("%w: it is %d bytes, %d expected", ErrEnvelopeChanged, len(plain), size)
	}
	return io.NopCloser(bytes.NewReader(plain)), nil
}

// envelopeReader reads a chunked envelope, one chunk held at a time. It
// reads the store with the context it was opened with.
type envelopeReader struct {
	ctx      context.Context
	src      chunkSource
	id, size int64

	a     cipher.AEAD
	tag   []byte // the write's tag, from chunk 0
	seq   int64  // the chunk in buf
	final bool   // buf holds the last chunk
	buf   []byte // its plaintext
	off   int    // how much of buf has been read
	total int64  // plaintext of the chunks loaded so far
	ad    []byte
	err   error
}

// load reads and decrypts chunk seq into r.buf. key is given for chunk 0,
// which sets up the cipher.
func (r *envelopeReader) load(key []byte, seq int64) (bool, error) {
	found, err := r.src.readChunk(r.ctx, r.id, seq, func(data []byte) error {
		if seq == 0 {
			if key == nil {
				return ErrShredded
			}
			a, err := gcmOf(key)
			if err != nil {
				return fmt.Errorf("open chunk: %w", err)
			}
			r.a = a
			if len(data) >= chunkHeader {
				r.tag = bytes.Clone(data[5:chunkHeader])
			}
		}
		if len(data) < chunkHeader+r.a.NonceSize()+r.a.Overhead() || !bytes.HasPrefix(data, chunkMagic) {
			return fmt.Errorf("chunk %d: %w (not a stored chunk)", seq, ErrEnvelopeChanged)
		}
		flags := data[4]
		if !bytes.Equal(data[5:chunkHeader], r.tag) {
			return fmt.Errorf("chunk %d: %w (of another write)", seq, ErrEnvelopeChanged)
		}
		nonce := data[chunkHeader : chunkHeader+r.a.NonceSize()]
		r.ad = chunkAD(r.ad[:0], r.tag, seq, flags)
		plain, err := r.a.Open(r.buf[:0], nonce, data[chunkHeader+r.a.NonceSize():], r.ad)
		if err != nil {
			return fmt.Errorf("chunk %d: %w (it does not match its key or its place)", seq, ErrEnvelopeChanged)
		}
		r.buf, r.off, r.seq, r.final = plain, 0, seq, flags&chunkFinal != 0
		r.total += int64(len(plain))
		// Checked before any of the chunk is given out: a delivery fails
		// before it sends bytes that are not the envelope's.
		switch {
		case r.total > r.size:
			return fmt.Errorf("%w: over %d bytes, %d expected", ErrEnvelopeChanged, r.total, r.size)
		case r.final && r.total != r.size:
			return fmt.Errorf("%w: %d bytes, %d expected", ErrEnvelopeChanged, r.total, r.size)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read envelope of item %d: %w", r.id, err)
	}
	return found, nil
}

// Read implements io.Reader.
func (r *envelopeReader) Read(p []byte) (int, error) {
	for r.off == len(r.buf) {
		if r.err != nil {
			return 0, r.err
		}
		if r.final {
			return 0, io.EOF
		}
		found, err := r.load(nil, r.seq+1)
		if err == nil && !found {
			err = fmt.Errorf("read envelope of item %d: %w (chunk %d is missing)", r.id, ErrEnvelopeChanged, r.seq+1)
		}
		if err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// Close implements io.Closer; no statement stays open between reads, so it
// only lets the chunk go.
func (r *envelopeReader) Close() error {
	r.buf, r.off, r.final = nil, 0, true
	if r.err == nil {
		r.err = errors.New("read envelope: the reader is closed")
	}
	return nil
}

// getWhole reads an item's envelope whole through a stream: Get's
// envelope, for the administrator's tools and the tests. nil, nil when the
// item has none.
func getWhole(ctx context.Context, src chunkSource, id, size int64) ([]byte, error) {
	rc, err := openEnvelope(ctx, src, id, size)
	if errors.Is(err, ErrNoEnvelope) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, err
	}
	// The chunk that ends the size must be the last one.
	if n, err := rc.Read(make([]byte, 1)); err != io.EOF {
		if n > 0 || err == nil {
			err = fmt.Errorf("read envelope of item %d: %w (longer than %d bytes)", id, ErrEnvelopeChanged, size)
		}
		return nil, err
	}
	return b, nil
}
