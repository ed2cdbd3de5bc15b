package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

const healthcheckUsage = `Usage: mhero-mediator healthcheck [--url URL] [--timeout DURATION]

Asks a running service's /healthz and exits 0 when it answers 200 within the timeout, 1 otherwise:
the container's HEALTHCHECK, in an image without curl or a shell. Without --url it asks
http://127.0.0.1:PORT/healthz, where PORT is --port and the host --bind when that is one address,
both read from MHERO_PORT and MHERO_BIND as serve reads them, so the check follows the service's
own configuration.

Flags:
`

func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "", "URL to ask (default http://127.0.0.1:8544/healthz, from --bind and --port)")
	bind := fs.String("bind", "", "the service's --bind (empty or 0.0.0.0: ask 127.0.0.1)")
	port := fs.Int("port", 8544, "the service's --port")
	timeout := fs.Duration("timeout", 3*time.Second, "longest wait for the answer")
	fs.Usage = func() {
		fmt.Fprint(stderr, healthcheckUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "healthcheck takes no arguments, got %q\n", fs.Args())
		return errUsage
	}
	if *timeout <= 0 {
		return fmt.Errorf("healthcheck: --timeout %s must be more than 0", *timeout)
	}
	u := *target
	if u == "" {
		host := "127.0.0.1"
		if ip := net.ParseIP(*bind); *bind != "" && (ip == nil || !ip.IsUnspecified()) {
			host = *bind
		}
		u = "http://" + net.JoinHostPort(host, strconv.Itoa(*port)) + "/healthz"
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	client := &http.Client{
		// No proxy from the environment: the service is local.
		Transport: &http.Transport{},
		// A redirect is not health: report it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("healthcheck: %s did not answer within %s", u, *timeout)
		}
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", u, resp.Status)
	}
	fmt.Fprintf(stdout, "healthy: %s answered %s\n", u, resp.Status)
	return nil
}
