package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers of the contract (docs/contract.md §2.2).
const (
	// HeaderRequestID names a request; the ledger records it as the cause
	// of the events the request appends.
	HeaderRequestID = "Tokenledger-Request-Id"
	headerErrorCode = "Nats-Service-Error-Code"
	headerError     = "Nats-Service-Error"
)

// Client calls the tokenledger service over a NATS connection. It is safe
// for concurrent use; it does not own the connection.
type Client struct {
	nc           *nats.Conn
	prefix       string
	timeout      time.Duration
	attempts     int
	backoff      time.Duration
	refreshRetry time.Duration
}

// Option sets an optional knob of New.
type Option func(*Client)

// WithPrefix sets the service's subject prefix (its --prefix; default
// "tokens").
func WithPrefix(prefix string) Option { return func(c *Client) { c.prefix = prefix } }

// WithTimeout bounds each attempt when the call's context has no deadline
// (default 5 s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithRetries sets how many attempts a retryable call makes in all
// (default 3; 1 disables retries) and the first backoff, doubled after each
// attempt (default 100 ms). See the package doc for what is retried.
func WithRetries(attempts int, backoff time.Duration) Option {
	return func(c *Client) { c.attempts, c.backoff = max(attempts, 1), backoff }
}

// WithRefreshRetryWindow bounds how long after its first attempt a refresh
// is retried (default 5 s). Keep it below the service's grace window: a
// retry inside it gets the same successor, one after it is a reuse.
func WithRefreshRetryWindow(d time.Duration) Option {
	return func(c *Client) { c.refreshRetry = d }
}

// New returns a client that calls the service on nc.
func New(nc *nats.Conn, opts ...Option) *Client {
	c := &Client{nc: nc, prefix: "tokens", timeout: 5 * time.Second, attempts: 3,
		backoff: 100 * time.Millisecond, refreshRetry: 5 * time.Second}
	for _, o := range opts {
		o(c)
	}
	return c
}

type requestIDKey struct{}

// WithRequestID returns a context whose calls carry id as their request
// id (1-64 of A-Za-z0-9._:-; the service mints one for anything else).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// retryPolicy says which failures a call may retry.
type retryPolicy int

const (
	// retryUndelivered: only when no instance received the request.
	retryUndelivered retryPolicy = iota
	// retrySafe: also after a timeout or temporarily_unavailable.
	retrySafe
	// retryRefresh: as retrySafe within the refresh retry window.
	retryRefresh
)

// call sends req to prefix.endpoint and decodes the reply into out.
func (c *Client) call(ctx context.Context, endpoint string, req, out any, policy retryPolicy) error {
	subject := c.prefix + "." + endpoint
	var body []byte
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return fmt.Errorf("%s: encode request: %w", endpoint, err)
		}
	}
	msg := &nats.Msg{Subject: subject, Data: body}
	if id, ok := ctx.Value(requestIDKey{}).(string); ok && id != "" {
		msg.Header = nats.Header{HeaderRequestID: {id}}
	}
	first := time.Now()
	backoff := c.backoff
	for attempt := 1; ; attempt++ {
		err := c.once(ctx, msg, out)
		if err == nil || attempt >= c.attempts || !c.retryable(err, policy, first) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func (c *Client) retryable(err error, policy retryPolicy, first time.Time) bool {
	if errors.Is(err, ErrNoService) {
		return true
	}
	if policy == retryUndelivered || errors.Is(err, ErrPermission) {
		return false
	}
	if policy == retryRefresh && time.Since(first) >= c.refreshRetry {
		return false
	}
	return errors.Is(err, ErrTemporarilyUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// once makes one attempt.
func (c *Client) once(ctx context.Context, msg *nats.Msg, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	reply, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return c.transportError(ctx, msg.Subject, err)
	}
	if code := reply.Header.Get(headerErrorCode); code != "" {
		var e Error
		if json.Unmarshal(reply.Data, &e) != nil || e.Code == "" {
			// Not the contract's body: take the code from the header.
			e.Code, e.Description, _ = strings.Cut(reply.Header.Get(headerError), ": ")
		}
		return newError(e.Code, e.Description, code)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(reply.Data, out); err != nil {
		return fmt.Errorf("%s: reply is not the expected JSON: %w", msg.Subject, err)
	}
	return nil
}

// transportError explains a request that got no reply.
func (c *Client) transportError(ctx context.Context, subject string, err error) error {
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%w on %s (is tokenledger serve running, with the same --prefix?)", ErrNoService, subject)
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.DeadlineExceeded) && !errors.Is(cause, context.Canceled) {
		return cause // set by the caller, e.g. a permission error it saw
	}
	if pe, ok := ParsePermissionError(c.nc.LastError()); ok {
		return pe
	}
	return fmt.Errorf("%s: no reply: %w", subject, err)
}

var permissionRe = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "([^"]+)"`)

// ParsePermissionError reads a NATS permissions violation (as reported to
// a connection's error handler or by LastError) into a *PermissionError.
func ParsePermissionError(err error) (*PermissionError, bool) {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return nil, false
	}
	m := permissionRe.FindStringSubmatch(err.Error())
	if m == nil {
		return &PermissionError{Subject: "(unknown)", Op: "publish"}, true
	}
	op := "publish"
	if strings.EqualFold(m[1], "subscription") {
		op = "subscribe"
	}
	return &PermissionError{Subject: m[2], Op: op}, true
}
