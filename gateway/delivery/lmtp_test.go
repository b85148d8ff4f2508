package delivery

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// mailStore is the agency's own mail store as Conduit's LMTP delivery
// sees it: a real LMTP server on a real socket (go-smtp in LMTP mode),
// recording what it accepted, refusing one mailbox with a 452.
type mailStore struct {
	mu       sync.Mutex
	got      map[string]string
	from     string // the last MAIL FROM
	refuse   string
	listener net.Listener
}

type storeSession struct {
	s     *mailStore
	rcpts []string
}

func (ss *storeSession) Reset()        {}
func (ss *storeSession) Logout() error { return nil }
func (ss *storeSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.s.mu.Lock()
	ss.s.from = from
	ss.s.mu.Unlock()
	return nil
}
func (ss *storeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "gone@") {
		// As Dovecot answers for a user it does not have.
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User doesn't exist: " + to}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}
func (ss *storeSession) Data(r io.Reader) error { return nil }
func (ss *storeSession) LMTPData(r io.Reader, st smtp.StatusCollector) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	for _, rc := range ss.rcpts {
		if rc == ss.s.refuse {
			st.SetStatus(rc, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"})
			continue
		}
		ss.s.mu.Lock()
		ss.s.got[rc] = string(b)
		ss.s.mu.Unlock()
		st.SetStatus(rc, nil)
	}
	return nil
}

func startMailStore(t *testing.T, network, addr string) *mailStore {
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ms := &mailStore{got: map[string]string{}, refuse: "full@ng.example", listener: l}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &storeSession{s: ms}, nil }))
	srv.LMTP = true
	srv.Domain = "store.localhost"
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return ms
}

func TestLMTPDeliveryToTheAgencysMailStore(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "lmtp.sock")
			}
			ms := startMailStore(t, network, addr)
			lmtp := ms.listener.Addr().String()
			if network == "unix" {
				lmtp = "unix:" + addr
			}
			d := New("", lmtp, "northshire-pio.example")
			d.SetReturnPath(func() string { return "conduit@northshire-pio.example" })
			ctx := context.Background()
			err := d.Deliver(ctx, "intel@ng.example", "met-pio", "cdt-1", []byte("Conduit-Delivered-To: intel@ng.example\r\n"),
				[]byte("Subject: [OFFICIAL] x\r\n\r\nbody\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got := ms.got["intel@ng.example"]; !strings.HasPrefix(got, "Conduit-Delivered-To: intel@ng.example\r\nSubject: [OFFICIAL] x") {
				t.Fatalf("store received %q", got)
			}
			// A temporary refusal by the store is an error, so the partner
			// gateway retries instead of the package being lost.
			err = d.Deliver(ctx, "full@ng.example", "met-pio", "cdt-2", nil, []byte("Subject: y\r\n\r\nbody\r\n"))
			var re *RefusedError
			if err == nil || !strings.Contains(err.Error(), "452") || errors.As(err, &re) {
				t.Fatalf("full mailbox: %v, want a temporary failure", err)
			}
			// A permanent refusal is a *RefusedError for that mailbox.
			err = d.Deliver(ctx, "gone@ng.example", "met-pio", "cdt-3", nil, []byte("Subject: z\r\n\r\nbody\r\n"))
			if !errors.As(err, &re) || re.Mailbox != "gone@ng.example" || re.Reply.Code != 550 || !strings.Contains(err.Error(), "permanently") {
				t.Fatalf("removed mailbox: %v, want a *RefusedError", err)
			}
			// The Return-Path is the gateway's address, never null.
			if ms.from != "conduit@northshire-pio.example" {
				t.Errorf("MAIL FROM %q, want the gateway's address", ms.from)
			}
		})
	}
}
