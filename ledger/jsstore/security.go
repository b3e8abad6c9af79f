package jsstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
)

// What the security-event worker asks of the ledger (docs/contract.md §5): whether an
// event was handled, the selection of a family by id, the cut of a
// family's access tokens once per handling, and the record of the
// handling. Revoking a family is Revoke.

// MaxRecordFamilies bounds the families a handled record lists, which
// keeps the record well under a message's size; the rest are counted in
// MoreFamilies.
const MaxRecordFamilies = 20000

// SecurityKey is the ledger subject token of a security event id: the id
// itself when it is a plain token, else "sha256-" and its hash. The
// handling of the event is recorded on ledger.security.<key>.
func SecurityKey(id string) string {
	if len(id) <= 128 && plainKey.MatchString(id) && !strings.HasPrefix(id, "sha256-") {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256-" + hex.EncodeToString(sum[:])
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// SecurityHandled reports whether the ledger holds the handling of the
// security event eventID: one direct get of its subject, however old the
// event is.
func (l *Ledger) SecurityHandled(ctx context.Context, eventID string) (bool, error) {
	_, err := l.store.LastMsg(ctx, l.store.SecuritySubject(SecurityKey(eventID)))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("security event handled: %w", unavailable(err))
	}
	return true, nil
}

// SecuritySelects loads the family once and reports whether a security
// event naming it selects it: the family is active at the ledger's clock
// and, when subject or clientID is set, has that subject or client. An id
// that names no family selects nothing.
func (l *Ledger) SecuritySelects(ctx context.Context, familyID, subject, clientID string) (bool, error) {
	st, err := l.store.Load(ctx, familyID)
	if errors.Is(err, ledger.ErrUnknownFamily) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return st.Exists() && st.StatusAt(l.now()) == ledger.StatusActive &&
		(subject == "" || st.Subject == subject) && (clientID == "" || st.ClientID == clientID), nil
}

// CutAccessSince denies every access token of the family issued so far,
// unless the family is revoked or its access tokens were already cut at or
// after since (the instant the handling of a security event began, which
// survives a takeover by another worker): so a repeated handling cuts
// nothing twice. It loads the family once per attempt.
func (l *Ledger) CutAccessSince(ctx context.Context, familyID string, since time.Time, cause ledger.Cause) (ledger.State, error) {
	return l.run(ctx, familyID, func(context.Context, ledger.State) (ledger.Command, error) {
		return ledger.CutAccess{EventID: l.NewID(), Cause: cause, Since: since}, nil
	})
}

// RecordSecurityHandled appends security.handled.v1 on
// ledger.security.<SecurityKey(cause.ID)>: the record that the security
// event cause.ID was handled, with what it selected and did. The record's
// id is derived from the event id and startedAt (when the handling
// began), so a repeated append inside the stream's duplicate window is
// dropped by JetStream. At most MaxRecordFamilies families are listed.
func (l *Ledger) RecordSecurityHandled(ctx context.Context, cause ledger.Cause, startedAt time.Time, h ledger.SecurityHandled) error {
	if cause.Kind != ledger.CauseSecurity || cause.ID == "" {
		return fmt.Errorf("record security event: cause must be a security event with its id: %w", ledger.ErrInvalidRequest)
	}
	sum := sha256.Sum256([]byte(cause.ID))
	id, err := ulid.New(ulid.Timestamp(startedAt), bytes.NewReader(sum[:]))
	if err != nil {
		return fmt.Errorf("record security event: %w", err)
	}
	if len(h.Families) > MaxRecordFamilies {
		h.Families, h.MoreFamilies = h.Families[:MaxRecordFamilies], h.MoreFamilies+len(h.Families)-MaxRecordFamilies
	}
	if h.Families == nil {
		h.Families = []string{}
	}
	_, err = l.store.AppendTo(ctx, "security", SecurityKey(cause.ID), ledger.Event{
		ID: id.String(), OccurredAt: l.now(), Cause: cause, Data: h,
	})
	return err
}
