package sqlschema

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"

	"modernc.org/sqlite"
)

// The statement cache. SQLite compiles every statement text before it
// runs it, and the driver compiles again on every call made with a query
// string; under load that parsing was the largest single item of the
// gateways' SQLite time. The connections Open returns keep each
// connection's compiled statements, by text, for the connection's life:
// the same text runs again without being parsed (SQLite recompiles a kept
// statement by itself when the schema changes).

// cachedDriver is the name the caching driver is registered under.
const cachedDriver = "sqlite-stmtcache"

// maxCached bounds one connection's kept statements; a text beyond it runs
// uncached. The code's statements are a few dozen fixed texts.
const maxCached = 256

func init() {
	sql.Register(cachedDriver, cacheDriver{&sqlite.Driver{}})
}

type cacheDriver struct{ d driver.Driver }

func (d cacheDriver) Open(name string) (driver.Conn, error) {
	c, err := d.d.Open(name)
	if err != nil {
		return nil, err
	}
	return &cacheConn{Conn: c, stmts: map[string]*cachedStmt{}}, nil
}

// innerConn is what the SQLite driver's connection implements.
type innerConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
}

// cacheConn is one connection with its kept statements. database/sql uses
// a connection from one goroutine at a time, so it needs no lock.
type cacheConn struct {
	driver.Conn
	stmts map[string]*cachedStmt
}

type cachedStmt struct {
	s    driver.Stmt
	busy bool // its rows are open: the same text meanwhile runs uncached
}

var (
	_ driver.ExecerContext      = (*cacheConn)(nil)
	_ driver.QueryerContext     = (*cacheConn)(nil)
	_ driver.ConnBeginTx        = (*cacheConn)(nil)
	_ driver.ConnPrepareContext = (*cacheConn)(nil)
	_ driver.SessionResetter    = (*cacheConn)(nil)
	_ driver.Validator          = (*cacheConn)(nil)
	_ driver.Pinger             = (*cacheConn)(nil)
)

func (c *cacheConn) inner() innerConn { return c.Conn.(innerConn) }

// stmt returns the kept statement for query, compiling and keeping it
// the first time; nil when it cannot be used now (busy, or the cache is
// full).
func (c *cacheConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if cs, ok := c.stmts[query]; ok {
		if cs.busy {
			return nil, nil
		}
		return cs, nil
	}
	if len(c.stmts) >= maxCached {
		return nil, nil
	}
	s, err := c.inner().PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	cs := &cachedStmt{s: s}
	c.stmts[query] = cs
	return cs, nil
}

func (c *cacheConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.inner().ExecContext(ctx, query, args)
	}
	return cs.s.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (c *cacheConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.inner().QueryContext(ctx, query, args)
	}
	r, err := cs.s.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	cs.busy = true
	return &cachedRows{Rows: r, cs: cs}, nil
}

func (c *cacheConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.inner().BeginTx(ctx, opts)
}

// PrepareContext hands out the kept statement for query (a loop of
// inserts prepares once per transaction: compiled once per connection
// instead), lent until the caller closes it.
func (c *cacheConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.inner().PrepareContext(ctx, query)
	}
	cs.busy = true
	return &lentStmt{cs: cs}, nil
}

// lentStmt is a kept statement lent to a caller: closing it gives it
// back instead of finalizing it.
type lentStmt struct{ cs *cachedStmt }

var (
	_ driver.StmtExecContext  = (*lentStmt)(nil)
	_ driver.StmtQueryContext = (*lentStmt)(nil)
)

func (s *lentStmt) Close() error  { s.cs.busy = false; return nil }
func (s *lentStmt) NumInput() int { return s.cs.s.NumInput() }

func (s *lentStmt) Exec(args []driver.Value) (driver.Result, error) {
	return nil, errors.New("sqlschema: Exec without a context")
}

func (s *lentStmt) Query(args []driver.Value) (driver.Rows, error) {
	return nil, errors.New("sqlschema: Query without a context")
}

func (s *lentStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.cs.s.(driver.StmtExecContext).ExecContext(ctx, args)
}

// QueryContext's rows stay open on the statement while the caller holds
// it; database/sql closes them before the statement.
func (s *lentStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.cs.s.(driver.StmtQueryContext).QueryContext(ctx, args)
}

func (c *cacheConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *cacheConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *cacheConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

// Close finalizes the kept statements, then closes the connection.
func (c *cacheConn) Close() error {
	var errs []error
	for q, cs := range c.stmts {
		errs = append(errs, cs.s.Close())
		delete(c.stmts, q)
	}
	return errors.Join(append(errs, c.Conn.Close())...)
}

// cachedRows gives its statement back when closed.
type cachedRows struct {
	driver.Rows
	cs *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.cs.busy = false
	return err
}
