package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/csd/csdtest"
)

// lockedBuffer is an io.Writer a running command writes to while a test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runningFakes is `mhero-mediator fakes` started in-process.
type runningFakes struct {
	stdout, stderr *lockedBuffer
	stop           func()
	done           chan error
	// The service flags fakes printed, after "serve", and its environment
	// line as a map.
	serveFlags []string
	env        map[string]string
	contacts   string // the contacts page URL
}

// startFakesCommand runs fakes with args until the test ends, and reads
// what it printed once it is serving.
func startFakesCommand(t *testing.T, args ...string) *runningFakes {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &runningFakes{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() { f.done <- run(ctx, append([]string{"fakes"}, args...), f.stdout, f.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			t.Error("fakes did not stop within 10s of the interrupt")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(f.stdout.String(), "Try the workspace") {
		select {
		case err := <-f.done:
			t.Fatalf("fakes stopped: %v\nstdout:\n%s\nstderr:\n%s", err, f.stdout, f.stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("fakes printed no instructions within 10s:\n%s", f.stdout)
		}
	}
	out := f.stdout.String()
	serve := regexp.MustCompile(`(?m)^  mhero-mediator serve (.*)$`).FindStringSubmatch(out)
	envLine := regexp.MustCompile(`(?m)^  (MHERO_.*)$`).FindStringSubmatch(out)
	contacts := regexp.MustCompile(`(?m)^  contacts: +(\S+)`).FindStringSubmatch(out)
	if serve == nil || envLine == nil || contacts == nil {
		t.Fatalf("fakes did not print the serve flags, the environment and the contacts page:\n%s", out)
	}
	f.serveFlags = strings.Fields(serve[1])
	f.env = map[string]string{}
	for _, kv := range strings.Fields(envLine[1]) {
		k, v, _ := strings.Cut(kv, "=")
		f.env[k] = v
	}
	f.contacts = contacts[1]
	return f
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}

// generatedContacts lists the entity ids of the generated providers a sync
// makes contacts of: those with a phone (i mod 3 ≠ 0) that are active
// (i mod 10 ≠ 9), as csdtest.Generate documents them.
func generatedContacts(seed uint64, n int) []string {
	var ids []string
	for i := range n {
		if i%3 != 0 && i%10 != 9 {
			ids = append(ids, csdtest.GeneratedEntityID(seed, i))
		}
	}
	return ids
}

// fakes on free ports, then a sync given exactly the flags fakes printed:
// the generated health workers become contacts, with their district, and
// the contacts page shows them.
func TestFakesThenSync(t *testing.T) {
	const n, seed = 40, 7
	f := startFakesCommand(t, "--oim-port", "0", "--rapidpro-port", "0", "--contacts-port", "0",
		"--providers", strconv.Itoa(n), "--seed", strconv.Itoa(seed))
	if got := f.env["MHERO_RAPIDPRO_TOKEN"]; got != fakesToken {
		t.Errorf("printed token %q, want the default %q", got, fakesToken)
	}
	if got := get(t, f.contacts); !strings.Contains(got, "RapidPro now holds 0 contacts") {
		t.Fatalf("contacts page before any sync:\n%s", got)
	}

	args := append(append([]string{"sync"}, f.serveFlags...), "--state-file", t.TempDir()+"/state.db", "--log-level", "warn")
	stdout, stderr, err := runCommand(t, args...)
	if err != nil {
		t.Fatalf("sync %q: %v\n%s\n%s", args, err, stdout, stderr)
	}
	want := generatedContacts(seed, n)
	if got := parseSummary(stdout)["created"]; got != len(want) {
		t.Fatalf("sync created %d contacts, want %d:\n%s", got, len(want), stdout)
	}

	page := get(t, f.contacts)
	if !strings.Contains(page, "RapidPro now holds "+strconv.Itoa(len(want))+" contacts") {
		t.Fatalf("contacts page after the sync:\n%s", page)
	}
	for _, id := range want {
		if !strings.Contains(page, id) {
			t.Errorf("contacts page lacks %s", id)
		}
	}
	if !strings.Contains(page, "District ") || !strings.Contains(page, "Centre de santé ") {
		t.Errorf("contacts page shows no district or facility: the hierarchy was not served\n%s", page)
	}
	if !strings.Contains(f.stderr.String(), "path=/api/v2/contacts.json status=201") {
		t.Errorf("fakes logged no contact creation:\n%s", f.stderr)
	}

	// A second sync finds nothing to do.
	stdout, stderr, err = runCommand(t, args...)
	if err != nil {
		t.Fatalf("second sync: %v\n%s\n%s", err, stdout, stderr)
	}
	if s := parseSummary(stdout); s["created"] != 0 || s["updated"] != 0 {
		t.Errorf("second sync wrote: %v", s)
	}

	f.stop()
	if err := <-f.done; err != nil {
		t.Fatalf("fakes after an interrupt: %v, want nil", err)
	}
	f.done <- nil // for the cleanup
	if !strings.Contains(f.stdout.String(), "fakes: stopped") {
		t.Errorf("fakes did not say it stopped:\n%s", f.stdout)
	}
}

// --csd-file serves a given document under --oim-document, and the token is
// the one given.
func TestFakesCSDFile(t *testing.T) {
	f := startFakesCommand(t, "--oim-port", "0", "--rapidpro-port", "0", "--contacts-port", "0",
		"--csd-file", "../../testdata/providers-demo.xml", "--oim-document", "Registry", "--rapidpro-token", "another-token")
	if f.env["MHERO_OIM_DOCUMENT"] != "Registry" || f.env["MHERO_RAPIDPRO_TOKEN"] != "another-token" {
		t.Fatalf("printed environment %v", f.env)
	}
	args := append(append([]string{"sync"}, f.serveFlags...), "--state-file", t.TempDir()+"/state.db", "--log-level", "warn")
	stdout, stderr, err := runCommand(t, args...)
	if err != nil {
		t.Fatalf("sync: %v\n%s\n%s", err, stdout, stderr)
	}
	created := parseSummary(stdout)["created"]
	if created == 0 {
		t.Fatalf("sync of the demo fixture created nothing:\n%s", stdout)
	}
	if page := get(t, f.contacts); !strings.Contains(page, "RapidPro now holds "+strconv.Itoa(created)+" contacts") {
		t.Errorf("contacts page after creating %d:\n%s", created, page)
	}
}

func TestFakesFlags(t *testing.T) {
	fc, err := parseFakes(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if fc.oimPort != 8984 || fc.rapidProPort != 8000 || fc.contactPort != 8001 || fc.bind != "127.0.0.1" ||
		fc.publicHost != "127.0.0.1" || fc.token != fakesToken || fc.document != "Providers" || fc.country != "LR" {
		t.Errorf("defaults %+v", fc)
	}
	for bind, host := range map[string]string{"0.0.0.0": "localhost", "": "localhost", "::": "localhost", "10.1.2.3": "10.1.2.3"} {
		fc, err := parseFakes([]string{"--bind", bind}, io.Discard)
		if err != nil || fc.publicHost != host {
			t.Errorf("--bind %q: public host %q (%v), want %q", bind, fc.publicHost, err, host)
		}
	}
	if fc, err := parseFakes([]string{"--bind", "0.0.0.0", "--public-host", "fakes"}, io.Discard); err != nil || fc.publicHost != "fakes" {
		t.Errorf("--public-host fakes: %+v %v", fc, err)
	}
	t.Setenv("MHERO_RAPIDPRO_TOKEN", "from-the-environment")
	if fc, err := parseFakes(nil, io.Discard); err != nil || fc.token != "from-the-environment" {
		t.Errorf("MHERO_RAPIDPRO_TOKEN: %+v %v", fc, err)
	}

	for _, bad := range [][]string{
		{"--oim-port", "70000"}, {"--rapidpro-port", "-1"}, {"--providers", "-3"},
		{"--rapidpro-token", " "}, {"--oim-document", ""},
	} {
		if _, err := parseFakes(bad, io.Discard); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(bad[0], "--")) {
			t.Errorf("%q: err = %v, want the flag named", bad, err)
		}
	}
	if err := run(context.Background(), []string{"fakes", "extra"}, io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("fakes with an argument: %v, want usage", err)
	}
	var help bytes.Buffer
	if err := run(context.Background(), []string{"fakes", "-h"}, io.Discard, &help); !errors.Is(err, errHelp) || !strings.Contains(help.String(), "contacts-port") {
		t.Errorf("fakes -h: %v\n%s", err, help.String())
	}
}

// A port in use is an error naming its flag, and nothing is left listening.
func TestFakesPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	free, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = run(ctx, []string{"fakes", "--oim-port", strconv.Itoa(free), "--rapidpro-port", port, "--contacts-port", "0"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "rapidpro-port") {
		t.Fatalf("err = %v, want rapidpro-port in use", err)
	}
	// The OpenInfoMan port, bound first, was released.
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(free)))
	if err != nil {
		t.Fatalf("oim-port still held after the failure: %v", err)
	}
	l.Close()

	err = run(ctx, []string{"fakes", "--oim-port", "0", "--rapidpro-port", "0", "--contacts-port", "0", "--csd-file", "no-such-file.xml"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no-such-file.xml") {
		t.Fatalf("missing --csd-file: %v", err)
	}
}
