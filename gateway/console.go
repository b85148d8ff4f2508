package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/gateway/submission"
	"github.com/conduit-gateway/conduit/policy"
)

// What the web console (package console) and `conduit send` use of a
// running gateway: submission through the same intake as SMTP, and the
// sharing policy's decision for a draft.

// Submit takes a message through the same intake as SMTP submission
// (submission.Server.Submit).
func (g *Gateway) Submit(ctx context.Context, user *config.User, rcpts []string, msg io.Reader) (pkgID, accepted string, err error) {
	return g.submission.Submit(ctx, user, rcpts, msg)
}

// Explain decides a draft without sending, storing or logging anything.
func (g *Gateway) Explain(ctx context.Context, m *envelope.Manifest) policy.Decision {
	return g.submission.Explain(ctx, m)
}

// Rectify sends a rectification notice about a package this gateway
// sent, to every agency it went to (MoU Annex A, Accuracy), marked like
// the package it corrects (its label, from the decision log, with a
// reference of its own). It returns the notice's id and destinations.
func (g *Gateway) Rectify(ctx context.Context, user *config.User, pkgID string, text io.Reader) (string, []string, error) {
	dl, ok := g.store.(store.DecisionLog)
	if !ok {
		return "", nil, errors.New("this gateway's store keeps no decisions: use conduit notice send")
	}
	recent, err := dl.RecentDecided(ctx, submission.DecisionsKept)
	if err != nil {
		return "", nil, err
	}
	for _, d := range recent {
		if d.PackageID != pkgID {
			continue
		}
		var m envelope.Manifest
		if err := json.Unmarshal(d.Manifest, &m); err != nil {
			return "", nil, fmt.Errorf("the package's label cannot be read: %w", err)
		}
		l := m.Label
		l.Reference = strings.TrimSuffix(l.Reference, "-RECT") + "-RECT"
		l.Created = time.Time{}
		return g.SendNotice(ctx, Notice{Kind: policy.NoticeRectification, PackageID: pkgID, Originator: g.cfg.Agency,
			Label: l, Text: text, Sender: user.Address})
	}
	return "", nil, fmt.Errorf("package %s is not among the last %d this gateway decided: use conduit notice send with its label", pkgID, submission.DecisionsKept)
}

// ReloadPolicy reads the config's directory and policy file again and
// puts the policy in force; an invalid one is refused and the policy in
// force stays.
func (g *Gateway) ReloadPolicy() error { return g.engine.ReloadConfig(g.cfg.File) }
