package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/mediator"
	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/rapidpro"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

const planUsage = `Usage: mhero-mediator plan [sync flags] [--full] [--json] [--csd-file FILE] [--rapidpro-snapshot FILE]

Works out what 'mhero-mediator sync' would do now, provider by provider, and does none of it: it reads
OpenInfoMan and RapidPro as a sync does, but writes nothing to RapidPro, OpenInfoMan or the state file
(it plans on a private copy of --state-file, which a running service must not hold: ask the service for
a plan with POST /sync?dry_run=true instead).

Prints one line per provider on stdout (entity_id, action and detail, tab-separated; a JSON object with
--json), then on stderr the totals per action and what a sync would create first (the group, fields).

--csd-file serves a CSD document in-process instead of asking OpenInfoMan: the providers and, if the
document has them, the facility and organization directories.

--rapidpro-snapshot serves an in-process RapidPro workspace holding the contacts of a snapshot instead of
asking RapidPro, with the groups and fields those contacts mention (as text fields). It takes a JSON
array of API v2 contacts, or contacts.json pages as curl prints them, one after another; a snapshot of
the whole workspace plans as a first sync does. Make one with curl and jq:

  u="https://rapidpro.example.org/api/v2/contacts.json"
  while [ "$u" != null ]; do
    u=$(curl -sf -H "Authorization: Token $TOKEN" "$u" | tee -a snapshot.json | jq -r .next) || break
  done

A snapshot does not say the workspace's country: give --country.

Flags:
`

// snapshotToken is the in-process workspace's token; it guards nothing.
const snapshotToken = "plan-snapshot-token-0123456789abcdef0123"

// planActions orders the totals: creations first, then what changes an
// existing contact, then what is left undone.
var planActions = []string{
	mediator.OutcomeCreate, mediator.OutcomeUpdate, mediator.OutcomeUnchanged, mediator.OutcomeJoinGroup,
	mediator.OutcomeRejoin, mediator.OutcomeLeave, mediator.OutcomeBlock, mediator.OutcomeConflict,
	mediator.OutcomeSkip, mediator.OutcomeReject, mediator.OutcomeDefer, mediator.OutcomeHeld,
}

func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := &config{}
	cfg.register(fs)
	var opts mediator.RunOptions
	runFlags(fs, &opts)
	csdFile := fs.String("csd-file", "", "serve this CSD document in-process instead of asking OpenInfoMan")
	snapshot := fs.String("rapidpro-snapshot", "", "serve an in-process RapidPro holding the contacts of this snapshot instead of asking RapidPro")
	asJSON := fs.Bool("json", false, "print each provider's line as a JSON object")
	// The summary on stderr says what the run's warnings would: only errors
	// are logged unless asked.
	if f := fs.Lookup("log-level"); f != nil {
		f.DefValue = "error"
		_ = f.Value.Set("error")
	}
	fs.Usage = func() {
		fmt.Fprint(stderr, planUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "plan takes no arguments, got %q\n", fs.Args())
		return errUsage
	}
	opts.DryRun = true

	if *csdFile != "" {
		registry, err := csdFileRegistry(*csdFile, cfg.settings.OpenInfoMan.Document)
		if err != nil {
			return err
		}
		defer registry.Close()
		oim := &cfg.settings.OpenInfoMan
		oim.URL, oim.Username, oim.Password = registry.URL(), "", ""
		// The one document holds the directories too.
		cfg.settings.Targeting.FacilitiesDocument, cfg.settings.Targeting.OrganizationsDocument = "", ""
	}
	if *snapshot != "" {
		country := strings.ToUpper(strings.TrimSpace(cfg.settings.RapidPro.Country))
		if country == "" {
			return errors.New("--rapidpro-snapshot needs --country: a snapshot does not say the workspace's country")
		}
		workspace, err := snapshotWorkspace(*snapshot, country)
		if err != nil {
			return err
		}
		defer workspace.Close()
		cfg.settings.RapidPro.URL, cfg.settings.RapidPro.Token = workspace.URL(), workspace.Token()
		cfg.rapidProRate = 0 // the emulator sets no limit
	}
	if err := cfg.check(); err != nil {
		return err
	}
	logger, err := cfg.logger(stderr)
	if err != nil {
		return err
	}
	svc, err := buildService(cfg, logger, mediator.OpenStateCopy)
	if err != nil {
		return err
	}
	defer svc.close()
	runCtx, cancel := context.WithTimeout(ctx, cfg.syncTimeout)
	defer cancel()
	report, err := svc.syncer.RunWith(runCtx, opts)
	if err != nil {
		return err
	}
	if err := printPlan(stdout, report.Plan, *asJSON); err != nil {
		return err
	}
	printPlanSummary(stderr, report)
	if report.Status == openhim.StatusFailed {
		return fmt.Errorf("plan failed: %w", report.Err)
	}
	return nil
}

// csdFileRegistry serves a CSD document file as the OpenInfoMan document
// name.
func csdFileRegistry(path, name string) (*csdtest.Server, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("csd-file: %w", err)
	}
	registry, err := csdtest.New(doc, csdtest.Options{Document: name})
	if err != nil {
		return nil, fmt.Errorf("csd-file %s: %w", path, err)
	}
	return registry, nil
}

// snapshotWorkspace starts a RapidPro emulator holding the snapshot's
// contacts.
func snapshotWorkspace(path, country string) (*rapidprotest.Server, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rapidpro-snapshot: %w", err)
	}
	defer f.Close()
	contacts, err := readSnapshot(f)
	if err != nil {
		return nil, fmt.Errorf("rapidpro-snapshot %s: %w", path, err)
	}
	ws := rapidprotest.New(rapidprotest.Options{Token: snapshotToken, Country: country})
	if err := seedWorkspace(ws, contacts); err != nil {
		ws.Close()
		return nil, fmt.Errorf("rapidpro-snapshot %s: %w", path, err)
	}
	return ws, nil
}

// readSnapshot reads RapidPro API v2 contacts from a JSON array of contacts,
// or from contacts.json pages ({"next": …, "results": […]}), one JSON value
// after another, as curl appends them. A contact listed twice (a page read
// while it changed) counts once, in its latest form; deleted contacts are
// left out.
func readSnapshot(r io.Reader) ([]rapidpro.Contact, error) {
	dec := json.NewDecoder(r)
	var out []rapidpro.Contact
	at := map[string]int{}
	for n := 1; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("JSON value %d: %w", n, err)
		}
		var page []rapidpro.Contact
		switch raw = bytes.TrimSpace(raw); raw[0] {
		case '[':
			if err := json.Unmarshal(raw, &page); err != nil {
				return nil, fmt.Errorf("JSON value %d: not an array of contacts: %w", n, err)
			}
		case '{':
			var envelope struct {
				Results *[]rapidpro.Contact `json:"results"`
			}
			if err := json.Unmarshal(raw, &envelope); err != nil {
				return nil, fmt.Errorf("JSON value %d: not a contacts.json page: %w", n, err)
			}
			if envelope.Results == nil {
				return nil, fmt.Errorf("JSON value %d: an object without results, not a contacts.json page", n)
			}
			page = *envelope.Results
		default:
			return nil, fmt.Errorf("JSON value %d: neither an array of contacts nor a contacts.json page", n)
		}
		for _, c := range page {
			c.UUID = strings.ToLower(strings.TrimSpace(c.UUID))
			switch i, seen := at[c.UUID]; {
			case c.UUID == "":
				return nil, fmt.Errorf("JSON value %d: a contact without uuid", n)
			case c.Status == "":
				// Deleted: all of status, blocked and stopped are null.
			case !seen:
				at[c.UUID] = len(out)
				out = append(out, c)
			case c.ModifiedOn.After(out[i].ModifiedOn):
				out[i] = c
			}
		}
	}
	return out, nil
}

// seedWorkspace adds the contacts to ws, after the fields and groups they
// mention. Every field is text: a contact does not say a field's type.
func seedWorkspace(ws *rapidprotest.Server, contacts []rapidpro.Contact) error {
	fields, groups := map[string]bool{}, map[string]bool{}
	for _, c := range contacts {
		for k := range c.Fields {
			fields[k] = true
		}
		for _, g := range c.Groups {
			groups[g.Name] = true
		}
	}
	for _, key := range slices.Sorted(maps.Keys(fields)) {
		if f := ws.AddField(key, "text"); f.Key != key {
			return fmt.Errorf("field key %q: the emulator derives %q from it", key, f.Key)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		ws.AddGroup(name)
	}
	for _, c := range contacts {
		if err := addContact(ws, c); err != nil {
			return err
		}
	}
	return nil
}

// addContact seeds one contact; the emulator panics on what its API would
// refuse (an invalid or taken URN), which here is bad input, not a bug.
func addContact(ws *rapidprotest.Server, c rapidpro.Contact) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("contact %s: %v", c.UUID, p)
		}
	}()
	// The emulator's groups have UUIDs of their own: match them by name.
	for i := range c.Groups {
		c.Groups[i].UUID = ""
	}
	ws.AddContact(c)
	return nil
}

func printPlan(w io.Writer, lines []mediator.PlanLine, asJSON bool) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, l := range lines {
		var err error
		if asJSON {
			err = enc.Encode(l)
		} else {
			_, err = fmt.Fprintf(w, "%s\t%s\t%s\n", l.EntityID, l.Action, l.Detail)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// printPlanSummary writes the totals and what a person must know about the
// plan: what a sync would create first, and what would hold it back.
func printPlanSummary(w io.Writer, r *mediator.Report) {
	kind := "plan"
	if r.Full {
		kind = "plan of a full reconciliation"
	}
	fmt.Fprintf(w, "%s: %s; nothing was written\n", kind, r.Status)
	if r.Err != nil {
		fmt.Fprintf(w, "error: %v\n", r.Err)
	}
	total := 0
	for _, a := range planOrder(r.Actions) {
		fmt.Fprintf(w, "%-12s %d\n", a, r.Actions[a])
		total += r.Actions[a]
	}
	fmt.Fprintf(w, "%-12s %d\n", "total", total)
	if len(r.Planned) > 0 {
		fmt.Fprintf(w, "a sync would first create %s\n", strings.Join(r.Planned, ", "))
	}
	if r.Breaker != "" {
		fmt.Fprintf(w, "circuit breaker, %d retirements held: %s\n", r.RetireHeld, r.Breaker)
	}
	for _, p := range r.FieldProblems {
		fmt.Fprintf(w, "field problem: %s\n", p)
	}
	if len(r.Targeting) > 0 {
		fmt.Fprintf(w, "unresolved references:%s\n", formatCounts(r.Targeting))
	}
	if r.Retargeted {
		fmt.Fprintln(w, "the state was made for another target (RapidPro workspace or group, OpenInfoMan document, inactive policy): planned as a first sync")
	}
	if r.PullIncomplete != "" {
		fmt.Fprintf(w, "pull incomplete: %s\n", r.PullIncomplete)
	}
	if r.StoppedBy != "" {
		fmt.Fprintf(w, "stopped by: %s\n", r.StoppedBy)
	}
}

// planOrder lists the actions present, known ones in planActions order.
func planOrder(actions map[string]int) []string {
	var out []string
	for _, a := range planActions {
		if actions[a] > 0 {
			out = append(out, a)
		}
	}
	for _, a := range slices.Sorted(maps.Keys(actions)) {
		if !slices.Contains(planActions, a) && actions[a] > 0 {
			out = append(out, a)
		}
	}
	return out
}
