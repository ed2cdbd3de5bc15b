// Command mhero-mediator keeps RapidPro's contacts in step with a health
// worker registry served by OpenInfoMan, as an OpenHIM mediator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `mhero-mediator keeps RapidPro contacts in step with an OpenInfoMan health worker registry.

Usage:
  mhero-mediator serve [flags]            run the OpenHIM mediator: /sync, /status, /metrics, /healthz, /readyz
  mhero-mediator sync [flags]             run one sync now and print its summary
                                          (--full: a full reconciliation; --confirm-retire: past the circuit breaker)
  mhero-mediator plan [flags]             what a sync would do now, provider by provider; writes nothing
  mhero-mediator demo [--serve]           run the whole path on fixtures, with nothing else installed
  mhero-mediator map [--country CC] FILE  map a CSD document to RapidPro contacts and targeting fields, offline
  mhero-mediator state show|reset         where the state stands; reset --watermark forces a full pull
  mhero-mediator fakes [flags]            serve a fake OpenInfoMan and RapidPro on fixed ports, for a trial
  mhero-mediator healthcheck [--url URL]  exit 0 when the service's /healthz answers 200 (the container's check)

Every flag but --full and --confirm-retire can also be set by an environment variable: --rapidpro-token is MHERO_RAPIDPRO_TOKEN.
Run 'mhero-mediator COMMAND -h' for a command's flags.
`

// errUsage marks a command line that could not be understood; the flag
// package has already said why.
var errUsage = errors.New("usage")

// errHelp ends a command whose help was asked for and printed.
var errHelp = errors.New("help")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, errHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "mhero-mediator:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	commands := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"map":   runMap,
		"serve": runServe,
		"sync":  runSync,
		"plan":  runPlan,
		"demo":  runDemo,
		"state": runState,

		// for the Docker image and the compose stack
		"fakes":       runFakes,
		"healthcheck": runHealthcheck,
	}
	cmd, ok := commands[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return nil
		}
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

// parseFlags parses args, then fills every flag not given on the command line
// from its MHERO_* environment variable.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil || commandLineOnly[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("environment %s: %w", envName(f.Name), setErr)
			}
		}
	})
	return err
}

// commandLineOnly are flags for one run, never taken from the environment:
// a confirmation left in a cron job's environment would let every run past
// the circuit breaker.
var commandLineOnly = map[string]bool{"confirm-retire": true, "full": true}

func envName(flagName string) string {
	b := []byte("MHERO_" + flagName)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
