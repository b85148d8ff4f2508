package audit

import (
	"bytes"
	"crypto/hmac"
	"fmt"
)

// Head is the chain's head as recorded in the log's metadata.
type Head struct {
	Seq       int64
	Hash, MAC []byte
}

// chainWalker checks a chain entry by entry, in sequence order, by the
// rules of SQLite.Verify; the PostgreSQL trail streams its rows through
// it.
type chainWalker struct {
	key  []byte
	res  VerifyResult
	want int64
	prev []byte
	// hashExists says whether some entry has the hash (nil: unknown);
	// maxSeq is the highest seq in the log. Both serve only the diagnosis
	// of a broken entry.
	hashExists func([]byte) bool
	maxSeq     int64
}

func newChainWalker(key []byte, hashExists func([]byte) bool, maxSeq int64) *chainWalker {
	return &chainWalker{key: key, res: VerifyResult{Keyed: key != nil, HeadHash: Genesis}, want: 1, prev: Genesis,
		hashExists: hashExists, maxSeq: maxSeq}
}

// add checks the next entry; a non-nil result is the verdict on the first
// bad one.
func (w *chainWalker) add(e *Event) *VerifyResult {
	bad := func(seq int64, p Problem, format string, a ...any) *VerifyResult {
		r := VerifyResult{Entries: w.res.Entries, Keyed: w.res.Keyed, Seq: seq, Problem: p, Reason: fmt.Sprintf(format, a...)}
		return &r
	}
	want, prev := w.want, w.prev
	if len(e.Hash) != HashSize || len(e.PrevHash) != HashSize {
		return bad(e.Seq, Edited, "its hash is not %d bytes", HashSize)
	}
	contentOK := hmac.Equal(e.Hash, eventHash(w.key, e, e.Seq, e.PrevHash))
	switch {
	case contentOK && e.Seq > want:
		if want == 1 {
			return bad(want, Deleted, "the log starts at entry %d: %s missing", e.Seq, span(1, e.Seq-1))
		}
		if e.Seq == want+1 {
			return bad(want, Deleted, "entry %d is missing: entry %d follows entry %d", want, e.Seq, want-1)
		}
		return bad(want, Deleted, "entries %d to %d are missing: entry %d follows entry %d", want, e.Seq-1, e.Seq, want-1)
	case contentOK && e.Seq < want:
		return bad(e.Seq, Reordered, "entry %d appears again after entry %d", e.Seq, want-1)
	case contentOK && !bytes.Equal(e.PrevHash, prev):
		return bad(e.Seq, Reordered, "it does not follow entry %d: its previous-hash is not entry %d's hash (out of order, or taken from another log)", want-1, want-1)
	case contentOK:
		w.res.Entries++
		w.res.HeadSeq, w.res.HeadHash = e.Seq, e.Hash
		w.want, w.prev = e.Seq+1, e.Hash
		return nil
	}
	max := max(w.maxSeq, e.Seq) + 1024
	for seq := int64(1); seq <= max; seq++ {
		if seq != e.Seq && hmac.Equal(e.Hash, eventHash(w.key, e, seq, e.PrevHash)) {
			if w.hashExists != nil && !w.hashExists(e.PrevHash) && seq > e.Seq && seq > 1 {
				return bad(e.Seq, Deleted, "it holds the event written as entry %d, and the entry written before that is gone: entries were deleted and the rest renumbered", seq)
			}
			return bad(e.Seq, Reordered, "it holds the event written as entry %d: entries were put in another order", seq)
		}
	}
	if w.key != nil && bytes.Equal(e.Hash, eventHash(nil, e, e.Seq, e.PrevHash)) {
		return bad(e.Seq, Rewritten, "its hash was recomputed without the key: the chain was rewritten from here")
	}
	return bad(e.Seq, Edited, "its contents do not match its hash")
}

// finish checks the recorded head (nil: no metadata) against the entries
// seen.
func (w *chainWalker) finish(head *Head) VerifyResult {
	res := w.res
	fail := func(seq int64, p Problem, format string, a ...any) VerifyResult {
		res.OK, res.Seq, res.Problem, res.Reason = false, seq, p, fmt.Sprintf(format, a...)
		return res
	}
	switch {
	case head == nil && res.HeadSeq == 0:
	case head == nil:
		return fail(res.HeadSeq, Edited, "the log's metadata (audit_meta) is missing")
	case w.key != nil && !hmac.Equal(head.MAC, headMAC(w.key, head.Seq, head.Hash)):
		return fail(res.HeadSeq, Edited, "the recorded head of the log does not match its MAC: the log's metadata was changed")
	case head.Seq > res.HeadSeq:
		return fail(res.HeadSeq+1, Deleted, "the log ends at entry %d but entry %d was written: the newest entries were removed", res.HeadSeq, head.Seq)
	case head.Seq < res.HeadSeq:
		return fail(head.Seq+1, Edited, "entries after %d are not recorded in the log's head: they were added outside conduit", head.Seq)
	case !bytes.Equal(head.Hash, res.HeadHash):
		return fail(res.HeadSeq, Edited, "the newest entry is not the one recorded in the log's head: it was replaced")
	}
	res.OK = true
	return res
}
