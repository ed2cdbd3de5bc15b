package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/mediator"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

const (
	demoToken        = "demo-token-0123456789abcdef0123456789abcd"
	demoSyncUser     = "openhim"
	demoSyncPassword = "demo-sync-password"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keepServing := fs.Bool("serve", false, "keep everything running after the first sync and print the URLs to try")
	logLevel := fs.String("log-level", "warn", "log level of the mediator: debug, info, warn or error")
	fixture := fs.String("fixture", filepath.Join("testdata", "providers-demo.xml"), "CSD document the demo registry serves")
	if err := parseFlags(fs, args); err != nil {
		return err
	}

	doc, err := os.ReadFile(*fixture)
	if err != nil {
		return fmt.Errorf("demo fixture (run from the repository root, or pass --fixture): %w", err)
	}
	registry, err := csdtest.New(doc, csdtest.Options{Document: "Providers"})
	if err != nil {
		return fmt.Errorf("demo registry: %w", err)
	}
	defer registry.Close()
	workspace := rapidprotest.New(rapidprotest.Options{Token: demoToken, Country: "LR"})
	defer workspace.Close()
	// A contact someone entered by hand, in a group of their own: the sync
	// adopts it by phone and leaves that group alone.
	workspace.AddGroup("Kakata nurses")
	workspace.AddContact(rapidpro.Contact{Name: "Grace S.", URNs: []string{"tel:+231777123406"},
		Groups: []rapidpro.GroupRef{{Name: "Kakata nurses"}}})
	core := openhimtest.New(openhimtest.Options{})
	defer core.Close()

	dir, err := os.MkdirTemp("", "mhero-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return err
	}
	cfg := &config{}
	cfg.register(flag.NewFlagSet("defaults", flag.ContinueOnError))
	cfg.settings.OpenInfoMan.URL = registry.URL()
	cfg.settings.RapidPro.URL = workspace.URL()
	cfg.settings.RapidPro.Token = demoToken
	cfg.rapidProRate = 0 // the emulator sets no limit; a real workspace keeps the default
	cfg.stateFile = filepath.Join(dir, "state.db")
	cfg.bind, cfg.port, cfg.publicHost = "127.0.0.1", port, "127.0.0.1"
	cfg.syncUsername, cfg.syncPassword = demoSyncUser, demoSyncPassword
	cfg.openHIMURL, cfg.openHIMUsername, cfg.openHIMPassword = core.URL(), "root@openhim.org", "openhim-password"
	cfg.logLevel = *logLevel
	if err := cfg.check(); err != nil {
		return err
	}
	logger, err := cfg.logger(stderr)
	if err != nil {
		return err
	}
	svc, err := newService(cfg, logger)
	if err != nil {
		return err
	}
	defer svc.close()

	svcCtx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- svc.serve(svcCtx, nil) }()
	syncURL := fmt.Sprintf("http://127.0.0.1:%d/sync", port)
	if err := waitReady(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), served); err != nil {
		return err
	}

	fmt.Fprintf(stdout, "Registered %s with the fake OpenHIM core; triggering %s as its polling channel does.\n\n", cfg.mediatorURN, syncURL)
	// Core calls the route the registration declared, not syncURL itself.
	tx, err := core.Poll(ctx, cfg.mediatorURN)
	if err != nil {
		return fmt.Errorf("demo trigger: %w", err)
	}
	if tx.ValidationError != nil {
		return fmt.Errorf("demo: OpenHIM would not record the response: %w", tx.ValidationError)
	}
	if tx.StoreError != nil {
		return fmt.Errorf("demo: OpenHIM would not store the response: %w", tx.StoreError)
	}
	pretty, err := json.MarshalIndent(tx.Response, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "OpenHIM transaction %s: %s\n%s\n\n", tx.ID, tx.Response.Status, pretty)
	printContacts(stdout, workspace.Contacts())

	if *keepServing {
		fmt.Fprintf(stdout, "\nEverything keeps running until Ctrl-C:\n"+
			"  trigger a sync:   curl -u %s:%s %s\n"+
			"  metrics:          http://127.0.0.1:%d/metrics\n"+
			"  health:           http://127.0.0.1:%d/healthz and /readyz\n"+
			"  OpenInfoMan:      %s/CSD/csr/Providers/careServicesRequest/urn:ihe:iti:csd:2014:stored-function:provider-search\n"+
			"  RapidPro:         curl -H 'Authorization: Token %s' %s/api/v2/contacts.json\n"+
			"  OpenHIM core:     %s (root@openhim.org / openhim-password)\n",
			demoSyncUser, demoSyncPassword, syncURL, port, port, registry.URL(), demoToken, workspace.URL(), core.URL())
		<-ctx.Done()
	}
	stop()
	return <-served
}

// waitReady waits until the service is ready (registered with core and its
// console config applied, so that the poll is not answered 503), or failed.
func waitReady(ctx context.Context, readyURL string, served <-chan error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if resp, err := http.Get(readyURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-served:
			return fmt.Errorf("demo: the service stopped before registering: %v", err)
		case <-deadline:
			return fmt.Errorf("demo: the service did not register with OpenHIM within 30s")
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// printContacts lists the contacts with the fields officials target by
// (under their default keys).
func printContacts(w io.Writer, contacts []rapidpro.Contact) {
	fmt.Fprintf(w, "RapidPro now holds %d contacts:\n", len(contacts))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPHONES\tGROUPS\tCADRE\tFACILITY\tDISTRICT\tGLOBALID")
	for _, c := range contacts {
		var groups []string
		for _, g := range c.Groups {
			groups = append(groups, g.Name)
		}
		field := func(key string) string {
			if v := c.Fields[key]; v != nil {
				return *v
			}
			return ""
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, strings.Join(c.URNs, " "), strings.Join(groups, ", "),
			field(mediator.TargetCadre), field(mediator.TargetFacility), field(mediator.TargetDistrict), field(mediator.FieldGlobalID))
	}
	tw.Flush()
}

// printReport writes a run's outcome for a person at a terminal.
func printReport(w io.Writer, r *mediator.Report) {
	fmt.Fprintf(w, "status: %s (%s)\n", r.Status, r.Finished.Sub(r.Started).Round(time.Millisecond))
	if r.Err != nil {
		fmt.Fprintf(w, "error: %v\n", r.Err)
	}
	counts := r.Counts()
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(w, "%s: %s\n", k, counts[k])
	}
	for _, rj := range r.Rejects {
		fmt.Fprintf(w, "rejected %s: %s: %s\n", rj.EntityID, rj.Reason, rj.Detail)
	}
	if r.Full {
		fmt.Fprintln(w, "full reconciliation: the whole registry was compared with the group")
	}
	if r.Breaker != "" {
		fmt.Fprintf(w, "circuit breaker, %d retirements held: %s\n", r.RetireHeld, r.Breaker)
	}
	for _, p := range r.FieldProblems {
		fmt.Fprintf(w, "field problem: %s\n", p)
	}
	if r.StoppedBy != "" {
		fmt.Fprintf(w, "stopped by: %s\n", r.StoppedBy)
	}
	if r.PullIncomplete != "" {
		fmt.Fprintf(w, "pull incomplete: %s\n", r.PullIncomplete)
	}
}
