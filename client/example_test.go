package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/tokenledger/tokenledger/client"
)

// A relying service logs a user in, refreshes, and handles the errors that
// mean "log in again" and "retry later".
func Example() {
	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	tl := client.New(nc)
	creds := client.Credentials{ID: "web", Secret: os.Getenv("WEB_CLIENT_SECRET")}
	ctx := context.Background()

	tok, err := tl.Issue(ctx, creds, client.IssueRequest{Subject: "user-123", Scope: "read"})
	if err != nil {
		log.Fatal(err)
	}
	tok, err = tl.Refresh(ctx, creds, client.RefreshRequest{RefreshToken: tok.RefreshToken})
	switch {
	case errors.Is(err, client.ErrInvalidGrant):
		fmt.Println("session over: log in again")
	case errors.Is(err, client.ErrTemporarilyUnavailable):
		fmt.Println("retry later")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("new access token expires in", tok.ExpiresIn, "s")
	}
}
