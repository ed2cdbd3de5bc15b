package csd_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
)

// corpusDir holds the real CSD documents the tests read, copied into the
// repository with their origin and licence (see its README.md).
const corpusDir = "../testdata/csd-corpus"

// corpusDocuments are the documents checkCorpusDocument asserts on by name;
// each must be in the corpus, so that losing one fails rather than narrows
// the test.
var corpusDocuments = []string{
	"openinfoman/service_directories/providers.xml",
	"openinfoman/service_directories/CSD-Providers-Connectathon-20150120.xml",
	"openinfoman/service_directories/CSD-Providers-Connectathon-20131227.xml",
	"openinfoman/service_directories/CSD-Providers-Connectathon-20131201draft.xml",
	"openhim-mediator-mhero/rapidproCSDAdapter.csdProvider.fragment.xml",
	"openhim-mediator-mhero/rapidproCSDAdapter.csdProviderMultiName.fragment.xml",
	"openhim-mediator-mhero/rapidproCSDAdapter.csdProviderNoTel.fragment.xml",
	"openhim-mediator-mhero/test-csd-server.response.xml",
}

// corpusFiles lists the XML files (schema included) of the corpus. A missing
// corpus, or a missing document of corpusDocuments, fails the test.
func corpusFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(corpusDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".xml") || strings.HasSuffix(path, ".xsd")) {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatalf("corpus %s: %v", corpusDir, err)
	}
	for _, doc := range corpusDocuments {
		if _, err := os.Stat(filepath.Join(corpusDir, doc)); err != nil {
			t.Errorf("corpus document missing: %v", err)
		}
	}
	return files
}

// connectathonPath is where a Connectathon 2015 document of the corpus
// lives: value sets under svs/, directories under service_directories/.
func connectathonPath(name string) string {
	dir := "service_directories"
	if strings.HasSuffix(name, "Code.xml") {
		dir = "svs"
	}
	return filepath.Join(corpusDir, "openinfoman", dir, name)
}

// notDirectories are corpus files that are valid XML but not CSD directories:
// value sets, the schema, the stored function definition and request bodies.
// Each must fail with an error naming the line and the element expected.
var notDirectories = map[string]string{
	"openinfoman/schema/CSD.xsd":                                                                "found schema (namespace http://www.w3.org/2001/XMLSchema)",
	"openinfoman/schema/provider_search.careServicesFunction.xml":                               "found careServicesFunction (namespace urn:ihe:iti:csd:2013)",
	"openinfoman/requests/230-get-radiology-providers.xml":                                      "found careServicesRequest (namespace urn:ihe:iti:csd:2013)",
	"openinfoman/requests/get-all-facilities.xml":                                               "found careServicesRequest",
	"openinfoman/requests/get-all-providers.xml":                                                "found careServicesRequest",
	"openinfoman/requests/get_all_organizations.xml":                                            "found careServicesRequest",
	"openinfoman/requests/provider_search_by_id.xml":                                            "found careServicesRequest",
	"openinfoman/requests/provider_search_by_otherid.xml":                                       "found careServicesRequest",
	"openinfoman/requests/provider_search_encapsulated.xml":                                     "found careServicesRequest",
	"openinfoman/svs/1.3.6.1.4.1.21367.200.105-providerTypeCode.xml":                            "found ValueSet (namespace urn:ihe:iti:svs:2008)",
	"openinfoman/svs/1.3.6.1.4.1.21367.200.106-providerStatusCode.xml":                          "found ValueSet",
	"openinfoman/svs/2.25.309768652999692686176651983274504471835.999.400-contactPointCode.xml": "found ValueSet",
	"openinfoman/svs/2.25.309768652999692686176651983274504471835.999.401-IDTypeCode.xml":       "found ValueSet",
}

func TestDecodeCorpus(t *testing.T) {
	files := corpusFiles(t)
	seenNotDirectories := 0
	for _, path := range files {
		rel, _ := filepath.Rel(corpusDir, path)
		rel = filepath.ToSlash(rel)
		t.Run(rel, func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var got []*csd.Provider
			stats, err := csd.DecodeProviders(f, csd.Limits{}, func(p *csd.Provider) error {
				got = append(got, p)
				return nil
			})
			if want, ok := notDirectories[rel]; ok {
				seenNotDirectories++
				var se *csd.SyntaxError
				if !errors.As(err, &se) || se.Line < 1 || !strings.Contains(err.Error(), "expected element CSD or provider, "+want) {
					t.Fatalf("error = %v, want a SyntaxError with a line, %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeProviders: %v", err)
			}
			for _, p := range got {
				if p.EntityID == "" || p.Line < 1 {
					t.Errorf("provider at line %d has id %q", p.Line, p.EntityID)
				}
			}
			checkCorpusDocument(t, rel, got, stats)
		})
	}
	if seenNotDirectories != len(notDirectories) {
		t.Errorf("saw %d of the %d non-directory files; the corpus changed", seenNotDirectories, len(notDirectories))
	}
}

// checkCorpusDocument asserts what the corpus README says each document holds.
func checkCorpusDocument(t *testing.T, rel string, ps []*csd.Provider, stats csd.DocumentStats) {
	name := filepath.Base(rel)
	switch {
	case name == "providers.xml":
		if len(ps) != 1014 {
			t.Errorf("%d providers, want 1014", len(ps))
		}
		for _, p := range ps {
			if len(p.ContactPoints) != 0 || p.Record.State() != csd.StatusActive || len(p.CodedTypes) == 0 || len(p.Problems) != 0 {
				t.Errorf("provider %s: contacts %v, status %q, codedTypes %v, problems %q", p.EntityID, p.ContactPoints, p.Record.Status, p.CodedTypes, p.Problems)
				break
			}
		}
	case name == "CSD-Providers-Connectathon-20150120.xml":
		if len(ps) != 9 {
			t.Fatalf("%d providers, want 9", len(ps))
		}
		for _, p := range ps {
			if !strings.HasPrefix(p.EntityID, "urn:uuid:") || len(p.ContactValues(csd.ContactPhone)) == 0 ||
				len(p.ContactValues(csd.ContactFax)) == 0 || p.Record.Status != "Active" || p.Record.Updated.IsZero() {
				t.Errorf("provider %s: %+v", p.EntityID, p)
			}
		}
		first := ps[0]
		if got := first.ContactValues(csd.ContactPhone); !reflect.DeepEqual(got, []string{"555-777-1111"}) {
			t.Errorf("first provider phones = %q", got)
		}
		if got := first.Names[0]; got.CommonNames[0] != "Banargee, Dev" || got.Honorific != "Dr." || got.Surname != "Banerjee" {
			t.Errorf("first provider name = %+v", got)
		}
		if len(first.Organizations) != 2 || len(first.Languages) != 2 || len(first.Specialties) != 1 {
			t.Errorf("first provider = %+v", first)
		}
		shared := 0
		for _, p := range ps {
			for _, v := range p.ContactValues(csd.ContactPhone) {
				if v == "555-777-4945" {
					shared++
				}
			}
		}
		if shared != 3 {
			t.Errorf("555-777-4945 is shared by %d providers, want 3", shared)
		}
	case name == "CSD-Providers-Connectathon-20131227.xml":
		if len(ps) != 9 {
			t.Fatalf("%d providers, want 9", len(ps))
		}
		for _, p := range ps {
			if !strings.HasPrefix(p.EntityID, "urn:oid:") || p.Record.Status != "106-001" || p.Record.State() != csd.StatusActive {
				t.Errorf("provider %s: status %q", p.EntityID, p.Record.Status)
			}
		}
	case name == "CSD-Providers-Connectathon-20131201draft.xml":
		if len(ps) != 4 {
			t.Errorf("%d providers, want 4", len(ps))
		}
	case strings.HasSuffix(name, ".fragment.xml"):
		if len(ps) != 1 || stats.Root != "provider" {
			t.Fatalf("%d providers with root %q, want 1 provider root", len(ps), stats.Root)
		}
		p := ps[0]
		switch name {
		case "rapidproCSDAdapter.csdProviderMultiName.fragment.xml":
			if got := p.Names[0].CommonNames; !reflect.DeepEqual(got, []string{"Banargee, Dev", "Dev Banargee"}) {
				t.Errorf("CommonNames = %q", got)
			}
		case "rapidproCSDAdapter.csdProviderNoTel.fragment.xml":
			if len(p.ContactPoints) != 0 {
				t.Errorf("ContactPoints = %v", p.ContactPoints)
			}
		case "rapidproCSDAdapter.csdProvider.fragment.xml":
			if got := p.ContactValues(csd.ContactPhone); !reflect.DeepEqual(got, []string{"555-777-1111", "555-777-2222"}) {
				t.Errorf("phones = %q", got)
			}
		}
	case name == "test-csd-server.response.xml":
		if got := ids(ps); len(got) != 2 || len(ps[0].ContactValues(csd.ContactPhone)) != 2 {
			t.Errorf("providers = %q", got)
		}
	default:
		// Facility, organization and service directories hold no providers.
		if len(ps) != 0 || stats.Root != "CSD" {
			t.Errorf("%d providers, root %q; want 0 in a CSD document", len(ps), stats.Root)
		}
	}
}
