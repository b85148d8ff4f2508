package armor

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// ErrCorrupt is returned for armor that cannot be read: an over-long line,
// or base64 padding followed by more text.
var ErrCorrupt = errors.New("armor invalid")

// Block is an armored block being read.
type Block struct {
	Type   string            // from the BEGIN line, e.g. "PGP MESSAGE"
	Header map[string]string // the armor headers
	Body   io.Reader         // the decoded data
}

var (
	armorStart = []byte("-----BEGIN ")
	armorEnd   = []byte("-----END ")
)

const (
	// lineBuf is the line buffer go-crypto reads armor with: a line of
	// this many bytes or more without its LF is refused in the body, and
	// read in pieces before it (lines of leading text are skipped piece by
	// piece; a header value's pieces are joined untrimmed). Keeping it
	// makes this reader accept exactly what go-crypto accepts.
	lineBuf = 100
	// maxBodyLine is go-crypto's bound on a body line, blanks trimmed.
	maxBodyLine = 96
	// bodyBuf is the read buffer for the body, and outLen the buffer a
	// round of lines is decoded into when the caller's is small.
	bodyBuf = 16 << 10
	outLen  = 12 << 10
	// minDirect is the smallest read that lines are decoded into
	// directly, without the copy through the out buffer.
	minDirect = 512
)

// Decode reads an armored block from in, skipping any text before it, and
// returns it positioned at the start of its data, as go-crypto's
// armor.Decode does. The checksum line is not checked, as RFC 9580
// section 6.1 requires. If no block is found, Decode returns io.EOF. An
// arbitrary amount of input after the block may have been read.
func Decode(in io.Reader) (*Block, error) {
	// The leading text and the headers are read through go-crypto's small
	// buffer, so that long lines split where go-crypto splits them; the
	// body is read through a large one, which reads past the small one
	// without a copy once it is empty.
	r := bufio.NewReaderSize(in, lineBuf)
	ignoreNext := false
tryNextBlock:
	var line []byte
	var err error
	for {
		ignoreThis := ignoreNext
		line, ignoreNext, err = r.ReadLine()
		if err != nil {
			return nil, err
		}
		if ignoreNext || ignoreThis {
			continue
		}
		line = bytes.TrimSpace(line)
		if len(line) > len(armorStart)+len("-----") && bytes.HasPrefix(line, armorStart) {
			break
		}
	}
	b := &Block{Type: string(line[len(armorStart) : len(line)-len("-----")]), Header: map[string]string{}}
	nextIsContinuation := false
	var lastKey string
	for {
		isContinuation := nextIsContinuation
		line, nextIsContinuation, err = r.ReadLine()
		if err != nil {
			return nil, err
		}
		if isContinuation {
			b.Header[lastKey] += string(line)
			continue
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			break
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			// Not a header: go-crypto takes the BEGIN line for text and
			// looks for a block further on.
			goto tryNextBlock
		}
		lastKey = string(line[:i])
		value := ""
		if len(line) > i+2 {
			value = string(line[i+2:])
		}
		b.Header[lastKey] = value
	}
	bufs := bodyPool.Get().(*bodyBufs)
	bufs.r.Reset(r)
	b.Body = &bodyReader{bufs: bufs, r: bufs.r, text: bufs.text[:0], outBuf: bufs.out}
	return b, nil
}

// bodyBufs are a body reader's buffers, kept for the next block once a
// body has been read to its end: opening a small package should not cost
// more in buffers than in cryptography.
type bodyBufs struct {
	r         *bufio.Reader
	text, out []byte
}

var bodyPool = sync.Pool{New: func() any {
	return &bodyBufs{
		r:    bufio.NewReaderSize(nil, bodyBuf),
		text: make([]byte, 0, 2*lineBuf),
		out:  make([]byte, outLen),
	}
}}

// bodyReader decodes the body of a block. A line as go-crypto writes it
// (64 characters of the alphabet and its line end) is decoded where it lies
// in the read buffer, straight into the caller's buffer when that is large
// enough; any other line is checked and trimmed as go-crypto does and its
// text collected, and the whole groups of four characters collected are
// decoded after it. go-crypto's reader filters and decodes a few bytes at
// a time.
type bodyReader struct {
	bufs   *bodyBufs // nil once given back
	r      *bufio.Reader
	text   []byte // base64 text not yet decoded: less than a group after a line
	out    []byte // decoded, not yet read
	outBuf []byte
	// err is returned once out is drained: the end of the body (io.EOF)
	// or what went wrong reading it.
	err    error
	padded bool // a group with padding was decoded: no more text may follow
}

func (d *bodyReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			d.release()
			return 0, d.err
		}
		if n := d.fill(p); n > 0 {
			return n, nil
		}
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// release gives the buffers back once nothing refers to them.
func (d *bodyReader) release() {
	if d.bufs == nil {
		return
	}
	d.bufs.r.Reset(nil)
	if cap(d.text) <= cap(d.bufs.text)*2 && cap(d.outBuf) <= cap(d.bufs.out)*2 {
		d.bufs.text, d.bufs.out = d.text[:0], d.outBuf
		bodyPool.Put(d.bufs)
	}
	d.bufs, d.r, d.text, d.outBuf = nil, nil, nil, nil
}

// fill decodes lines, into p when it is large enough (returning how many
// bytes it wrote there), else into d.out.
func (d *bodyReader) fill(p []byte) int {
	dst := p
	if len(dst) < minDirect {
		dst = d.outBuf[:cap(d.outBuf)]
	}
	w, err := d.lines(dst)
	if err == io.EOF && len(d.text) > 0 {
		// go-crypto's base64 decoder: text that ends mid-group at the
		// end of the body is a truncation.
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		// What decoded before the bad character or line is read first,
		// as with go-crypto, so that the layers above fail where they
		// would have.
		d.err = err
	}
	if len(p) < minDirect {
		d.out = dst[:w]
		return 0
	}
	return w
}

// room is how much decoded data a line may add, with the text held:
// (lineBuf characters, more than a line holds once trimmed) / 4 * 3.
func (d *bodyReader) room() int { return (len(d.text) + lineBuf) / 4 * 3 }

// lines decodes into dst the lines the read buffer holds, without a call
// per line, until dst has no room for another; when the buffer holds no
// complete line and nothing has been decoded, it reads one line through
// it. It returns the bytes written to dst, and io.EOF at the end of the
// body.
func (d *bodyReader) lines(dst []byte) (int, error) {
	w := 0
	for w+d.room() <= len(dst) {
		buf, _ := d.r.Peek(d.r.Buffered())
		used := 0
		for w+d.room() <= len(dst) {
			rest := buf[used:]
			// A full line, as go-crypto writes them: nothing to trim,
			// and whole groups, when no text is held (the order of the
			// data) and no padding came before (then it is corrupt).
			if len(d.text) == 0 && !d.padded && len(rest) > lineLen {
				k := 0
				switch {
				case rest[lineLen] == '\n':
					k = lineLen + 1
				case rest[lineLen] == '\r' && len(rest) > lineLen+1 && rest[lineLen+1] == '\n':
					k = lineLen + 2
				}
				if k > 0 && decodeLine(dst[w:], rest) {
					w += lineLen / 4 * 3
					used += k
					continue
				}
			}
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				break
			}
			used += i + 1
			if err := d.line(dst, &w, rest[:i+1]); err != nil {
				d.r.Discard(used)
				return w, err
			}
		}
		d.r.Discard(used)
		if used > 0 {
			continue
		}
		if w > 0 {
			return w, nil
		}
		raw, err := d.r.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			return w, ErrCorrupt
		case err != nil && len(raw) == 0:
			return w, err
		}
		if err := d.line(dst, &w, raw); err != nil {
			return w, err
		}
	}
	return w, nil
}

// line takes a line that is not a full one, as read (LF included if it
// has one): checked and trimmed, its text added to d.text, and the whole
// groups held decoded into dst[*w:].
func (d *bodyReader) line(dst []byte, w *int, raw []byte) error {
	line, err := bodyLine(raw)
	if err != nil {
		return err
	}
	d.text = appendText(d.text, line)
	n := len(d.text) / 4 * 4
	if n == 0 {
		return nil
	}
	if d.padded {
		return ErrCorrupt
	}
	m, err := decodeBase64(dst[*w:], d.text[:n])
	*w += m
	if err != nil {
		return err
	}
	d.padded = d.text[n-1] == '='
	d.text = d.text[:copy(d.text, d.text[n:])]
	return nil
}

// bodyLine checks a line of the body as read, LF included if it has one,
// and returns it with blanks trimmed, or io.EOF at the END line or the
// checksum line.
func bodyLine(line []byte) ([]byte, error) {
	// go-crypto reads lines through a buffer of lineBuf bytes and refuses
	// one that does not fit, LF included.
	if len(line) > lineBuf || len(line) == lineBuf && line[len(line)-1] != '\n' {
		return nil, ErrCorrupt
	}
	line = bytes.TrimSpace(line)
	if bytes.HasPrefix(line, armorEnd) {
		return nil, io.EOF
	}
	if len(line) == 5 && line[0] == '=' {
		// The checksum line: the body ends; the sum is not checked.
		return nil, io.EOF
	}
	if len(line) > maxBodyLine {
		return nil, ErrCorrupt
	}
	return line, nil
}

// appendText appends a line's base64 text, without the CRs inside it that
// go-crypto's base64 reader drops (the LF ends the line, and the blanks
// around it are trimmed).
func appendText(text, line []byte) []byte {
	for {
		i := bytes.IndexByte(line, '\r')
		if i < 0 {
			return append(text, line...)
		}
		text = append(text, line[:i]...)
		line = line[i+1:]
	}
}
