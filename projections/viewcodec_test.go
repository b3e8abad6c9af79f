package projections

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
)

// The digest built by hand is byte for byte the one fmt wrote (digests
// reported by earlier builds, and recorded in checkpoints, stay
// comparable), over every kind of line: families with and without
// cutoffs, strings that need quoting, revoked ULID and other jtis,
// exemptions.
func TestDigestFormat(t *testing.T) {
	f := newFixture(t)
	f.workload(2000, 5)
	v := NewView()
	if err := f.runner(v).RunToEnd(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	seq := v.LastSeq()
	fid := ulid.Make().String()
	for _, e := range []ledger.Event{
		{FamilyID: fid, OccurredAt: now, Data: ledger.FamilyIssued{ClientID: "c\"1\\", Subject: "zoë \t\x00 ☃", Version: -3,
			ExpiresAt: now.Add(time.Hour), Access: ledger.AccessGrant{JTI: ulid.Make().String(), ExpiresAt: now.Add(time.Minute)}}},
		{FamilyID: fid, OccurredAt: now, Data: ledger.AccessRevoked{JTI: "not-a-ulid \"x\"", ExpiresAt: now.Add(time.Hour)}},
		{FamilyID: fid, OccurredAt: now, Data: ledger.AccessCutoff{}},
		{FamilyID: fid, OccurredAt: now.Add(100 * time.Millisecond), Data: ledger.RefreshUsed{Access: ledger.AccessGrant{JTI: ulid.Make().String(), ExpiresAt: now.Add(time.Hour)}}},
	} {
		seq++
		v.Apply(seq, e)
	}
	if len(v.exempt) == 0 || len(v.revokedOther) == 0 || len(v.revokedJTI) == 0 {
		t.Fatalf("view lacks a kind of line: %d exempt, %d other jtis, %d jtis", len(v.exempt), len(v.revokedOther), len(v.revokedJTI))
	}
	for _, at := range []time.Time{now, now.Add(10 * time.Minute), now.Add(100 * 24 * time.Hour)} {
		got, gseq := v.DigestAt(at)
		want, wseq := digestReference(v, at)
		if got != want || gseq != wseq {
			t.Fatalf("digest at %s: %s, fmt gives %s", at, got, want)
		}
	}
}

// digestReference is DigestAt as it was written with fmt.
func digestReference(v *View, now time.Time) (digest string, seq uint64) {
	n := now.Unix()
	v.mu.RLock()
	defer v.mu.RUnlock()
	seq = v.last.Load()
	var fams []*familyRec
	for i := range v.fams {
		if r := &v.fams[i]; r.relevant(n) {
			fams = append(fams, r)
		}
	}
	slices.SortFunc(fams, func(a, b *familyRec) int { return compareKey(a.key, b.key) })
	h := sha256.New()
	for _, r := range fams {
		fmt.Fprintf(h, "f %x %q %q %d %d %d %d %d %d %t %d %q %d\n",
			r.key, v.strs[r.client], v.strs[r.subject], r.generation, r.version,
			r.created, r.rotated, r.expires, r.accessUntil, r.revoked, r.revokedAt,
			v.causes[r.cause], r.cutoff)
		if r.cutoffEvent != 0 {
			fmt.Fprintf(h, "c %x %d\n", r.key, r.cutoffEvent)
		}
	}
	jtis := make([][16]byte, 0, len(v.revokedJTI))
	for k, exp := range v.revokedJTI {
		if n < int64(exp) {
			jtis = append(jtis, k)
		}
	}
	slices.SortFunc(jtis, compareKey)
	for _, k := range jtis {
		fmt.Fprintf(h, "j %x %d\n", k, v.revokedJTI[k])
	}
	others := make([]string, 0, len(v.revokedOther))
	for k, exp := range v.revokedOther {
		if n < int64(exp) {
			others = append(others, k)
		}
	}
	slices.Sort(others)
	for _, k := range others {
		fmt.Fprintf(h, "o %q %d\n", k, v.revokedOther[k])
	}
	ex := make([][16]byte, 0, len(v.exempt))
	for k, x := range v.exempt {
		if n < int64(x.exp) {
			ex = append(ex, k)
		}
	}
	slices.SortFunc(ex, compareKey)
	for _, k := range ex {
		fmt.Fprintf(h, "x %x %x %d\n", k, v.exempt[k].family, v.exempt[k].exp)
	}
	return hex.EncodeToString(h.Sum(nil)), seq
}
