package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
	"github.com/openhie/mhero-mediator/rapidpro/rapidprotest"
)

// The fakes run in a child process, this same executable started with
// roleEnv=roleFakes, so that their CPU and memory are not the service's.
// The parent sends one JSON command a line on the child's stdin and reads
// one JSON answer a line from its stdout; the child exits when its stdin
// closes, so it never outlives the parent.
const (
	roleEnv   = "MHERO_BENCH_ROLE"
	roleFakes = "fakes"
	// benchToken is the only token the emulated workspace accepts.
	benchToken = "bench-token-0123456789abcdef0123456789ab"
	// benchCountry is the workspace's and the service's country: the
	// generated phones are Liberian.
	benchCountry = "LR"
	benchDoc     = "Providers"
)

// command is one request to the fakes.
type command struct {
	// Op is "registry" (serve a generated document of N providers),
	// "workspace" (replace the workspace by an empty one with this rate
	// limit) or "stats" (the requests received since the last stats).
	Op         string                  `json:"op"`
	N          int                     `json:"n,omitempty"`
	Generate   csdtest.GenerateOptions `json:"generate"`
	RateLimit  int                     `json:"rate_limit,omitempty"`
	RateWindow time.Duration           `json:"rate_window,omitempty"`
}

// answer is the fakes' reply to one command.
type answer struct {
	Error       string `json:"error,omitempty"`
	OIMURL      string `json:"oim_url,omitempty"`
	RapidProURL string `json:"rapidpro_url,omitempty"`
	Stats       stats  `json:"stats"`
}

// stats counts the requests the fakes received since the last stats.
type stats struct {
	RapidPro  map[string]int `json:"rapidpro"` // by kind, see requestKind
	Throttled int            `json:"throttled"`
	// Accepted counts the requests of each rate scope that were not
	// throttled: what the emulator's window counts.
	Accepted    map[string]int `json:"accepted"`
	OpenInfoMan int            `json:"openinfoman"`
	// Contacts is how many contacts the workspace holds now.
	Contacts int `json:"contacts"`
}

// Request kinds, as the figures name them.
const (
	kindContactsGet    = "contacts_get"
	kindContactsPost   = "contacts_post"
	kindContactsDelete = "contacts_delete"
	kindContactActions = "contact_actions"
	kindOther          = "other"
)

var requestKinds = []string{kindContactsGet, kindContactsPost, kindContactsDelete, kindContactActions, kindOther}

func requestKind(r rapidprotest.Request) string {
	switch {
	case r.Path == "/api/v2/contacts.json" && r.Method == http.MethodGet:
		return kindContactsGet
	case r.Path == "/api/v2/contacts.json" && r.Method == http.MethodPost:
		return kindContactsPost
	case r.Path == "/api/v2/contacts.json" && r.Method == http.MethodDelete:
		return kindContactsDelete
	case r.Path == "/api/v2/contact_actions.json":
		return kindContactActions
	}
	return kindOther
}

// RapidPro's rate scopes: contacts.json counts against v2.contacts, every
// other endpoint against v2.
const (
	scopeContacts = "v2.contacts"
	scopeOther    = "v2"
)

func scopeOf(kind string) string {
	if strings.HasPrefix(kind, "contacts_") {
		return scopeContacts
	}
	return scopeOther
}

// serveFakes is the child's whole life: it answers commands until in ends.
func serveFakes(in io.Reader, out io.Writer, logger *slog.Logger) error {
	f := &fakeStack{logger: logger}
	defer f.close()
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	for {
		var c command
		if err := dec.Decode(&c); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("fakes: reading a command: %w", err)
		}
		a, err := f.do(c)
		if err != nil {
			a = answer{Error: err.Error()}
		}
		if err := enc.Encode(a); err != nil {
			return fmt.Errorf("fakes: answering: %w", err)
		}
	}
}

type fakeStack struct {
	logger    *slog.Logger
	registry  *csdtest.Server
	workspace *rapidprotest.Server
	// what the last stats had seen
	seenRapidPro, seenOIM int
}

func (f *fakeStack) do(c command) (answer, error) {
	switch c.Op {
	case "registry":
		var doc bytes.Buffer
		if err := csdtest.Generate(&doc, c.N, c.Generate); err != nil {
			return answer{}, err
		}
		if f.registry != nil {
			if err := f.registry.SetDocument(doc.Bytes()); err != nil {
				return answer{}, err
			}
			return answer{OIMURL: f.registry.URL()}, nil
		}
		r, err := csdtest.New(doc.Bytes(), csdtest.Options{Document: benchDoc})
		if err != nil {
			return answer{}, err
		}
		f.registry = r
		return answer{OIMURL: r.URL()}, nil
	case "workspace":
		if f.workspace != nil {
			f.workspace.Close()
		}
		f.workspace = rapidprotest.New(rapidprotest.Options{Token: benchToken, Country: benchCountry,
			RateLimit: c.RateLimit, RateWindow: c.RateWindow})
		f.seenRapidPro = 0
		return answer{RapidProURL: f.workspace.URL()}, nil
	case "stats":
		return answer{Stats: f.stats()}, nil
	}
	return answer{}, fmt.Errorf("fakes: unknown command %q", c.Op)
}

func (f *fakeStack) stats() stats {
	s := stats{RapidPro: map[string]int{}, Accepted: map[string]int{scopeContacts: 0, scopeOther: 0}}
	for _, k := range requestKinds {
		s.RapidPro[k] = 0
	}
	if f.workspace != nil {
		reqs := f.workspace.Requests()
		for _, r := range reqs[f.seenRapidPro:] {
			kind := requestKind(r)
			s.RapidPro[kind]++
			if r.Status == http.StatusTooManyRequests {
				s.Throttled++
			} else {
				s.Accepted[scopeOf(kind)]++
			}
		}
		f.seenRapidPro = len(reqs)
		s.Contacts = len(f.workspace.Contacts())
	}
	if f.registry != nil {
		n := f.registry.Requests()
		s.OpenInfoMan, f.seenOIM = n-f.seenOIM, n
	}
	return s
}

func (f *fakeStack) close() {
	if f.registry != nil {
		f.registry.Close()
	}
	if f.workspace != nil {
		f.workspace.Close()
	}
}

// fakes is the parent's handle on the child.
type fakes struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	enc *json.Encoder
	dec *json.Decoder
}

// startFakes starts this executable again as the fakes.
func startFakes() (*fakes, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this executable to start the fakes: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"="+roleFakes)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the fakes: %w", err)
	}
	return &fakes{cmd: cmd, in: in, enc: json.NewEncoder(in), dec: json.NewDecoder(bufio.NewReader(out))}, nil
}

func (f *fakes) call(c command) (answer, error) {
	if err := f.enc.Encode(c); err != nil {
		return answer{}, fmt.Errorf("fakes %s: %w", c.Op, err)
	}
	var a answer
	if err := f.dec.Decode(&a); err != nil {
		return answer{}, fmt.Errorf("fakes %s: no answer: %w", c.Op, err)
	}
	if a.Error != "" {
		return answer{}, fmt.Errorf("fakes %s: %s", c.Op, a.Error)
	}
	return a, nil
}

// close ends the child by closing its stdin, and waits for it.
func (f *fakes) close() error {
	f.in.Close()
	return f.cmd.Wait()
}
