package authlimit

import (
	"crypto/subtle"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Account is a submission account's name and bcrypt hash.
type Account struct {
	Name, Hash string
}

// Accounts checks passwords so that an unknown name costs what a known
// one costs: without this, bcrypt ran only for names that exist and the
// reply time told a guesser which names do (66 ms against 0.1 ms).
type Accounts struct {
	byName map[string]int
	list   []Account
	// dummy is a hash of the dearest cost among the accounts, checked
	// against for an unknown name.
	dummy []byte
}

// NewAccounts indexes the accounts (names are compared case-sensitively,
// as the config lists them).
func NewAccounts(list []Account) *Accounts {
	a := &Accounts{byName: map[string]int{}, list: list}
	// The dearest account's cost: an unknown name must cost what a known
	// one costs, neither less nor more (accounts hashed by `conduit user
	// hash` all have bcrypt's default cost).
	cost := 0
	for i, ac := range list {
		a.byName[ac.Name] = i
		if c, err := bcrypt.Cost([]byte(ac.Hash)); err == nil && c > cost {
			cost = c
		}
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	h, err := bcrypt.GenerateFromPassword([]byte("conduit-unknown-account"), cost)
	if err != nil {
		panic("bcrypt: " + err.Error())
	}
	a.dummy = h
	return a
}

// Verify returns the index of the account whose name and password match,
// or -1; it runs one bcrypt comparison whatever the name.
func (a *Accounts) Verify(name, password string) int {
	i, ok := a.byName[name]
	hash := a.dummy
	if ok {
		hash = []byte(a.list[i].Hash)
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	// Keep the comparison of the outcome free of an early exit as well.
	if subtle.ConstantTimeByteEq(boolByte(ok), 1)&subtle.ConstantTimeByteEq(boolByte(err == nil), 1) == 1 {
		return i
	}
	return -1
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// Known reports whether a name is an account (for `conduit user unlock`).
func (a *Accounts) Known(name string) bool {
	_, ok := a.byName[strings.TrimSpace(name)]
	return ok
}
