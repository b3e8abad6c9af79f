package handlers

import (
	"context"
	jsonv1 "encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/tokenledger/tokenledger/api"
	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/ledger/token"
	"github.com/tokenledger/tokenledger/projections"
)

// ServiceName is the micro service name every instance registers.
const ServiceName = "tokenledger"

// HeaderRequestID lets a caller name its request; the id is recorded as the
// cause of the events the request appends. Without it one is minted.
const HeaderRequestID = "Tokenledger-Request-Id"

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// Config is what the service needs. Ledger, Registry and Keys are required.
type Config struct {
	Ledger   *jsstore.Ledger
	Registry *jsstore.Registry
	// Keys is a fixed key set, used when Ring is nil.
	Keys token.KeySet
	// Ring, when set, is where the signing keys come from: the service
	// follows its changes (rotation, revocation) without a restart and
	// serves the tokens.admin.keys endpoints (keys.go).
	Ring   *jsstore.KeyRing
	Issuer string
	// Algs are the algorithms the verifier side accepts (default: the
	// current key's).
	Algs []string
	// Prefix is the subject prefix of the endpoints (default "tokens").
	Prefix   string
	Defaults ledger.Policy
	// MaxRequestBytes bounds request bodies (default 16 KiB).
	MaxRequestBytes int
	// Workers is how many requests run at once (default 128).
	Workers int
	// Timeout bounds one request's work (default 5 s).
	Timeout time.Duration
	Version string
	Log     *slog.Logger
	// Observe, when set, is told every request's endpoint, outcome
	// (OutcomeOK or the OAuth error code) and duration, for metrics. It is
	// called on the request path and must not block.
	Observe func(endpoint, outcome string, took time.Duration)
	// View is the valid-token view; with it the service also serves
	// revoke, introspect, sessions and admin.revoke (see revoke.go).
	View *projections.View
	// Rollouts is the rollout read model, fed with the view; with both the
	// service also serves admin.rollout (rollout.go).
	Rollouts *projections.Rollouts
}

func (c *Config) validate() error {
	switch {
	case c.Ledger == nil:
		return errors.New("handlers: Ledger is required")
	case c.Registry == nil:
		return errors.New("handlers: Registry is required")
	}
	if _, ok := c.Keys.Current(); !ok && c.Ring == nil {
		return errors.New("handlers: a current signing key (Keys) or a key ring is required")
	}
	if c.Prefix == "" {
		c.Prefix = "tokens"
	}
	if c.Issuer == "" {
		c.Issuer = "tokenledger"
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.Workers <= 0 {
		c.Workers = 128
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Version == "" {
		c.Version = "0.1.0"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Service is the tokenledger micro service.
type Service struct {
	cfg     Config
	keyView atomic.Pointer[keyView] // see keysAt
	keyMu   sync.Mutex              // serialises building a key view
	intro   *introspector           // nil without a view
	inline  sync.WaitGroup          // introspections answered outside the pool, not yet answered
	inHand  atomic.Int64            // requests the pool is serving
	cpus    int64                   // GOMAXPROCS when the service was made

	// gate orders taking requests against stopping: a handler holds it
	// shared while it hands a request on (to the pool, or to a sync round),
	// and Run takes it exclusively to set stopped before it closes the pool.
	// microService.stop drains the endpoints' subscriptions without waiting, so
	// handlers can still run after it.
	gate    sync.RWMutex
	stopped bool

	// bodies holds the buffers token responses are encoded in (see
	// pooledBody): the reply's publish copies a body into the connection's
	// buffer, so it is reused once sent.
	bodies sync.Pool
}

// pooledBody is a reply encoded in a buffer from Service.bodies; serve
// returns the buffer to the pool once the reply is published.
type pooledBody struct{ b []byte }

// NewService validates the configuration and prepares the signer.
func NewService(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(cfg.Algs) == 0 {
		// Every algorithm the ledger signs with: a rotation may change it.
		cfg.Algs = []string{token.AlgEdDSA, token.AlgES256, token.AlgRS256}
		if cfg.Ring == nil {
			key, _ := cfg.Keys.Current()
			cfg.Algs = []string{key.Alg}
		}
	}
	svc := &Service{cfg: cfg, cpus: int64(runtime.GOMAXPROCS(0))}
	if _, err := svc.keysAt(cfg.Ledger.Now()); err != nil {
		return nil, err
	}
	if cfg.View != nil {
		var err error
		if svc.intro, err = newIntrospector(cfg); err != nil {
			return nil, err
		}
		svc.intro.source = svc.keySet
	}
	return svc, nil
}

type endpoint struct {
	name    string
	handler func(ctx context.Context, req micro.Request) (any, error)
}

// Run registers the service on nc (one micro service instance, see
// microService) and serves until ctx ends, then stops the endpoints and
// waits for in-flight requests.
func (s *Service) Run(ctx context.Context, nc *nats.Conn) error {
	jobs := make(chan func(), s.cfg.Workers*4)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() {
			for job := range jobs {
				job()
			}
		})
	}
	defer func() {
		s.gate.Lock()
		s.stopped = true
		s.gate.Unlock()
		close(jobs)
		wg.Wait()
		s.inline.Wait() // introspections waiting for a sync round
	}()

	svc, err := newMicroService(nc, ServiceName, s.cfg.Ledger.NewID(), s.cfg.Version,
		"event-sourced token authority: issue, rotate, revoke, introspect", nil)
	if err != nil {
		return fmt.Errorf("register micro service: %w", err)
	}
	defer func() {
		if err := svc.stop(); err != nil {
			s.cfg.Log.Warn("stop micro service", "error", err)
		}
	}()
	for _, ep := range []endpoint{
		{"issue", s.issue},
		{"refresh", s.refresh},
		{"jwks", s.jwksHandler},
	} {
		if err := svc.addEndpoint(ep.name, s.cfg.Prefix+"."+ep.name, s.dispatch(ctx, jobs, ep)); err != nil {
			return err
		}
	}
	if err := s.addViewEndpoints(ctx, jobs, svc); err != nil {
		return err
	}
	if err := s.addKeyEndpoints(ctx, jobs, svc); err != nil {
		return err
	}
	kid := ""
	if v, err := s.keysAt(s.cfg.Ledger.Now()); err == nil {
		kid = v.signer.KID()
	}
	s.cfg.Log.Info("service ready", "service", ServiceName, "prefix", s.cfg.Prefix, "kid", kid)
	<-ctx.Done()
	return nil
}

// dispatch hands each request to the worker pool. It blocks when the pool
// is saturated, so NATS buffers the excess rather than dropping it.
func (s *Service) dispatch(ctx context.Context, jobs chan<- func(), ep endpoint) micro.HandlerFunc {
	// Requests already accepted finish on shutdown (each within Timeout):
	// their context is not cancelled with ctx.
	work := context.WithoutCancel(ctx)
	return func(req micro.Request) {
		job := func() { s.serve(work, ep, req) }
		s.gate.RLock()
		defer s.gate.RUnlock()
		if s.stopped {
			s.observe(ep.name, s.respondError(req, ep.name, errStopping), time.Time{})
			return
		}
		select {
		case jobs <- job:
		case <-ctx.Done():
			s.observe(ep.name, s.respondError(req, ep.name, errStopping), time.Time{})
		}
	}
}

func (s *Service) serve(parent context.Context, ep endpoint, req micro.Request) {
	s.inHand.Add(1)
	defer s.inHand.Add(-1)
	start := time.Now()
	req = s.withRequestID(req)
	if err := s.cfg.Ledger.Ready(); err != nil {
		s.observe(ep.name, s.respondError(req, ep.name, err), start)
		return
	}
	ctx, cancel := context.WithTimeout(parent, s.cfg.Timeout)
	defer cancel()
	reply, err := ep.handler(ctx, req)
	if err != nil {
		s.observe(ep.name, s.respondError(req, ep.name, err), start)
		return
	}
	var body []byte
	switch r := reply.(type) {
	case []byte:
		body = r
	case *pooledBody:
		body = r.b
		defer s.bodies.Put(r)
	default:
		if body, err = marshalReply(reply); err != nil {
			s.observe(ep.name, s.respondError(req, ep.name, err), start)
			return
		}
	}
	s.observe(ep.name, OutcomeOK, start)
	s.answer(req, ep.name, body)
	if strings.HasPrefix(ep.name, "admin_") {
		// Operators' calls carry no secret: the request and the reply are
		// the record of what was done.
		s.cfg.Log.Info("admin action", "endpoint", ep.name, "request_id", logRequestID(req),
			"request", string(req.Data()), "reply", string(body))
	} else if s.cfg.Log.Enabled(ctx, slog.LevelDebug) {
		s.cfg.Log.Debug("request", "endpoint", ep.name, "request_id", logRequestID(req), "outcome", "ok",
			"duration", time.Since(start))
	}
}

// idRequest is a request whose headers carry the request id the service
// minted for it, so the handler records the same id the logs name.
type idRequest struct {
	micro.Request
	headers micro.Headers
}

// Headers returns the request's headers with the minted id.
func (r idRequest) Headers() micro.Headers { return r.headers }

// withRequestID gives a request without a valid request id a fresh one.
func (s *Service) withRequestID(req micro.Request) micro.Request {
	if requestIDPattern.MatchString(req.Headers().Get(HeaderRequestID)) {
		return req
	}
	h := make(micro.Headers, len(req.Headers())+1)
	for k, v := range req.Headers() {
		h[k] = v
	}
	h[HeaderRequestID] = []string{s.cfg.Ledger.NewID()}
	return idRequest{Request: req, headers: h}
}

// logRequestID is the request id for a log line ("" when the request has
// none yet: answered before serve named it).
func logRequestID(req micro.Request) string {
	if id := req.Headers().Get(HeaderRequestID); requestIDPattern.MatchString(id) {
		return id
	}
	return ""
}

// logClientID is the client_id of a request body for a log line, read on
// error paths only; never any other member (the secret stays unread).
func logClientID(body []byte) string {
	var r struct {
		ClientID string `json:"client_id"`
	}
	if jsonv1.Unmarshal(body, &r) != nil || r.ClientID == "" {
		return ""
	}
	if !ledger.ValidClientID(r.ClientID) {
		return "(not a valid client id)"
	}
	return r.ClientID
}

// answer sends a successful reply with the request's Respond, which
// counts it in the endpoint's micro stats (a reply that cannot be sent
// counts as an error; to a request without a reply subject it is not
// logged).
func (s *Service) answer(req micro.Request, endpoint string, body []byte) {
	if err := req.Respond(body); err != nil && req.Reply() != "" {
		s.cfg.Log.Warn("reply failed", "endpoint", endpoint, "request_id", logRequestID(req), "error", err)
	}
}

// respondError sends the error reply for err with the request's Error, so
// the endpoint's micro stats count it (num_errors, last_error
// "status:code: description"), and returns the OAuth code replied. The
// headers are micro's: Nats-Service-Error-Code is the HTTP-like status,
// Nats-Service-Error the code and the description; the body is the OAuth
// error response.
func (s *Service) respondError(req micro.Request, endpoint string, err error) string {
	status, code, desc, known := oauthError(err)
	s.logError(req, endpoint, status, code, err, known)
	body, _ := marshalReply(api.ErrorResponse{Error: code, Description: desc})
	if rerr := req.Error(status, code+": "+desc, body); rerr != nil && req.Reply() != "" {
		s.cfg.Log.Warn("error reply failed", "endpoint", endpoint, "request_id", logRequestID(req), "error", rerr)
	}
	return code
}

// OutcomeOK is the outcome Config.Observe is told for a successful reply
// (an error reply is its OAuth code).
const OutcomeOK = "ok"

// observe tells Config.Observe (if set) a request's outcome and how long it
// took since start (0 when it never reached the pool).
func (s *Service) observe(endpoint, outcome string, start time.Time) {
	if s.cfg.Observe == nil {
		return
	}
	var took time.Duration
	if !start.IsZero() {
		took = time.Since(start)
	}
	s.cfg.Observe(endpoint, outcome, took)
}

// logError writes the line an operator needs for an error reply: every
// refused authentication (the client id, never the secret) and every 5xx;
// the rest at debug level. Reuse detections are logged where they are
// decided (tokens.go), with the family id.
func (s *Service) logError(req micro.Request, endpoint, status, code string, err error, known bool) {
	id := logRequestID(req)
	switch {
	case !known:
		s.cfg.Log.Error("request failed", "endpoint", endpoint, "request_id", id, "status", status, "error", err)
	case code == api.CodeInvalidClient:
		s.cfg.Log.Warn("client authentication refused", "endpoint", endpoint, "request_id", id,
			"client_id", logClientID(req.Data()))
	case status[0] == '5':
		s.cfg.Log.Warn("request failed", "endpoint", endpoint, "request_id", id, "status", status, "code", code, "error", err)
	default:
		s.cfg.Log.Debug("request", "endpoint", endpoint, "request_id", id, "outcome", code, "status", status)
	}
}

// requestID is the caller's request id header, or a fresh ULID.
func (s *Service) requestID(req micro.Request) string {
	if id := req.Headers().Get(HeaderRequestID); requestIDPattern.MatchString(id) {
		return id
	}
	return s.cfg.Ledger.NewID()
}
