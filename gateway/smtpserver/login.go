package smtpserver

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// Login is the SASL mechanism name of AUTH LOGIN.
const Login = "LOGIN"

// LoginServer is the server side of AUTH LOGIN (draft-murchison-sasl-login,
// the mechanism Outlook, older clients and Postfix's Cyrus SASL client use
// when PLAIN is not chosen): the server asks for the user name, then the
// password, each base64-encoded by go-smtp; a client may give the user name
// as its initial response. go-sasl has only the client side.
func LoginServer(authenticate func(username, password string) error) sasl.Server {
	return &loginServer{authenticate: authenticate}
}

type loginServer struct {
	authenticate func(username, password string) error
	username     string
	step         int
}

var errLoginDone = errors.New("AUTH LOGIN: unexpected response after the password")

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		// The user name as the initial response.
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 1:
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		return nil, true, s.authenticate(s.username, string(response))
	}
	return nil, true, errLoginDone
}
