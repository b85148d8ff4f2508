package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxLine bounds one JSON line read by VerifyJSONL; an exported event is
// far smaller (its text fields are bounded).
const MaxLine = 64 << 10

// VerifyJSONL checks a chain exported by Export without the database: a
// SIEM's copy, or a file handed to an auditor. The lines must be a
// contiguous run of the chain (an export without --package, --rule or
// --kind filters); a run that does not start at entry 1 is trusted to
// start where its first line says, so compare its last hash with the
// head the gateway's own Verify reports to tie the two together. key is
// the chain's HMAC key, nil for an unkeyed chain. An error means the
// input is not an export (bad JSON, an over-long line), not that the chain
// is broken.
func VerifyJSONL(r io.Reader, key []byte) (VerifyResult, error) {
	res := VerifyResult{Keyed: key != nil, HeadHash: Genesis}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLine)
	var want int64
	var prev []byte
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var e Event
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return res, fmt.Errorf("line %d: not an audit event: %w", line, err)
		}
		if d.More() {
			return res, fmt.Errorf("line %d: more than one value", line)
		}
		if want == 0 { // the first line anchors the run
			want, prev = e.Seq, e.PrevHash
			if e.Seq == 1 {
				prev = Genesis
			}
			if e.Seq < 1 {
				return res, fmt.Errorf("line %d: seq %d", line, e.Seq)
			}
		}
		bad := func(seq int64, p Problem, format string, a ...any) (VerifyResult, error) {
			res.Seq, res.Problem, res.Reason = seq, p, fmt.Sprintf(format, a...)
			return res, nil
		}
		contentOK := len(e.Hash) == HashSize && len(e.PrevHash) == HashSize && e.Kind.Valid() &&
			hmac.Equal(e.Hash, eventHash(key, &e, e.Seq, e.PrevHash))
		switch {
		case !contentOK && key != nil && len(e.Hash) == HashSize && bytes.Equal(e.Hash, eventHash(nil, &e, e.Seq, e.PrevHash)):
			return bad(e.Seq, Rewritten, "its hash was recomputed without the key")
		case !contentOK:
			return bad(e.Seq, Edited, "its contents do not match its hash (line %d)", line)
		case e.Seq > want:
			return bad(want, Deleted, "%s missing here, deleted or moved later: entry %d follows entry %d (line %d)", span(want, e.Seq-1), e.Seq, want-1, line)
		case e.Seq < want:
			return bad(e.Seq, Reordered, "entry %d appears after entry %d (line %d)", e.Seq, want-1, line)
		case !bytes.Equal(e.PrevHash, prev):
			return bad(e.Seq, Reordered, "it does not follow entry %d (line %d)", want-1, line)
		}
		res.Entries++
		res.HeadSeq, res.HeadHash = e.Seq, e.Hash
		want, prev = e.Seq+1, e.Hash
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return res, fmt.Errorf("line %d: longer than %d bytes: not an audit export", line+1, MaxLine)
		}
		return res, err
	}
	res.OK = true
	return res, nil
}
