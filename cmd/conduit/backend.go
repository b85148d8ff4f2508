package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/authlimit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/sqlschema"
)

// cliStore is the store as the command line uses it: the gateway's Store
// plus single writes, each in a transaction of its own. Both backends
// (store.SQLite, store.Postgres) are one.
type cliStore interface {
	store.Store
	Enqueue(ctx context.Context, items []store.Item) ([]int64, error)
	RetryNow(ctx context.Context, id int64) error
	Release(ctx context.Context, id int64, reason string) error
	Drop(ctx context.Context, id int64, reason string) error
	ShredEnvelopes(ctx context.Context, packageID string) (int, error)
	Quarantine(ctx context.Context, q store.QItem) (int64, error)
	SetQuarantineState(ctx context.Context, id int64, state store.QState, note string) error
	CompleteDeadlines(ctx context.Context, packageID, kind, agency string, at time.Time, note string) (int, error)
	DecidePartnerKey(ctx context.Context, agency, fingerprint string, state store.KeyState, by, reason string) (store.PartnerKey, error)
	OfferPartnerKey(ctx context.Context, k store.PartnerKey) (store.PartnerKey, bool, error)
	DataKeyCount(ctx context.Context) (int, error)
}

var (
	_ cliStore = (*store.SQLite)(nil)
	_ cliStore = (*store.Postgres)(nil)
)

// openStoreCfg opens the store a loaded config names: PostgreSQL when it
// gives a connection string, the SQLite file otherwise.
func openStoreCfg(ctx context.Context, cfg *config.Config) (cliStore, error) {
	dsn, err := cfg.Store.PostgresDSN()
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	if dsn != "" {
		return store.OpenPostgres(ctx, dsn)
	}
	return store.OpenSQLite(ctx, cfg.Store.Path)
}

// openTrailCfg opens the audit trail a loaded config names, on a
// connection of its own (the command line's).
func openTrailCfg(ctx context.Context, cfg *config.Config, key []byte) (audit.Trail, error) {
	dsn, err := cfg.Store.PostgresDSN()
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	if dsn == "" {
		return audit.OpenSQLite(ctx, cfg.Store.Path, key)
	}
	pool, err := store.NewPool(ctx, dsn)
	if err != nil {
		return nil, err
	}
	tr, err := audit.NewPostgres(ctx, pool, key)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &pooledTrail{Trail: tr, close: pool.Close}, nil
}

// pooledTrail closes the pool it was opened on.
type pooledTrail struct {
	audit.Trail
	close func()
}

func (p *pooledTrail) Close() error {
	err := p.Trail.Close()
	p.close()
	return err
}

// servedBackend is what serve opens: the store and the audit trail on one
// database (one SQLite file, or one PostgreSQL pool), closed together.
type servedBackend struct {
	store store.Store
	trail audit.Trail
	pg    *store.Postgres // nil on SQLite
	// locks keeps login lockouts in the SQLite file (shared connections);
	// nil on PostgreSQL, where they are kept in memory per process.
	locks authlimit.LockStore
	close func() error
}

func openServeBackend(ctx context.Context, cfg *config.Config, key []byte) (*servedBackend, error) {
	dsn, err := cfg.Store.PostgresDSN()
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	if dsn != "" {
		st, err := openPostgresPatiently(ctx, dsn)
		if err != nil {
			return nil, err
		}
		trail, err := audit.NewPostgres(ctx, st.Pool(), key)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("open audit trail: %w", err)
		}
		return &servedBackend{store: st, trail: trail, pg: st, close: st.Close}, nil
	}
	// One database file, one writer: the store and the audit trail share
	// its connections, closed last.
	db, err := sqlschema.OpenDB(cfg.Store.Path, store.StorePragmas...)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.Store.Path, err)
	}
	st, err := store.NewSQLite(ctx, db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", cfg.Store.Path, err)
	}
	trail, err := audit.NewSQLite(ctx, db, key)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open audit log %s: %w", cfg.Store.Path, err)
	}
	locks, err := authlimit.NewSQLLocks(ctx, db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open login lockouts %s: %w", cfg.Store.Path, err)
	}
	return &servedBackend{store: st, trail: trail, locks: locks, close: db.Close}, nil
}

// openPostgresPatiently opens the PostgreSQL store, waiting for the
// database while it is unreachable (a gateway started with the database,
// or during its failover), until ctx ends.
func openPostgresPatiently(ctx context.Context, dsn string) (*store.Postgres, error) {
	wait := time.Second
	for {
		st, err := store.OpenPostgres(ctx, dsn)
		if err == nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, errors.Join(err, ctx.Err())
		}
		slog.Warn("database not reachable; retrying", "err", err, "in", wait.String())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 15*time.Second)
	}
}

// poolStats reads the PostgreSQL store's pool for the metrics.
func poolStats(st *store.Postgres) func() metrics.PoolStats {
	return func() metrics.PoolStats {
		s := st.Pool().Stat()
		return metrics.PoolStats{Total: int(s.TotalConns()), Idle: int(s.IdleConns()), InUse: int(s.AcquiredConns()),
			Max: int(s.MaxConns()), Acquires: s.AcquireCount(), Waited: s.EmptyAcquireCount(), WaitTime: s.AcquireDuration()}
	}
}
