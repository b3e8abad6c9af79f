// Package client is the Go client of the tokenledger service, for relying
// services and operators' tools: typed requests and replies for every
// endpoint the service registers, errors that carry the OAuth code, and
// retries only where a retry cannot do harm. It imports nats.go and nothing
// of the server, so a relying service does not compile the server.
//
// # Connecting
//
// The client takes a connection the caller made and owns:
//
//	nc, err := nats.Connect(url, nats.UserInfo(user, password))
//	...
//	tl := client.New(nc)                          // prefix "tokens"
//	tl = client.New(nc, client.WithPrefix("auth")) // another --prefix
//
// ConnectOptions makes that connection as tokenledger's commands do (their
// --nats-url, --creds, --nkey, --user, --password, --tls-*, --inbox-prefix):
//
//	nc, err := client.ConnectOptions{URL: url, Name: "web", User: "web", Password: pw}.Connect()
//
// Every call takes a context; without a deadline, each attempt is bounded
// by WithTimeout (5 s by default).
//
// # Issuing and refreshing
//
//	creds := client.Credentials{ID: "web", Secret: os.Getenv("WEB_SECRET")}
//	tok, err := tl.Issue(ctx, creds, client.IssueRequest{Subject: "user-123"})
//	...
//	tok, err = tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: tok.RefreshToken})
//
// Keep only the newest refresh token: the previous one is spent. Presented
// again after the service's grace window (10 s by default) it is a reuse,
// and the service revokes the whole family.
//
// # Errors
//
// A service error is an *Error carrying the OAuth code, the description and
// the status of docs/contract.md §2.3. Match the code with errors.Is and
// the sentinels, or read the fields with errors.As:
//
//	_, err := tl.Refresh(ctx, creds, req)
//	switch {
//	case errors.Is(err, client.ErrInvalidGrant):
//		// the user must log in again
//	case errors.Is(err, client.ErrTemporarilyUnavailable):
//		// retry later
//	}
//	var e *client.Error
//	if errors.As(err, &e) {
//		log.Printf("%s (%d): %s", e.Code, e.Status, e.Description)
//	}
//
// Failures before a reply are transport errors: ErrNoService (no instance
// serves the subject), ErrPermission (the NATS account may not publish on
// it; the error names the subject), or the context's error.
//
// # Retries
//
// A call is retried (WithRetries attempts, 3 by default, with a doubling
// backoff) only when that is safe:
//
//   - Every call is retried when no instance answered at all (no
//     responders): the request was never delivered.
//   - Read-only and idempotent calls (JWKS, Introspect, Sessions,
//     AdminSessions, AdminDigest, Revoke, AdminRevoke) are also retried after
//     a timeout and after temporarily_unavailable. A retried AdminRevoke
//     reports only the families it revoked itself, possibly 0.
//   - Refresh is retried after a timeout and after temporarily_unavailable
//     only within WithRefreshRetryWindow (5 s by default) of the first
//     attempt: a refresh token presented again inside the service's grace
//     window gets the same successor, so the retry cannot fork the family;
//     keep the window below the service's --grace. After it, the error is
//     returned and the caller decides.
//   - Issue is not idempotent (each success starts a new token family), so
//     it is retried only when it was never delivered.
//
// Every attempt of a call carries the same request id (WithRequestID), so
// the ledger records one cause for them.
package client
