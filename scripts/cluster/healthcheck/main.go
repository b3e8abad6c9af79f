// Command healthcheck exits 0 when every URL it is given answers 200 to a
// GET within two seconds, and 1 otherwise. The container image carries it
// for docker-compose.yml's health checks (/readyz of tokenledger,
// /healthz of the resource server): the image has no shell and no curl.
//
//	healthcheck http://127.0.0.1:8081/readyz
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck URL...")
		os.Exit(2)
	}
	for _, url := range os.Args[1:] {
		if err := check(url); err != nil {
			fmt.Fprintln(os.Stderr, "healthcheck:", err)
			os.Exit(1)
		}
	}
}

func check(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
