package main

import (
	"context"
	"encoding/json"
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
	Problems []string          `json:"problems"`
}

func runMap(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	fs.SetOutput(stderr)
	country := fs.String("country", "LR", "ISO 3166-1 alpha-2 country for phone numbers written without a country code")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mhero-mediator map [--country CC] FILE.xml\n\nReads a CSD document with no network and writes one JSON object per provider.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	cc, err := parseCountry(*country)
	if err != nil {
		return err
	}

	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()

	mapper := mediator.Mapper{Country: cc}
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
		if m.Skipped == "" {
			line.Contact = &m.Contact
			contacts++
		} else {
			skipped[m.Skipped]++
		}
		return enc.Encode(line)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	fmt.Fprintf(stderr, "%s: %d providers, %d contacts, %d skipped%s\n",
		fs.Arg(0), stats.Providers, contacts, stats.Providers-contacts, formatCounts(skipped))
	return nil
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
