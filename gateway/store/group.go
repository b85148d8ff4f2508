package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/conduit-gateway/conduit/sqlschema"
)

// Group commit. Concurrent write transactions (several SMTP sessions'
// packages, the relay's bookkeeping) are run one after another in one
// SQLite transaction and committed together: one WAL append and one fsync
// make them all durable, where each used to wait for its own. Nothing a
// caller is told changes: Update still returns only once its writes are on
// disk, and a function that fails still leaves nothing behind (each runs
// under a savepoint of its own; a batch of one needs none).
//
// There is no committer goroutine: the first caller that finds no batch
// running leads one, taking every request queued so far; requests that
// arrive meanwhile wait, and the first of them leads the next batch once
// the running one has committed. Under no concurrency a batch is one
// request and costs what a transaction did before.

// txGroup queues write transactions for the next batch; its zero value is
// ready.
type txGroup struct {
	mu      sync.Mutex
	pending []*txReq
	leading bool // a batch is running, or its successor has been told to lead
}

// txReq is one caller's transaction in a batch.
type txReq struct {
	ctx   context.Context
	full  bool // needs synchronous=FULL (Update); else NORMAL (Bookkeep)
	f     func(Tx) error
	err   error
	after []func()
	lead  chan struct{} // closed: this request's caller leads the next batch
	done  chan struct{} // closed: err and after are set
}

// txSync runs f in a write transaction on the single writer connection,
// batched with the concurrent callers' (group commit), with the given
// synchronous level for its commit (sqlschema.SyncFull or SyncNormal); a batch that
// holds any FULL request commits FULL. Every batch sets its level first, so
// a level left behind by a failure never leaks into a durable commit.
func (s *SQLite) txSync(ctx context.Context, level string, f func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := &txReq{ctx: ctx, full: level != sqlschema.SyncNormal, f: f, lead: make(chan struct{}), done: make(chan struct{})}
	g := &s.group
	g.mu.Lock()
	g.pending = append(g.pending, req)
	if g.leading {
		g.mu.Unlock()
		// Wait for the outcome even when ctx ends: f may be running in
		// the batch, and the caller must know whether it was kept.
		select {
		case <-req.done:
			return req.finish()
		case <-req.lead:
		}
		g.mu.Lock()
	}
	g.leading = true
	batch := g.pending
	g.pending = nil
	g.mu.Unlock()

	defer func() {
		// Hand over: the first request queued meanwhile leads the next
		// batch. Deferred, so that a panic in a caller's function does
		// not leave the others waiting for ever.
		g.mu.Lock()
		if len(g.pending) > 0 {
			close(g.pending[0].lead)
		} else {
			g.leading = false
		}
		g.mu.Unlock()
	}()
	s.runBatch(batch)
	return req.finish()
}

// finish runs the request's after-commit actions once the writer
// connection is back in its pool (a checkpoint needs it) and returns its
// outcome.
func (r *txReq) finish() error {
	if r.err != nil {
		return r.err
	}
	for _, a := range r.after {
		a()
	}
	return nil
}

// runBatch runs the requests in one transaction and commits it; every
// request is done (its err set, its done closed) when it returns, even
// when a request's function panics.
func (s *SQLite) runBatch(batch []*txReq) {
	var live []*txReq // requests whose writes are in the transaction
	fail := func(reqs []*txReq, err error) {
		for _, r := range reqs {
			if r.err == nil {
				r.err = err
			}
		}
	}
	defer func() {
		if p := recover(); p != nil {
			fail(batch, fmt.Errorf("store transaction: panic: %v", p))
			for _, r := range batch {
				r.after = nil
				close(r.done)
			}
			panic(p)
		}
		for _, r := range batch {
			close(r.done)
		}
	}()
	ctx := context.Background()
	level := sqlschema.SyncNormal
	for _, r := range batch {
		if r.full {
			level = sqlschema.SyncFull
		}
	}
	tx, release, err := sqlschema.BeginSync(ctx, s.w, level)
	if err != nil {
		fail(batch, err)
		return
	}
	defer release()
	single := len(batch) == 1
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		if !single {
			if _, err := tx.ExecContext(ctx, "SAVEPOINT grp"); err != nil {
				tx.Rollback()
				fail(batch, err)
				return
			}
		}
		// The caller's values, not its cancellation: an interrupted
		// statement may roll back the whole transaction, the other
		// requests' writes with it.
		t := &sqliteTx{ctx: context.WithoutCancel(r.ctx), s: s, tx: tx}
		ferr := r.f(t)
		switch {
		case ferr != nil && single:
			tx.Rollback()
			r.err = ferr
			return
		case ferr != nil:
			r.err = ferr
			if _, err := tx.ExecContext(ctx, "ROLLBACK TO grp"); err != nil {
				// The transaction itself is gone (SQLite rolled it back):
				// the writes of the requests before are lost with it.
				tx.Rollback()
				fail(batch, fmt.Errorf("store transaction rolled back: %w", errors.Join(ferr, err)))
				return
			}
			if _, err := tx.ExecContext(ctx, "RELEASE grp"); err != nil {
				tx.Rollback()
				fail(batch, err)
				return
			}
		default:
			if !single {
				if _, err := tx.ExecContext(ctx, "RELEASE grp"); err != nil {
					tx.Rollback()
					fail(batch, err)
					return
				}
			}
			r.after = t.after
			live = append(live, r)
		}
	}
	if err := tx.Commit(); err != nil {
		fail(live, err)
	}
}
