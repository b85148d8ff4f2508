package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AddPendingReceipt implements Tx.
func (t *sqliteTx) AddPendingReceipt(p PendingReceipt) error {
	if err := checkPending(&p); err != nil {
		return err
	}
	boxes, err := encodeList(p.Mailboxes)
	if err != nil {
		return fmt.Errorf("pending receipt: %w", err)
	}
	err = t.atomic(func(tx *sql.Tx) error {
		_, err := tx.ExecContext(t.ctx, `INSERT INTO pending_receipts
			(originator, package_id, label, grp, mailboxes, delivered, released, recorded)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (originator, package_id) DO NOTHING`,
			p.Originator, p.PackageID, p.Label, p.Group, boxes, p.Delivered.UTC().UnixNano(), p.Released, t.s.now().UTC().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("pending receipt: %w", err)
	}
	return nil
}

// checkPending refuses a pending receipt that could not be sealed.
func checkPending(p *PendingReceipt) error {
	if p.Originator == "" || p.PackageID == "" || p.Label == "" || len(p.Mailboxes) == 0 {
		return errors.New("pending receipt: the originator, package id, label and mailboxes are required")
	}
	return nil
}

// BatchReceipts implements Tx.
func (t *sqliteTx) BatchReceipts(batch string, ids []int64) error {
	err := t.atomic(func(tx *sql.Tx) error {
		for _, id := range ids {
			var originator, pkg string
			err := tx.QueryRowContext(t.ctx, `DELETE FROM pending_receipts WHERE id = ? RETURNING originator, package_id`, id).Scan(&originator, &pkg)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w (%d)", ErrReceiptsTaken, id)
			}
			if err != nil {
				return err
			}
			if len(ids) == 1 {
				continue // alone in its envelope: found by ReceiptID
			}
			if _, err := tx.ExecContext(t.ctx, `INSERT INTO receipt_batches (originator, package_id, batch) VALUES (?, ?, ?)
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

// ClaimReceipts implements Store.
func (s *SQLite) ClaimReceipts(ctx context.Context, gather time.Duration, most int, lease time.Duration) ([]PendingReceipt, time.Duration, error) {
	if most <= 0 || lease <= 0 {
		return nil, 0, errors.New("claim receipts: the batch size and the lease must be positive")
	}
	var out []PendingReceipt
	var wait time.Duration
	err := s.withLightTx(ctx, func(tx *sql.Tx) error {
		now := s.now().UTC()
		// The table holds only receipts not sealed yet (a fraction of a
		// second's deliveries): grouping it whole costs little.
		rows, err := tx.QueryContext(ctx, `SELECT originator, grp, count(*), min(recorded) FROM pending_receipts
			WHERE lease <= ? GROUP BY originator, grp ORDER BY min(recorded)`, now.UnixNano())
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
		if err := rows.Close(); err != nil {
			return err
		}
		var leased sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT min(lease) FROM pending_receipts WHERE lease > ?`, now.UnixNano()).Scan(&leased); err != nil {
			return err
		}
		g, w := dueGroup(groups, leased.Int64, now, gather, most)
		if g == nil {
			wait = w
			return nil
		}
		rows, err = tx.QueryContext(ctx, `SELECT `+pendingCols+` FROM pending_receipts
			WHERE originator = ? AND grp = ? AND lease <= ? ORDER BY id LIMIT ?`, g.originator, g.group, now.UnixNano(), most)
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
		if err := rows.Close(); err != nil {
			return err
		}
		up, err := tx.PrepareContext(ctx, `UPDATE pending_receipts SET lease = ? WHERE id = ?`)
		if err != nil {
			return err
		}
		defer up.Close()
		for _, p := range out {
			if _, err := up.ExecContext(ctx, now.Add(lease).UnixNano(), p.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("claim receipts: %w", err)
	}
	return out, wait, nil
}

const pendingCols = `id, originator, package_id, label, grp, mailboxes, delivered, released`

func scanPending(row scanner) (PendingReceipt, error) {
	var p PendingReceipt
	var boxes string
	var delivered int64
	if err := row.Scan(&p.ID, &p.Originator, &p.PackageID, &p.Label, &p.Group, &boxes, &delivered, &p.Released); err != nil {
		return p, err
	}
	p.Delivered = fromNanos(delivered)
	var err error
	p.Mailboxes, err = decodeList(boxes)
	return p, err
}

// ReceiptBatch implements Store.
func (s *SQLite) ReceiptBatch(ctx context.Context, packageID string) (string, error) {
	var b string
	err := s.r.QueryRowContext(ctx, `SELECT batch FROM receipt_batches WHERE package_id = ?`, packageID).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("receipt batch: %w", err)
	}
	return b, nil
}
