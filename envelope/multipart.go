package envelope

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-message/textproto"
)

// multipartReader reads the body parts of a MIME multipart entity (RFC
// 2046 section 5.1) as go-message's textproto.MultipartReader does (which
// is Go's mime/multipart reader): the same parts, headers, bytes and
// failures, as TestMultipartReaderAgreesWithGoMessage and
// FuzzMultipartReader check. It exists for speed, in two ways. It reads
// from the caller's bufio.Reader, where go-message copies everything
// through a second buffer of 4 KiB and takes a 1 MiB payload in 4 KiB
// pieces. And it looks for a delimiter by its dashes ("--boundary", then
// the line end before it), which IndexByte passes over base64 text and
// most prose at once, where go-message looks for the line end first and
// stops at every line. Together they were a sixth of opening a 1 MiB
// package, twice over: the armored envelope and the opened payload.
type multipartReader struct {
	br        *bufio.Reader
	cur       *mimePart
	partsRead int

	nl               []byte // "\r\n" or "\n", set by the first delimiter line
	nlDashBoundary   []byte // nl + "--boundary"
	dashBoundaryDash []byte // "--boundary--"
	dashBoundary     []byte // "--boundary"
}

// lineMax is the longest line outside the parts' bodies go-message reads:
// its buffer's size. A longer preamble or delimiter line is refused, as
// go-message refuses it.
const lineMax = 4096

// newMultipartReader reads the parts of the body that br is positioned
// at. br is read by the multipart reader alone from here on; its buffer
// must hold lineMax bytes, and its source must keep returning an error
// once it has returned one (as stickyReader does), as go-message makes
// its own source do.
func newMultipartReader(br *bufio.Reader, boundary string) *multipartReader {
	b := []byte("\r\n--" + boundary + "--")
	return &multipartReader{
		br:               br,
		nl:               b[:2],
		nlDashBoundary:   b[:len(b)-2],
		dashBoundaryDash: b[2:],
		dashBoundary:     b[2 : len(b)-2],
	}
}

// stickyReader returns, once its reader has returned an error, that
// error for ever.
type stickyReader struct {
	r   io.Reader
	err error
}

func (s *stickyReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	var n int
	n, s.err = s.r.Read(p)
	return n, s.err
}

// mimePart is a body part being read.
type mimePart struct {
	Header textproto.Header

	mr      *multipartReader
	n       int   // bytes of data known to be in mr.br before a delimiter
	total   int64 // bytes of data read
	err     error // returned once n is 0
	readErr error // what reading mr.br further found
}

// NextPart returns the next part, or io.EOF after the close delimiter.
// What is left of the part before is read and dropped.
func (r *multipartReader) NextPart() (*mimePart, error) {
	if r.cur != nil {
		_, _ = io.Copy(io.Discard, r.cur)
	}
	if string(r.dashBoundary) == "--" {
		return nil, errors.New("multipart: boundary is empty")
	}
	expectNewPart := false
	for {
		line, err := r.br.ReadSlice('\n')
		if len(line) > lineMax || len(line) == lineMax && line[lineMax-1] != '\n' || err == bufio.ErrBufferFull {
			return nil, fmt.Errorf("multipart: NextPart: %v", bufio.ErrBufferFull)
		}
		if err == io.EOF && r.isFinalBoundary(line) {
			// A close delimiter with no line end after it.
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("multipart: NextPart: %v", err)
		}
		if r.isBoundaryDelimiterLine(line) {
			r.partsRead++
			h, err := textproto.ReadHeader(r.br)
			if err != nil {
				return nil, err
			}
			r.cur = &mimePart{Header: h, mr: r}
			return r.cur, nil
		}
		if r.isFinalBoundary(line) {
			return nil, io.EOF
		}
		if expectNewPart {
			return nil, fmt.Errorf("multipart: expecting a new Part; got line %q", string(line))
		}
		if r.partsRead == 0 {
			// The preamble.
			continue
		}
		// The line end between the part before and the delimiter
		// (RFC 2046 section 5.1.1: it belongs to the delimiter), left
		// by the part's reader.
		if bytes.Equal(line, r.nl) {
			expectNewPart = true
			continue
		}
		return nil, fmt.Errorf("multipart: unexpected line in Next(): %q", line)
	}
}

func (r *multipartReader) isFinalBoundary(line []byte) bool {
	if !bytes.HasPrefix(line, r.dashBoundaryDash) {
		return false
	}
	rest := skipLWSP(line[len(r.dashBoundaryDash):])
	return len(rest) == 0 || bytes.Equal(rest, r.nl)
}

func (r *multipartReader) isBoundaryDelimiterLine(line []byte) bool {
	if !bytes.HasPrefix(line, r.dashBoundary) {
		return false
	}
	rest := skipLWSP(line[len(r.dashBoundary):])
	// The first delimiter line says whether lines end in CRLF or LF
	// alone, as go-message (and Go's mime/multipart) let it.
	if r.partsRead == 0 && len(rest) == 1 && rest[0] == '\n' {
		r.nl = r.nl[1:]
		r.nlDashBoundary = r.nlDashBoundary[1:]
	}
	return bytes.Equal(rest, r.nl)
}

func skipLWSP(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// Read reads the part's body, up to the line end before the next
// delimiter.
func (p *mimePart) Read(d []byte) (int, error) {
	br := p.mr.br
	// Find data to return, or why there is none (a delimiter, an error).
	for p.n == 0 && p.err == nil {
		peek, _ := br.Peek(br.Buffered())
		p.n, p.err = p.scan(peek)
		if p.n == 0 && p.err == nil {
			// Make the buffer read more.
			_, p.readErr = br.Peek(len(peek) + 1)
			if p.readErr == io.EOF {
				p.readErr = io.ErrUnexpectedEOF
			}
		}
	}
	if p.n == 0 {
		return 0, p.err
	}
	n, _ := br.Read(d[:min(len(d), p.n)])
	p.total += int64(n)
	p.n -= n
	if p.n == 0 {
		return n, p.err
	}
	return n, nil
}

// scan is go-message's scanUntilBoundary: how many bytes at the start of
// buf are the part's data, and the error to return after them (io.EOF at
// a delimiter).
func (p *mimePart) scan(buf []byte) (int, error) {
	mr := p.mr
	if p.total == 0 {
		// At the start of the body a delimiter needs no line end before
		// it: the part is empty.
		if bytes.HasPrefix(buf, mr.dashBoundary) {
			switch matchAfterPrefix(buf, mr.dashBoundary, p.readErr) {
			case -1:
				return len(mr.dashBoundary), nil
			case 0:
				return 0, nil
			case +1:
				return 0, io.EOF
			}
		}
		if bytes.HasPrefix(mr.dashBoundary, buf) {
			return 0, p.readErr
		}
	}
	if i := indexDelimiter(buf, mr.nl, mr.dashBoundary); i >= 0 {
		switch matchAfterPrefix(buf[i:], mr.nlDashBoundary, p.readErr) {
		case -1:
			return i + len(mr.nlDashBoundary), nil
		case 0:
			return i, nil
		case +1:
			return i, io.EOF
		}
	}
	if bytes.HasPrefix(mr.nlDashBoundary, buf) {
		return 0, p.readErr
	}
	// Everything before the last line end is data, and so is what
	// follows it unless it may be the start of a delimiter.
	i := bytes.LastIndexByte(buf, mr.nlDashBoundary[0])
	if i >= 0 && bytes.HasPrefix(mr.nlDashBoundary, buf[i:]) {
		return i, nil
	}
	return len(buf), p.readErr
}

// indexDelimiter is bytes.Index(buf, nl+dashBoundary), found by the
// dashes first.
func indexDelimiter(buf, nl, dashBoundary []byte) int {
	for from := len(nl); from+len(dashBoundary) <= len(buf); {
		j := bytes.Index(buf[from:], dashBoundary)
		if j < 0 {
			return -1
		}
		i := from + j
		if bytes.Equal(buf[i-len(nl):i], nl) {
			return i - len(nl)
		}
		from = i + 1
	}
	return -1
}

// matchAfterPrefix says what follows a delimiter's dashes and boundary in
// buf: +1 the delimiter (blank, line end, or the close delimiter's
// dashes), -1 not a delimiter, 0 not known until more is read.
func matchAfterPrefix(buf, prefix []byte, readErr error) int {
	if len(buf) == len(prefix) {
		if readErr != nil {
			return +1
		}
		return 0
	}
	switch buf[len(prefix)] {
	case ' ', '\t', '\r', '\n', '-':
		return +1
	}
	return -1
}
