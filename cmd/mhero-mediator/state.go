package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/openhie/mhero-mediator/mediator"
)

const stateUsage = `Usage:
  mhero-mediator state show [--state-file FILE]
      where the state stands: watermarks, pending and rejected work, fingerprints (JSON)
  mhero-mediator state reset --watermark [--state-file FILE]
      make the next run pull every provider and reconcile, keeping every contact link

Both refuse while a service holds the file: ask it with GET /status, or stop it first.
`

func runState(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "show" && args[0] != "reset") {
		fmt.Fprint(stderr, stateUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("state "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, stateUsage); fs.PrintDefaults() }
	path := fs.String("state-file", "mhero-state.db", "the service's state file")
	watermark := false
	if args[0] == "reset" {
		fs.BoolVar(&watermark, "watermark", false, "forget the watermark (and the last reconciliation): the next run pulls every provider")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if args[0] == "show" {
		// A private copy: reading never changes the file, even one an
		// older release wrote.
		st, err := mediator.OpenStateCopy(*path)
		if err != nil {
			return err
		}
		defer st.Close()
		sum, err := st.Summary()
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	if !watermark {
		fmt.Fprint(stderr, "state reset: say what to reset (--watermark)\n\n"+stateUsage)
		return errUsage
	}
	st, err := mediator.OpenState(*path)
	if err != nil {
		return fmt.Errorf("%w (stop the service holding it first)", err)
	}
	defer st.Close()
	if err := st.ResetWatermark(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: watermark reset; the next run pulls every provider and reconciles, and every contact link is kept\n", *path)
	return nil
}
