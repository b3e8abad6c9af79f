package audit

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tokenledger/tokenledger/ledger"
)

// storedEvent is the envelope as stored, with the payload and the state
// snapshot kept raw: verify compares the snapshot's bytes with the fold's
// encoding instead of decoding it, which is most of the cost of a read.
type storedEvent struct {
	ID         string           `json:"id"`
	Type       ledger.EventType `json:"type"`
	Schema     int              `json:"schema"`
	FamilyID   string           `json:"family_id"`
	OccurredAt time.Time        `json:"occurred_at"`
	Cause      ledger.Cause     `json:"cause"`
	Prev       string           `json:"prev"`
	Data       json.RawMessage  `json:"data"`
	State      json.RawMessage  `json:"state"`
}

// decodeStored parses a stored event like ledger.DecodeEvent, but returns
// the state snapshot as raw JSON (nil when absent) instead of decoding it.
func decodeStored(b []byte) (ledger.Event, json.RawMessage, error) {
	var w storedEvent
	if err := json.Unmarshal(b, &w); err != nil {
		return ledger.Event{}, nil, fmt.Errorf("decode event: %w", err)
	}
	if w.Schema != ledger.SchemaVersion {
		return ledger.Event{}, nil, fmt.Errorf("decode event %s: schema %d: %w", w.ID, w.Schema, ledger.ErrUnknownEvent)
	}
	e := ledger.Event{ID: w.ID, Type: w.Type, FamilyID: w.FamilyID, OccurredAt: w.OccurredAt, Cause: w.Cause, Prev: w.Prev}
	var err error
	switch w.Type {
	case ledger.TypeFamilyIssued:
		e.Data, err = decodeData[ledger.FamilyIssued](w.Data)
	case ledger.TypeRefreshRotated:
		e.Data, err = decodeData[ledger.RefreshRotated](w.Data)
	case ledger.TypeRefreshUsed:
		e.Data, err = decodeData[ledger.RefreshUsed](w.Data)
	case ledger.TypeGraceRetried:
		e.Data, err = decodeData[ledger.GraceRetried](w.Data)
	case ledger.TypeReuseDetected:
		e.Data, err = decodeData[ledger.ReuseDetected](w.Data)
	case ledger.TypeFamilyRevoked:
		e.Data, err = decodeData[ledger.FamilyRevoked](w.Data)
	case ledger.TypeAccessRevoked:
		e.Data, err = decodeData[ledger.AccessRevoked](w.Data)
	case ledger.TypeAccessCutoff:
		e.Data, err = decodeData[ledger.AccessCutoff](w.Data)
	case ledger.TypeSecurityHandled:
		e.Data, err = decodeData[ledger.SecurityHandled](w.Data)
	default:
		return ledger.Event{}, nil, fmt.Errorf("decode event %s: type %q: %w", w.ID, w.Type, ledger.ErrUnknownEvent)
	}
	if err != nil {
		return ledger.Event{}, nil, fmt.Errorf("decode event %s (%s): %w", w.ID, w.Type, err)
	}
	if string(w.State) == "null" {
		w.State = nil
	}
	return e, w.State, nil
}

func decodeData[T any](b json.RawMessage) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

// decodeState parses a raw state snapshot.
func decodeState(raw json.RawMessage) (ledger.State, error) {
	var s ledger.State
	err := json.Unmarshal(raw, &s)
	return s, err
}
