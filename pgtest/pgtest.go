// Package pgtest is in charge of throwaway PostgreSQL servers for tests and
// benchmarks: a cluster made by initdb in a temporary folder, a postgres
// process on a free loopback port, stopped and removed at the end. It
// runs the real server (Debian's postgresql-15, found through PATH or
// pg_config), never a stand-in.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one throwaway PostgreSQL cluster.
type Server struct {
	Dir  string // the cluster's folder (data and socket)
	Port int
	User string // the superuser, trusted on loopback

	bin  string
	cred *syscall.Credential // run as this user when we are root (initdb refuses root)
	log  *os.File

	mu  sync.Mutex
	cmd *exec.Cmd
	// exited is closed when the running server's process has been waited for.
	exited chan struct{}
}

// ErrNoPostgres: no PostgreSQL server binaries were found.
var ErrNoPostgres = errors.New("pgtest: PostgreSQL is not installed (initdb not found): apt-get install postgresql")

// binDir finds the folder of initdb and postgres.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "postgres")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := string(out[:len(out)-1])
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	for _, d := range []string{"/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"} {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

// Options tune a cluster.
type Options struct {
	// Fsync keeps PostgreSQL's fsync on (benchmarks); tests turn it off,
	// which only matters for a power cut, never for a killed process.
	Fsync bool
	// MaxConnections (default 200).
	MaxConnections int
}

// New makes a cluster in a fresh temporary folder and starts it.
func New(ctx context.Context, opt Options) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, User: "conduit"}
	dir, err := os.MkdirTemp("", "conduit-pg-")
	if err != nil {
		return nil, err
	}
	s.Dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if s.log, err = os.Create(filepath.Join(dir, "server.log")); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if s.cred != nil {
		os.Chown(s.log.Name(), int(s.cred.Uid), int(s.cred.Gid))
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", s.User,
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		s.cleanup()
		return nil, fmt.Errorf("pgtest: initdb: %w: %s", err, out)
	}
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nmax_connections = %d\nshared_buffers = 64MB\nfsync = %v\nsynchronous_commit = %v\nfull_page_writes = %v\nlog_min_messages = warning\n",
		dir, or(opt.MaxConnections, 200), onOff(opt.Fsync), onOff(opt.Fsync), onOff(opt.Fsync))
	f, err := os.OpenFile(filepath.Join(dir, "data", "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(conf)
		f.Close()
	}
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("pgtest: configure: %w", err)
	}
	if s.Port, err = freePort(); err != nil {
		s.cleanup()
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		s.cleanup()
		return nil, err
	}
	return s, nil
}

func or(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts the server (again, after Stop) on its port and waits until
// it accepts connections.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("pgtest: already running")
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.Dir, "data"), "-p", strconv.Itoa(s.Port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			c.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			s.cmd = nil
			log, _ := os.ReadFile(s.log.Name())
			return fmt.Errorf("pgtest: postgres exited at start: %s", tail(log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres did not accept connections: %w", err)
		}
	}
}

func tail(b []byte) []byte {
	if len(b) > 2000 {
		return b[len(b)-2000:]
	}
	return b
}

// Stop stops the server with a fast shutdown (clients are cut, what was
// committed stays) and waits for it to exit.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	return nil
}

// DSN is the connection string of a database on the server.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", s.User, s.Port, db)
}

// CreateDB creates a database and returns its DSN.
func (s *Server) CreateDB(ctx context.Context, name string) (string, error) {
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return s.DSN(name), nil
}

// Close stops the server and removes its folder.
func (s *Server) Close() error {
	err := s.Stop()
	s.cleanup()
	return err
}

func (s *Server) cleanup() {
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.Dir)
}

// Start is New for a test: the server is closed when the test ends. Where
// PostgreSQL is missing the test is skipped, except under CI=true, where
// it fails: a suite that silently skips the database proves nothing.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := New(context.Background(), Options{})
	if errors.Is(err, ErrNoPostgres) && os.Getenv("CI") != "true" {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

var dbSeq struct {
	sync.Mutex
	n int
}

// NewDB creates a fresh database on s for a test and returns its DSN.
func NewDB(tb testing.TB, s *Server) string {
	tb.Helper()
	dbSeq.Lock()
	dbSeq.n++
	name := fmt.Sprintf("t%d", dbSeq.n)
	dbSeq.Unlock()
	dsn, err := s.CreateDB(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return dsn
}
