package inbound

import (
	"context"
	"fmt"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
)

// releaseBackstop is how long the release loop sleeps when nobody tells
// it of a release: a backstop for a release made where no wake-up reaches.
const releaseBackstop = time.Minute

// runReleases re-processes quarantined messages an administrator released
// (`conduit quarantine release`), with every check, as if just received.
// Delivered: the record is purged with the note "re-processed". Failed
// again: the message is quarantined anew under a new id, and this record
// is purged with a note naming it, so that it is not re-processed forever.
// A temporary failure leaves it released for the next round. It looks
// when told of a change in the store (KickReleases; the command line
// writes the release), and at least every minute.
func (srv *Server) RunReleases(ctx context.Context) {
	t := time.NewTicker(releaseBackstop)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-srv.releases:
		}
		items, err := srv.store.ListQuarantine(ctx, store.Released)
		if err != nil {
			if ctx.Err() == nil {
				srv.log.Error("quarantine list failed", "err", err)
			}
			continue
		}
		for _, it := range items {
			srv.reprocess(ctx, it.ID)
		}
	}
}

func (srv *Server) reprocess(ctx context.Context, id int64) {
	q, err := srv.store.GetQuarantine(ctx, id)
	if err != nil || q.State != store.Released || q.Raw == nil {
		return
	}
	out := srv.process(ctx, received{remote: q.RemoteAddr, helo: q.Helo, from: q.MailFrom, rcpts: q.Recipients, msg: rawMessage(q.Raw),
		released: fmt.Sprintf("Q%d (%s), released: %s", id, q.Check, q.Note)})
	var note string
	switch {
	case out.delivered:
		note = "re-processed"
	case out.qid != 0:
		note = fmt.Sprintf("re-processed; failed again, quarantined as Q%d", out.qid)
	default:
		srv.log.Warn("released message not re-processed yet", "quarantine", id, "err", out.reply)
		return
	}
	if err := srv.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.SetQuarantineState(id, store.Purged, note); err != nil {
			return err
		}
		return srv.audit.Stage(tx, audit.Event{Kind: audit.Released, Package: q.PackageID, Rule: q.Check, Detail: fmt.Sprintf("Q%d %s", id, note)})
	}); err != nil {
		srv.log.Error("released message re-processed but its record not updated", "quarantine", id, "err", err)
		return
	}
	srv.audit.Kick()
	srv.log.Info("released message re-processed", "quarantine", id, "note", note)
}

// KickReleases tells the release loop that the store changed: a message
// may have been released.
func (srv *Server) KickReleases() {
	select {
	case srv.releases <- struct{}{}:
	default:
	}
}
