package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/oklog/ulid/v2"
)

// The bare pipeline is the denominator of every bench result: the work a
// token service cannot avoid on this machine, with no ledger logic. It is
// what the reference measurements call the bare issue and rotate pipelines:
//
//	issue:   endpoint → EdDSA sign (golang-jwt) → JetStream publish → reply
//	refresh: endpoint → direct get of the family subject's last message →
//	         EdDSA sign → publish expecting that subject sequence → reply
//
// each handler body running on a bounded goroutine pool, on embedded
// JetStream with file storage. It answers the same request shapes as the
// service (bare.issue, bare.refresh) so one load generator drives both, and
// bare.introspect is a request-reply echo answered on the endpoint's own
// goroutine, with no pool (the ceiling for any endpoint). It deliberately does not use the ledger package: its
// cost must not move when the service code is optimised.

const (
	barePrefix = "bare"
	bareStream = "BENCH_BARE"
)

type bareServer struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	key    ed25519.PrivateKey
	kid    string
}

// bareClaims are RFC 9068-shaped access token claims, as golang-jwt users
// write them; the one-element aud is an array as in the service.
type bareClaims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	SID      string `json:"sid"`
	Ver      int    `json:"ver"`
}

// runBare runs the bare pipeline until ctx ends on an embedded server that
// start starts; it is the child process `tokenledger bench bare-child`,
// or goroutines of the bench with Config.InProcess. With --control it
// answers the profiling protocol (ControlLoop) on ctl and ctlOut.
func runBare(ctx context.Context, args []string, start func(listen, dataDir string) (*server.Server, error), ctl io.Reader, ctlOut io.Writer) error {
	var listen, data string
	var workers int
	var control bool
	fs := flag.NewFlagSet("bench "+BareChild, flag.ContinueOnError)
	fs.StringVar(&listen, "listen", "127.0.0.1:0", "embedded NATS listen address")
	fs.StringVar(&data, "data", "", "storage directory (required)")
	fs.IntVar(&workers, "workers", 128, "handler pool size")
	fs.BoolVar(&control, "control", false, "read profiling commands on stdin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if data == "" {
		return errors.New(BareChild + ": --data is required")
	}
	if control {
		if ctl == nil || ctlOut == nil {
			return errors.New(BareChild + ": --control without a control channel")
		}
		go ControlLoop(ctl, ctlOut)
	}
	if start == nil {
		return errors.New(BareChild + ": no embedded server to start")
	}
	ns, err := start(listen, data)
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("tokenledger-bench-bare"))
	if err != nil {
		return err
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: bareStream, Subjects: []string{barePrefix + ".family.>"},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Replicas: 1,
		Duplicates: 2 * time.Minute, DenyDelete: true, DenyPurge: true,
		AllowDirect: true, Discard: jetstream.DiscardNew,
	})
	if err != nil {
		return fmt.Errorf("bare stream: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	b := &bareServer{js: js, stream: stream, key: priv, kid: "bare-key-1"}

	jobs := make(chan func(), workers*4)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for job := range jobs {
				job()
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	svc, err := micro.AddService(nc, micro.Config{Name: "tokenledger-bare", Version: "0.0.1"})
	if err != nil {
		return err
	}
	defer svc.Stop()
	group := svc.AddGroup(barePrefix)
	for name, h := range map[string]func(context.Context, micro.Request){
		"issue": b.issue, "refresh": b.rotate,
	} {
		err := group.AddEndpoint(name, micro.HandlerFunc(func(req micro.Request) {
			select {
			case jobs <- func() {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				h(rctx, req)
			}:
			case <-ctx.Done():
			}
		}))
		if err != nil {
			return err
		}
	}
	if err := group.AddEndpoint("introspect", micro.HandlerFunc(b.echo)); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func (b *bareServer) sign(fid, jti string, now time.Time) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, bareClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: "tokenledger", Subject: "bench-user", Audience: jwt.ClaimStrings{"api"},
			ExpiresAt: jwt.NewNumericDate(now.Add(15 * time.Minute)),
			NotBefore: jwt.NewNumericDate(now), IssuedAt: jwt.NewNumericDate(now), ID: jti,
		},
		ClientID: "bench", Scope: "read write", SID: fid, Ver: 1,
	})
	t.Header["kid"] = b.kid
	t.Header["typ"] = "at+jwt"
	return t.SignedString(b.key)
}

// event is a stand-in for a ledger event of about the same size.
func bareEvent(typ, fid, jti string, hash []byte) []byte {
	e := make([]byte, 0, 512)
	e = append(e, `{"id":"`...)
	e = append(e, jti...)
	e = append(e, `","type":"`...)
	e = append(e, typ...)
	e = append(e, `","family_id":"`...)
	e = append(e, fid...)
	e = append(e, `","occurred_at":"`...)
	e = time.Now().UTC().AppendFormat(e, time.RFC3339Nano)
	e = append(e, `","token_hash":"`...)
	e = append(e, base64.RawURLEncoding.EncodeToString(hash)...)
	e = append(e, `","client_id":"bench","subject":"bench-user","scope":"read write","aud":["api"]}`...)
	return e
}

// refreshToken is tlr_<family ULID>_<256 random bits>.
func bareRefreshToken(fid string) (string, []byte, error) {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", nil, err
	}
	return "tlr_" + fid + "_" + base64.RawURLEncoding.EncodeToString(secret[:]), secret[:], nil
}

func (b *bareServer) issue(ctx context.Context, req micro.Request) {
	now := time.Now()
	fid, jti := ulid.Make().String(), ulid.Make().String()
	b.finish(ctx, req, fid, jti, now, 0, false)
}

func (b *bareServer) rotate(ctx context.Context, req micro.Request) {
	tok := jsonString(req.Data(), "refresh_token")
	if len(tok) < 4+ulid.EncodedSize || tok[:4] != "tlr_" {
		_ = req.Error("400", "invalid_grant", []byte(`{"error":"invalid_grant","error_description":"bare: bad token"}`))
		return
	}
	fid := tok[4 : 4+ulid.EncodedSize]
	last, err := b.stream.GetLastMsgForSubject(ctx, barePrefix+".family."+fid)
	if err != nil {
		_ = req.Error("503", "temporarily_unavailable", []byte(`{"error":"temporarily_unavailable","error_description":"bare: get failed"}`))
		return
	}
	b.finish(ctx, req, fid, ulid.Make().String(), time.Now(), last.Sequence, true)
}

// finish signs, appends (conditionally for a rotation) and replies.
func (b *bareServer) finish(ctx context.Context, req micro.Request, fid, jti string, now time.Time, seq uint64, conditional bool) {
	at, err := b.sign(fid, jti, now)
	if err != nil {
		_ = req.Error("500", "server_error", []byte(`{"error":"server_error","error_description":"bare: sign"}`))
		return
	}
	rt, secret, err := bareRefreshToken(fid)
	if err != nil {
		_ = req.Error("500", "server_error", []byte(`{"error":"server_error","error_description":"bare: rand"}`))
		return
	}
	typ := "family.issued.v1"
	var opts []jetstream.PublishOpt
	if conditional {
		typ = "refresh.rotated.v1"
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(seq))
	}
	if _, err := b.js.Publish(ctx, barePrefix+".family."+fid, bareEvent(typ, fid, jti, secret), opts...); err != nil {
		_ = req.Error("503", "temporarily_unavailable", []byte(`{"error":"temporarily_unavailable","error_description":"bare: publish failed"}`))
		return
	}
	r := make([]byte, 0, 768)
	r = append(r, `{"access_token":"`...)
	r = append(r, at...)
	r = append(r, `","token_type":"Bearer","expires_in":900,"refresh_token":"`...)
	r = append(r, rt...)
	r = append(r, `","refresh_token_expires_in":1209600,"family_id":"`...)
	r = append(r, fid...)
	r = append(r, `","scope":"read write"}`...)
	_ = req.Respond(r)
}

func (b *bareServer) echo(req micro.Request) {
	_ = req.Respond([]byte(`{"active":true}`))
}

// jsonString extracts a string member from a flat JSON object without
// decoding it: enough for token values, which need no escapes. It returns
// "" when the key is missing.
func jsonString(data []byte, key string) string {
	var k [64]byte
	pat := append(append(append(k[:0], '"'), key...), `":"`...)
	i := bytes.Index(data, pat)
	if i < 0 {
		return ""
	}
	rest := data[i+len(pat):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}
