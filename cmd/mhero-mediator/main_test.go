package main

import (
	"github.com/openhie/mhero-mediator/mediator"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

// corpus holds the real CSD documents the tests read (see its README.md).
const corpus = "../../testdata/csd-corpus"

func runMapCommand(t *testing.T, args ...string) ([]mapLine, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"map"}, args...), &stdout, &stderr)
	var lines []mapLine
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l mapLine
		if jerr := json.Unmarshal(sc.Bytes(), &l); jerr != nil {
			t.Fatalf("output line %q is not JSON: %v", sc.Text(), jerr)
		}
		lines = append(lines, l)
	}
	return lines, stderr.String(), err
}

func TestMapProvidersWithoutPhones(t *testing.T) {
	lines, summary, err := runMapCommand(t, filepath.Join(corpus, "openinfoman/service_directories/providers.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1014 {
		t.Fatalf("%d providers, want 1014", len(lines))
	}
	for _, l := range lines {
		if l.Contact != nil || l.Skipped != "no_phone" {
			t.Fatalf("provider %s: contact %v skipped %q, want skipped for no phone", l.EntityID, l.Contact, l.Skipped)
		}
	}
	if want := "1014 providers, 0 contacts, 1014 skipped (no_phone 1014)"; !strings.Contains(summary, want) {
		t.Fatalf("summary %q, want it to say %q", summary, want)
	}
}

func TestMapConnectathonProviders(t *testing.T) {
	lines, summary, err := runMapCommand(t, "--country", "US", filepath.Join(corpus, "openinfoman/service_directories/CSD-Providers-Connectathon-20150120.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 9 {
		t.Fatalf("%d providers, want 9; summary %q", len(lines), summary)
	}
	e164 := regexp.MustCompile(`^tel:\+1\d{10}$`)
	for _, l := range lines {
		if l.Contact == nil {
			t.Errorf("provider %s skipped (%s): every Connectathon provider has a BP phone", l.EntityID, l.Skipped)
			continue
		}
		for _, u := range l.Contact.URNs {
			if !e164.MatchString(u) {
				t.Errorf("provider %s: urn %q is not an E.164 +1 tel URN", l.EntityID, u)
			}
			if strings.Contains(u, "5558") { // every FAX in the document is 555-888-xxxx
				t.Errorf("provider %s: urn %q is a FAX number", l.EntityID, u)
			}
		}
		if l.Contact.Fields["globalid"] != strings.ToLower(l.EntityID) {
			t.Errorf("provider %s: globalid %q", l.EntityID, l.Contact.Fields["globalid"])
		}
	}
}

func TestMapFirstCommonNameWins(t *testing.T) {
	lines, _, err := runMapCommand(t, "--country", "US", filepath.Join(corpus, "openhim-mediator-mhero/rapidproCSDAdapter.csdProviderMultiName.fragment.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0].Contact == nil || lines[0].Contact.Name != "Banargee, Dev" {
		t.Fatalf("lines = %+v, want one contact named %q", lines, "Banargee, Dev")
	}
	if got := strings.Join(lines[0].Contact.URNs, " "); got != "tel:+15557771111 tel:+15557772222" {
		t.Fatalf("urns = %s", got)
	}
}

// Every provider document of the corpus must map without failing.
func TestMapWholeCorpus(t *testing.T) {
	docs, err := filepath.Glob(filepath.Join(corpus, "*", "*", "CSD-Providers-*.xml"))
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob(filepath.Join(corpus, "openhim-mediator-mhero", "*.xml"))
	docs = append(docs, more...)
	docs = append(docs, filepath.Join(corpus, "openinfoman/service_directories/providers.xml"))
	if len(docs) < 8 {
		t.Fatalf("found %d provider documents under %s, want at least 8", len(docs), corpus)
	}
	for _, doc := range docs {
		t.Run(filepath.Base(doc), func(t *testing.T) {
			lines, summary, err := runMapCommand(t, doc)
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) == 0 || !strings.Contains(summary, "providers") {
				t.Fatalf("%d providers, summary %q", len(lines), summary)
			}
		})
	}
}

func TestMapErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing file", []string{filepath.Join(dir, "absent.xml")}, "no such file"},
		{"not CSD", []string{write("page.xml", "<html>\n<body/></html>")}, "line 1"},
		{"malformed", []string{write("bad.xml", "<CSD xmlns=\"urn:ihe:iti:csd:2013\">\n<providerDirectory>\n<provider entityID=\"x\">\n</CSD>")}, "line"},
		{"bad country", []string{"--country", "Liberia", write("ok.xml", "<CSD/>")}, "not an ISO 3166-1 alpha-2 code"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runMapCommand(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	if _, _, err := runMapCommand(t); err != errUsage {
		t.Fatalf("map without a file: err = %v, want usage", err)
	}
}

// The README's configuration table must name every flag, with its default.
func TestReadmeListsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	(&config{}).register(fs)
	fs.VisitAll(func(f *flag.Flag) {
		row := regexp.MustCompile("(?m)^\\| `--" + regexp.QuoteMeta(f.Name) + "` \\|([^|]*)\\|")
		m := row.FindSubmatch(readme)
		if m == nil {
			t.Errorf("README.md has no configuration row for --%s", f.Name)
			return
		}
		documented := strings.Trim(strings.TrimSpace(string(m[1])), "`")
		if f.Name == "public-host" {
			return // the default is the machine's host name
		}
		if d, err := time.ParseDuration(documented); err == nil && d.String() == f.DefValue {
			return
		}
		if documented != f.DefValue {
			t.Errorf("README.md gives --%s default %q, the flag has %q", f.Name, documented, f.DefValue)
		}
	})
}

func TestEnvironmentSetsFlags(t *testing.T) {
	t.Setenv("MHERO_RAPIDPRO_GROUP", "Health Workers")
	t.Setenv("MHERO_OIM_PAGE_SIZE", "250")
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := &config{}
	cfg.register(fs)
	if err := parseFlags(fs, []string{"--oim-page-size", "100"}); err != nil {
		t.Fatal(err)
	}
	if cfg.settings.RapidPro.Group != "Health Workers" {
		t.Errorf("group = %q, want it from MHERO_RAPIDPRO_GROUP", cfg.settings.RapidPro.Group)
	}
	if cfg.settings.OpenInfoMan.PageSize != 100 {
		t.Errorf("page size = %d, want the command line to win over the environment", cfg.settings.OpenInfoMan.PageSize)
	}

	// A confirmation is for one run, given by a person: never from the
	// environment, where a cron job would keep it.
	t.Setenv("MHERO_CONFIRM_RETIRE", "true")
	t.Setenv("MHERO_FULL", "true")
	fs = flag.NewFlagSet("sync", flag.ContinueOnError)
	var o mediator.RunOptions
	runFlags(fs, &o)
	if err := parseFlags(fs, nil); err != nil {
		t.Fatal(err)
	}
	if o.ConfirmRetire || o.Full {
		t.Fatalf("run options %+v taken from the environment", o)
	}

	t.Setenv("MHERO_PORT", "eighty")
	fs = flag.NewFlagSet("serve", flag.ContinueOnError)
	(&config{}).register(fs)
	if err := parseFlags(fs, nil); err == nil || !strings.Contains(err.Error(), "MHERO_PORT") {
		t.Fatalf("err = %v, want a bad MHERO_PORT named", err)
	}
}

// The demo is the README's first command: it must run the whole path and
// show the contacts it made.
func TestDemo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"demo", "--fixture", "../../testdata/providers-demo.xml"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("demo: %v\nstderr:\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"Completed with error(s)", `"created": "15"`, "RapidPro now holds 16 contacts",
		"Grace Sirleaf", "Kakata nurses, mHero", "tel:+231886123402 tel:+231777123402",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// Contacts carry the targeting fields the fixture's places resolve to.
	rows := map[string][]string{
		"Grace Sirleaf ":  {"Midwife", "Cinta Clinic", "Kakata"},
		"Comfort Wesseh ": {"Community Health Worker", "Kpaai Community Clinic", "Gbarnga"},
	}
	for name, cells := range rows {
		i := strings.Index(out, "\n"+name)
		if i < 0 {
			t.Errorf("demo output has no row for %s", name)
			continue
		}
		row, _, _ := strings.Cut(out[i+1:], "\n")
		for _, cell := range cells {
			if !strings.Contains(row, "  "+cell+"  ") {
				t.Errorf("row %q lacks %q", row, cell)
			}
		}
	}
	if strings.Contains(out, demoToken) || strings.Contains(out, demoSyncPassword) {
		t.Errorf("demo printed a secret in the OpenHIM response:\n%s", out)
	}
}

// serve registers with OpenHIM, reports ready, and takes the settings an
// operator changes in the console; the port it registers is the one it
// listens on.
func TestServeRegistersAndTakesConsoleConfig(t *testing.T) {
	core := openhimtest.New(openhimtest.Options{})
	defer core.Close()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	svc, err := commandService("serve", []string{
		"--rapidpro-url", "http://127.0.0.1:1", "--rapidpro-token", "t0ken-not-used",
		"--state-file", filepath.Join(t.TempDir(), "state.db"),
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--public-host", "mhero-sync",
		"--openhim-url", core.URL(), "--openhim-username", "root@openhim.org", "--openhim-password", "openhim-password",
	}, &stderr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.close()
	tick := make(chan time.Time)
	svc.heartbeatTick = tick

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- svc.serve(ctx, nil) }()
	tick <- time.Now() // taken only once registered and past the first beat

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz %d after registration", resp.StatusCode)
	}
	stored, ok := core.Mediator(svc.cfg.mediatorURN)
	if !ok || stored.Mediator.Endpoints[0].Port != port || stored.Mediator.Endpoints[0].Host != "mhero-sync" {
		t.Fatalf("registered %+v, want endpoint mhero-sync:%d", stored.Mediator.Endpoints, port)
	}

	cfg := svc.syncer.Settings().ConsoleConfig()
	cfg["rapidpro"].(map[string]any)["group"] = "Health Workers"
	cfg["inactivePolicy"] = "block"
	if err := core.SetConfig(svc.cfg.mediatorURN, cfg); err != nil {
		t.Fatal(err)
	}
	tick <- time.Now()
	tick <- time.Now() // the beat after the first tick has delivered the config
	if got := svc.syncer.Settings(); got.RapidPro.Group != "Health Workers" || got.InactivePolicy != "block" {
		t.Fatalf("settings after the console change: group %q policy %q", got.RapidPro.Group, got.InactivePolicy)
	}

	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr.String(), "t0ken-not-used") || strings.Contains(stderr.String(), "openhim-password") {
		t.Fatalf("a secret reached the log:\n%s", stderr.String())
	}
}
