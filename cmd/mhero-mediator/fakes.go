package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

const fakesUsage = `Usage: mhero-mediator fakes [flags]

Serves a fake OpenInfoMan (the csdtest registry: provider, facility and organization searches, with
OpenInfoMan's paging and updated filter) and a fake RapidPro workspace (the API v2 emulator the tests
use) on fixed ports, until interrupted, so that a service (and OpenHIM's polling channel) can be pointed
at them for a trial without real systems. The registry serves a generated directory (--providers
health workers under a country → district → chiefdom → facility hierarchy; one in ten inactive, one in
three without a phone) or --csd-file. The workspace accepts one token, --rapidpro-token, and keeps its
contacts in memory: a restart of fakes starts it empty (delete the service's state file too, or it
believes the contacts exist). A third port serves the workspace's contacts as a table for a browser,
and /healthz.

It prints the URLs, the token and the service flags to use. Every flag can also be set by an
environment variable (--rapidpro-token is MHERO_RAPIDPRO_TOKEN, as for serve).

Flags:
`

// fakesToken is the token the fake workspace accepts unless told another.
// It guards only a trial.
const fakesToken = "fakes-token-0123456789abcdef0123456789ab"

type fakesConfig struct {
	bind, publicHost                   string
	oimPort, rapidProPort, contactPort int
	providers                          int
	seed                               uint64
	csdFile, document, token, country  string
}

func parseFakes(args []string, stderr io.Writer) (*fakesConfig, error) {
	fc := &fakesConfig{}
	fs := flag.NewFlagSet("fakes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&fc.bind, "bind", "127.0.0.1", "address to listen on (empty or 0.0.0.0: every interface, as in a container)")
	fs.StringVar(&fc.publicHost, "public-host", "", "host name the printed URLs use (empty: --bind, or localhost when that is every interface)")
	fs.IntVar(&fc.oimPort, "oim-port", 8984, "port of the fake OpenInfoMan (0: any free port)")
	fs.IntVar(&fc.rapidProPort, "rapidpro-port", 8000, "port of the fake RapidPro (0: any free port)")
	fs.IntVar(&fc.contactPort, "contacts-port", 8001, "port of the page listing RapidPro's contacts, and /healthz (0: any free port)")
	fs.IntVar(&fc.providers, "providers", 100, "health workers in the generated directory")
	fs.Uint64Var(&fc.seed, "seed", 1, "seed of the generated directory: the same seed, the same health workers")
	fs.StringVar(&fc.csdFile, "csd-file", "", "serve this CSD document instead of a generated one")
	fs.StringVar(&fc.document, "oim-document", "Providers", "OpenInfoMan document name in the registry's URLs")
	fs.StringVar(&fc.token, "rapidpro-token", fakesToken, "the token the fake RapidPro accepts")
	fs.StringVar(&fc.country, "country", "LR", "the fake workspace's country (ISO 3166-1 alpha-2), for numbers without a country code")
	fs.Usage = func() {
		fmt.Fprint(stderr, fakesUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "fakes takes no arguments, got %q\n", fs.Args())
		return nil, errUsage
	}
	var problems []string
	for _, p := range []struct {
		name string
		port int
	}{{"oim-port", fc.oimPort}, {"rapidpro-port", fc.rapidProPort}, {"contacts-port", fc.contactPort}} {
		if p.port < 0 || p.port > 65535 {
			problems = append(problems, fmt.Sprintf("--%s %d is not a TCP port", p.name, p.port))
		}
	}
	if fc.providers < 0 {
		problems = append(problems, fmt.Sprintf("--providers %d must be 0 or more", fc.providers))
	}
	if strings.TrimSpace(fc.token) == "" {
		problems = append(problems, "--rapidpro-token must not be empty")
	}
	if strings.TrimSpace(fc.document) == "" {
		problems = append(problems, "--oim-document must not be empty")
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	if fc.publicHost == "" {
		fc.publicHost = fc.bind
		if ip := net.ParseIP(fc.bind); fc.bind == "" || ip != nil && ip.IsUnspecified() {
			fc.publicHost = "localhost"
		}
	}
	fc.country = strings.ToUpper(strings.TrimSpace(fc.country))
	return fc, nil
}

// fakes are the running fake registry and workspace, and the contacts page.
type fakes struct {
	cfg       *fakesConfig
	registry  *csdtest.Server
	workspace *rapidprotest.Server
	page      *http.Server
	// what the registry serves, for a person
	served string
	// ports actually bound (a 0 flag is any free port)
	oimPort, rapidProPort, contactPort int
}

// startFakes listens on every port first, so that a port in use is an
// error before anything runs, then starts the servers.
func startFakes(fc *fakesConfig, logger *slog.Logger) (_ *fakes, err error) {
	var listeners []net.Listener
	defer func() {
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
		}
	}()
	listen := func(name string, port int) (net.Listener, int, error) {
		l, err := net.Listen("tcp", net.JoinHostPort(fc.bind, strconv.Itoa(port)))
		if err != nil {
			return nil, 0, fmt.Errorf("fakes: %s: %w", name, err)
		}
		listeners = append(listeners, l)
		return l, l.Addr().(*net.TCPAddr).Port, nil
	}
	f := &fakes{cfg: fc}
	oimL, oimPort, err := listen("oim-port", fc.oimPort)
	if err != nil {
		return nil, err
	}
	rpL, rpPort, err := listen("rapidpro-port", fc.rapidProPort)
	if err != nil {
		return nil, err
	}
	pageL, pagePort, err := listen("contacts-port", fc.contactPort)
	if err != nil {
		return nil, err
	}
	f.oimPort, f.rapidProPort, f.contactPort = oimPort, rpPort, pagePort

	var doc []byte
	if fc.csdFile != "" {
		if doc, err = os.ReadFile(fc.csdFile); err != nil {
			return nil, fmt.Errorf("csd-file: %w", err)
		}
		f.served = fc.csdFile
	} else {
		var buf bytes.Buffer
		if err := csdtest.Generate(&buf, fc.providers, csdtest.GenerateOptions{Seed: fc.seed, Hierarchy: true}); err != nil {
			return nil, err
		}
		doc = buf.Bytes()
		f.served = fmt.Sprintf("%d generated health workers (seed %d)", fc.providers, fc.seed)
	}
	if f.registry, err = csdtest.New(doc, csdtest.Options{Document: fc.document, Listener: oimL}); err != nil {
		if fc.csdFile != "" {
			return nil, fmt.Errorf("csd-file %s: %w", fc.csdFile, err)
		}
		return nil, err
	}
	f.workspace = rapidprotest.New(rapidprotest.Options{Token: fc.token, Country: fc.country, Listener: rpL,
		// One line per request, so that `docker compose logs fakes` shows a
		// sync at work.
		OnRequest: func(r rapidprotest.Request) {
			logger.Info("rapidpro", "method", r.Method, "path", r.Path, "status", r.Status)
		},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		printContacts(w, f.workspace.Contacts())
	})
	f.page = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := f.page.Serve(pageL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("contacts page stopped", "err", err)
		}
	}()
	return f, nil
}

func (f *fakes) url(port int) string {
	return "http://" + net.JoinHostPort(f.cfg.publicHost, strconv.Itoa(port))
}

// OIMURL, RapidProURL and ContactsURL are the URLs to give the service and a
// browser.
func (f *fakes) OIMURL() string      { return f.url(f.oimPort) }
func (f *fakes) RapidProURL() string { return f.url(f.rapidProPort) }
func (f *fakes) ContactsURL() string { return f.url(f.contactPort) + "/" }

func (f *fakes) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.page.Shutdown(ctx)
	f.workspace.Close()
	f.registry.Close()
}

// describe says what runs and how to point the service at it.
func (f *fakes) describe(w io.Writer) {
	fc := f.cfg
	fmt.Fprintf(w, "Fakes serving until interrupted (Ctrl-C):\n"+
		"  OpenInfoMan:  %s  document %q: %s\n"+
		"  RapidPro:     %s  token %s, country %s\n"+
		"  contacts:     %s  what RapidPro holds, for a browser\n\n",
		f.OIMURL(), fc.document, f.served, f.RapidProURL(), fc.token, fc.country, f.ContactsURL())
	fmt.Fprintf(w, "Point the service at them:\n"+
		"  mhero-mediator serve --oim-url %s --oim-document %s --rapidpro-url %s --rapidpro-token %s --rapidpro-rate 0\n"+
		"or in its environment:\n"+
		"  MHERO_OIM_URL=%s MHERO_OIM_DOCUMENT=%s MHERO_RAPIDPRO_URL=%s MHERO_RAPIDPRO_TOKEN=%s MHERO_RAPIDPRO_RATE=0\n"+
		"Try the workspace: curl -H 'Authorization: Token %s' %s/api/v2/contacts.json\n",
		f.OIMURL(), fc.document, f.RapidProURL(), fc.token,
		f.OIMURL(), fc.document, f.RapidProURL(), fc.token,
		fc.token, f.RapidProURL())
}

func runFakes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fc, err := parseFakes(args, stderr)
	if err != nil {
		return err
	}
	f, err := startFakes(fc, slog.New(slog.NewTextHandler(stderr, nil)))
	if err != nil {
		return err
	}
	defer f.close()
	f.describe(stdout)
	<-ctx.Done()
	fmt.Fprintln(stdout, "fakes: stopped")
	return nil
}
