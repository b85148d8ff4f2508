package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
)

const releasePoll = 2 * time.Second

// runReleases re-processes quarantined messages an administrator released
// (`conduit quarantine release`), with every check, as if just received.
// Delivered: the record is purged with the note "re-processed". Failed
// again: the message is quarantined anew under a new id, and this record
// is purged with a note naming it, so that it is not re-processed forever.
// A temporary failure leaves it released for the next round.
func (g *Gateway) runReleases(ctx context.Context) {
	t := time.NewTicker(releasePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		items, err := g.store.ListQuarantine(ctx, store.Released)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Error("quarantine list failed", "err", err)
			}
			continue
		}
		for _, it := range items {
			g.reprocess(ctx, it.ID)
		}
	}
}

func (g *Gateway) reprocess(ctx context.Context, id int64) {
	q, err := g.store.GetQuarantine(ctx, id)
	if err != nil || q.State != store.Released || q.Raw == nil {
		return
	}
	out := g.process(ctx, received{remote: q.RemoteAddr, helo: q.Helo, from: q.MailFrom, rcpts: q.Recipients, raw: q.Raw})
	var note string
	switch {
	case out.delivered:
		note = "re-processed"
	case out.qid != 0:
		note = fmt.Sprintf("re-processed; failed again, quarantined as Q%d", out.qid)
	default:
		g.log.Warn("released message not re-processed yet", "quarantine", id, "err", out.reply)
		return
	}
	if err := g.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.SetQuarantineState(id, store.Purged, note); err != nil {
			return err
		}
		return g.stage(tx, audit.Event{Kind: audit.Released, Package: q.PackageID, Rule: q.Check, Detail: fmt.Sprintf("Q%d %s", id, note)})
	}); err != nil {
		g.log.Error("released message re-processed but its record not updated", "quarantine", id, "err", err)
		return
	}
	g.kickAudit()
	g.log.Info("released message re-processed", "quarantine", id, "note", note)
}
