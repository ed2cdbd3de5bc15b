package main

import (
	"cmp"
	"context"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/nyaruka/gocommon/i18n"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/mediator"
)

// mapLine is one line of map's output.
type mapLine struct {
	EntityID string            `json:"entity_id"`
	Status   string            `json:"status"`
	Contact  *mediator.Contact `json:"contact,omitempty"`
	Skipped  string            `json:"skipped,omitempty"`
	// Targeting holds the targeting fields by RapidPro key, and the contact
	// language as "language", resolved for skipped providers too (all but
	// one without an entity id).
	Targeting map[string]string `json:"targeting,omitempty"`
	Problems  []string          `json:"problems"`
}

const mapUsage = `Usage: mhero-mediator map [flags] FILE.xml

Reads a CSD document with no network and writes one JSON object per provider: the RapidPro contact it
maps to, or why it is skipped, and its targeting fields (by RapidPro key) and language. The facility and
organization directories are read from the same document, or from --facilities and --organizations.
A summary, with the references that did not resolve, goes to stderr.

Flags:
`

func runMap(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	fs.SetOutput(stderr)
	country := fs.String("country", "LR", "ISO 3166-1 alpha-2 country for phone numbers written without a country code")
	facilities := fs.String("facilities", "", "CSD document holding the facility directory (empty: FILE)")
	organizations := fs.String("organizations", "", "CSD document holding the organization directory (empty: FILE)")
	var t mediator.TargetingSettings
	var cadreNamesFile string
	targetingFlags(fs, &t, &cadreNamesFile)
	fs.Usage = func() {
		fmt.Fprint(stderr, mapUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	if t.DistrictLevel < 1 {
		return fmt.Errorf("--district-level %d: must be at least 1 (the root)", t.DistrictLevel)
	}
	if err := t.Validate(); err != nil {
		return err
	}
	cc, err := parseCountry(*country)
	if err != nil {
		return err
	}
	cadreNames, err := readCadreNames(cadreNamesFile)
	if err != nil {
		return err
	}
	file := fs.Arg(0)
	dir, err := readDirectories(file, *facilities, *organizations)
	if err != nil {
		return err
	}

	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()

	targeting := &mediator.Targeting{Settings: t, Directory: dir, CadreNames: cadreNames}
	mapper := mediator.Mapper{Country: cc, Targeting: targeting}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	var contacts int
	skipped := map[string]int{}
	stats, err := csd.DecodeProviders(f, csd.DefaultLimits, func(p *csd.Provider) error {
		m := mapper.Map(p)
		line := mapLine{EntityID: m.EntityID, Status: m.Status.String(), Skipped: m.Skipped, Problems: m.Problems}
		if line.Problems == nil {
			line.Problems = []string{}
		}
		if m.Targets != nil {
			line.Targeting = maps.Clone(m.Targets)
			line.Targeting["language"] = m.Language
		}
		if m.Skipped == "" {
			line.Contact = &m.Contact
			contacts++
		} else {
			skipped[m.Skipped]++
		}
		return enc.Encode(line)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	unresolved := ""
	if len(targeting.Counts) > 0 {
		unresolved = "; unresolved references" + formatCounts(targeting.Counts)
	}
	fmt.Fprintf(stderr, "%s: %d providers, %d contacts, %d skipped%s; %d facilities, %d organizations%s\n",
		file, stats.Providers, contacts, stats.Providers-contacts, formatCounts(skipped),
		len(dir.Facilities), len(dir.Organizations), unresolved)
	return nil
}

// readDirectories reads the facility and organization directories from
// their files, each defaulting to the providers' document when that is a
// whole CSD document (a bare provider element has no directories).
func readDirectories(providers, facilities, organizations string) (*mediator.Directory, error) {
	dir := mediator.NewDirectory()
	if facilities == "" || organizations == "" {
		csdRoot, err := isCSDDocument(providers)
		if err != nil {
			return nil, err
		}
		if !csdRoot {
			return dir, nil
		}
	}
	for _, src := range []struct {
		kind csd.EntityKind
		path string
	}{{csd.KindFacility, facilities}, {csd.KindOrganization, organizations}} {
		path := cmp.Or(src.path, providers)
		if err := readEntities(dir, src.kind, path); err != nil {
			return nil, err
		}
	}
	return dir, nil
}

func readEntities(dir *mediator.Directory, kind csd.EntityKind, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s directory: %w", kind, err)
	}
	defer f.Close()
	_, err = csd.DecodeEntities(f, csd.DefaultLimits, kind, func(e *csd.Entity) error {
		dir.Add(kind, e)
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s directory %s: %w", kind, path, err)
	}
	return nil
}

// isCSDDocument tells whether the document's root element is CSD. What
// cannot be read as XML is left for the provider decoder to explain.
func isCSDDocument(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	dec.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil }
	for {
		tok, err := dec.Token()
		if err != nil {
			return false, nil
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se.Name.Local == "CSD", nil
		}
	}
}

// formatCounts renders reason counts as " (a 1, b 2)", sorted by reason.
func formatCounts(counts map[string]int) string {
	if len(counts) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// parseCountry accepts an ISO 3166-1 alpha-2 code in any case, or "" for
// none.
func parseCountry(s string) (i18n.Country, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if s == "" {
		return "", nil
	}
	if len(s) != 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' {
		return "", fmt.Errorf("country %q is not an ISO 3166-1 alpha-2 code such as LR", s)
	}
	return i18n.Country(s), nil
}
