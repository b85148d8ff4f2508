package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AddPendingReceipt implements Tx.
func (t *pgTx) AddPendingReceipt(p PendingReceipt) error {
	if err := checkPending(&p); err != nil {
		return err
	}
	boxes, err := encodeList(p.Mailboxes)
	if err != nil {
		return fmt.Errorf("pending receipt: %w", err)
	}
	err = t.atomic(func(tx pgx.Tx) error {
		_, err := tx.Exec(t.ctx, `INSERT INTO pending_receipts
			(originator, package_id, label, grp, mailboxes, delivered, released, recorded)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (originator, package_id) DO NOTHING`,
			p.Originator, p.PackageID, p.Label, p.Group, boxes, p.Delivered.UTC().UnixNano(), p.Released, t.s.now().UTC().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("pending receipt: %w", err)
	}
	// Another gateway of the agency may be the one whose batcher is idle.
	t.notify = true
	return nil
}

// BatchReceipts implements Tx. A row another gateway's batch deleted
// first is not found here (the delete waits for that transaction, then
// sees the row gone): the batch fails whole and is not queued twice.
func (t *pgTx) BatchReceipts(batch string, ids []int64) error {
	err := t.atomic(func(tx pgx.Tx) error {
		for _, id := range ids {
			var originator, pkg string
			err := tx.QueryRow(t.ctx, `DELETE FROM pending_receipts WHERE id = $1 RETURNING originator, package_id`, id).Scan(&originator, &pkg)
			if noRows(err) {
				return fmt.Errorf("%w (%d)", ErrReceiptsTaken, id)
			}
			if err != nil {
				return err
			}
			if len(ids) == 1 {
				continue
			}
			if _, err := tx.Exec(t.ctx, `INSERT INTO receipt_batches (originator, package_id, batch) VALUES ($1, $2, $3)
				ON CONFLICT (originator, package_id) DO UPDATE SET batch = excluded.batch`, originator, pkg, batch); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("batch receipts: %w", err)
	}
	return nil
}

// ClaimReceipts implements Store: the group's rows are locked with FOR
// UPDATE SKIP LOCKED and leased in the same transaction, so that the
// batchers of two gateways take different receipts.
func (s *Postgres) ClaimReceipts(ctx context.Context, gather time.Duration, most int, lease time.Duration) ([]PendingReceipt, time.Duration, error) {
	if most <= 0 || lease <= 0 {
		return nil, 0, errors.New("claim receipts: the batch size and the lease must be positive")
	}
	var out []PendingReceipt
	var wait time.Duration
	err := s.Bookkeep(ctx, func(t Tx) error {
		tx := t.(*pgTx).tx
		now := s.now().UTC()
		rows, err := tx.Query(ctx, `SELECT originator, grp, count(*), min(recorded) FROM pending_receipts
			WHERE lease <= $1 GROUP BY originator, grp ORDER BY min(recorded)`, now.UnixNano())
		if err != nil {
			return err
		}
		var groups []pendingGroup
		for rows.Next() {
			var g pendingGroup
			if err := rows.Scan(&g.originator, &g.group, &g.count, &g.oldest); err != nil {
				rows.Close()
				return err
			}
			groups = append(groups, g)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var leased *int64
		if err := tx.QueryRow(ctx, `SELECT min(lease) FROM pending_receipts WHERE lease > $1`, now.UnixNano()).Scan(&leased); err != nil {
			return err
		}
		var until int64
		if leased != nil {
			until = *leased
		}
		g, w := dueGroup(groups, until, now, gather, most)
		if g == nil {
			wait = w
			return nil
		}
		rows, err = tx.Query(ctx, `SELECT `+pendingCols+` FROM pending_receipts
			WHERE originator = $1 AND grp = $2 AND lease <= $3 ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED`,
			g.originator, g.group, now.UnixNano(), most)
		if err != nil {
			return err
		}
		for rows.Next() {
			p, err := scanPending(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		ids := make([]int64, len(out))
		for i, p := range out {
			ids[i] = p.ID
		}
		_, err = tx.Exec(ctx, `UPDATE pending_receipts SET lease = $1 WHERE id = ANY($2)`, now.Add(lease).UnixNano(), ids)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("claim receipts: %w", err)
	}
	return out, wait, nil
}

// ReceiptBatch implements Store.
func (s *Postgres) ReceiptBatch(ctx context.Context, packageID string) (string, error) {
	var b string
	err := s.pool.QueryRow(ctx, `SELECT batch FROM receipt_batches WHERE package_id = $1`, packageID).Scan(&b)
	if noRows(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("receipt batch: %w", err)
	}
	return b, nil
}
