package main

// No Docker engine runs where these tests run: they read the Dockerfile and
// docker-compose.yml and run every command those files give the image,
// with their arguments and environment, through this command.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openhie/mhero-mediator/openhim"
	"github.com/openhie/mhero-mediator/openhim/openhimtest"
)

const (
	dockerfilePath = "../../Dockerfile"
	composePath    = "../../docker-compose.yml"
	imageBinary    = "/usr/local/bin/mhero-mediator"
)

func readRepoFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// composeService is what these tests read of one service of
// docker-compose.yml. The file keeps a plain shape for that: two-space
// indents, environment as a KEY: value mapping, command and healthcheck test
// as one-line JSON arrays.
type composeService struct {
	env         map[string]string
	command     []string
	healthcheck []string
}

func readComposeService(t *testing.T, compose, name string) composeService {
	t.Helper()
	svc := composeService{env: map[string]string{}}
	lines := strings.Split(compose, "\n")
	start := slicesIndex(lines, "  "+name+":")
	if start < 0 {
		t.Fatalf("docker-compose.yml has no service %q", name)
	}
	inEnv := false
	for _, line := range lines[start+1:] {
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if indent <= 2 {
			break // the next service, or the end of services
		}
		if indent == 4 {
			inEnv = trimmed == "environment:"
		}
		key, value, _ := strings.Cut(trimmed, ":")
		value = strings.TrimSpace(value)
		switch {
		case inEnv && indent == 6:
			if u, err := strconv.Unquote(value); err == nil {
				value = u
			} else if len(value) >= 2 && value[0] == '\'' && value[len(value)-1] == '\'' {
				value = value[1 : len(value)-1]
			}
			svc.env[key] = value
		case indent == 4 && key == "command":
			svc.command = jsonArray(t, value)
		case indent == 6 && key == "test":
			svc.healthcheck = jsonArray(t, value)
		}
	}
	return svc
}

func slicesIndex(lines []string, want string) int {
	for i, l := range lines {
		if l == want {
			return i
		}
	}
	return -1
}

func jsonArray(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("%q is not a one-line JSON array: %v", s, err)
	}
	return out
}

// dockerfileHealthcheck is the exec-form command of the Dockerfile's
// HEALTHCHECK.
func dockerfileHealthcheck(t *testing.T, dockerfile string) []string {
	t.Helper()
	joined := strings.ReplaceAll(dockerfile, "\\\n", " ")
	m := regexp.MustCompile(`(?m)^HEALTHCHECK .*?CMD (\[.*\])\s*$`).FindStringSubmatch(joined)
	if m == nil {
		t.Fatal("the Dockerfile has no exec-form HEALTHCHECK … CMD [...]")
	}
	return jsonArray(t, m[1])
}

// The Dockerfile stamps the version it labels, which defaults to the one
// the code registers; it labels the image as OCI says; its health check and
// entrypoint are the binary it copies.
func TestDockerfile(t *testing.T) {
	d := readRepoFile(t, dockerfilePath)
	m := regexp.MustCompile(`(?m)^ARG VERSION=(\S+)$`).FindStringSubmatch(d)
	if m == nil || m[1] != version {
		t.Errorf("Dockerfile ARG VERSION default %v, want %q as in config.go", m, version)
	}
	if !strings.Contains(d, `-ldflags="-s -w -X main.version=${VERSION}"`) {
		t.Error("the build does not stamp main.version from VERSION")
	}
	for _, label := range []string{"title", "description", "version", "revision", "source", "licenses"} {
		if !strings.Contains(d, "org.opencontainers.image."+label+"=") {
			t.Errorf("no org.opencontainers.image.%s label", label)
		}
	}
	for _, arg := range []string{"VERSION", "REVISION", "SOURCE", "LICENSES"} {
		// Declared before the first FROM and again in the stage that uses it.
		if n := len(regexp.MustCompile(`(?m)^ARG `+arg+`\b`).FindAllString(d, -1)); n < 2 {
			t.Errorf("ARG %s declared %d times: a build arg must be declared again inside the stage", arg, n)
		}
	}
	if !strings.Contains(d, "COPY --from=build /out/mhero-mediator "+imageBinary) ||
		!strings.Contains(d, `ENTRYPOINT ["`+imageBinary+`"]`) {
		t.Errorf("the image's binary is not %s", imageBinary)
	}
	hc := dockerfileHealthcheck(t, d)
	if hc[0] != imageBinary || hc[1] != "healthcheck" {
		t.Errorf("HEALTHCHECK runs %q, want %s healthcheck", hc, imageBinary)
	}
	// Its arguments parse (the check against a live service is in
	// TestComposeStack).
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.String("url", "", "")
	fs.String("bind", "", "")
	fs.Int("port", 0, "")
	fs.Duration("timeout", 0, "")
	if err := fs.Parse(hc[2:]); err != nil || fs.NArg() != 0 {
		t.Errorf("HEALTHCHECK arguments %q: %v", hc[2:], err)
	}
}

// The release's SemVer check in the Dockerfile takes what OpenHIM takes.
func TestDockerfileVersionCheck(t *testing.T) {
	d := readRepoFile(t, dockerfilePath)
	m := regexp.MustCompile(`grep -Eq '([^']+)'`).FindStringSubmatch(d)
	if m == nil {
		t.Fatal("no VERSION check in the Dockerfile")
	}
	re := regexp.MustCompile(m[1])
	for v, ok := range map[string]bool{version: true, "1.2.0": true, "2.0.0-rc.1": true, "1.0.0+build.5": true,
		"dev": false, "v1.2.0": false, "1.2": false, "": false} {
		if re.MatchString(v) != ok {
			t.Errorf("VERSION %q accepted %v, want %v", v, !ok, ok)
		}
	}
}

// docker-compose.yml, run here: the fakes service's command, its health
// check, the mediator's environment (every MHERO_ variable a serve flag)
// against a fake OpenHIM core, the image's health check, one poll of the
// channel the mediator registers, and the contacts it makes.
func TestComposeStack(t *testing.T) {
	compose := readRepoFile(t, composePath)
	fakesSvc := readComposeService(t, compose, "fakes")
	mhero := readComposeService(t, compose, "mhero-sync")
	if len(fakesSvc.command) == 0 || fakesSvc.command[0] != "fakes" {
		t.Fatalf("fakes service command %q", fakesSvc.command)
	}

	// The service is configured with what the fakes serve, in compose's
	// network.
	fc, err := parseFakes(fakesSvc.command[1:], os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	atCompose := &fakes{cfg: fc, oimPort: fc.oimPort, rapidProPort: fc.rapidProPort, contactPort: fc.contactPort}
	for k, want := range map[string]string{
		"MHERO_OIM_URL": atCompose.OIMURL(), "MHERO_RAPIDPRO_URL": atCompose.RapidProURL(),
		"MHERO_RAPIDPRO_TOKEN": fc.token, "MHERO_OIM_DOCUMENT": fc.document, "MHERO_RAPIDPRO_RATE": "0",
	} {
		if mhero.env[k] != want {
			t.Errorf("mhero-sync %s = %q, want %q (what fakes serves)", k, mhero.env[k], want)
		}
	}
	for _, port := range []int{fc.oimPort, fc.rapidProPort, fc.contactPort} {
		if !strings.Contains(compose, fmt.Sprintf(`"127.0.0.1:%d:%d"`, port, port)) {
			t.Errorf("fakes port %d is not published", port)
		}
	}
	if !strings.Contains(compose, fmt.Sprintf(`"127.0.0.1:%d:%d"`, 8544, 8544)) {
		t.Error("the service's port is not published")
	}
	if _, err := openhim.TLSConfig("", mhero.env["MHERO_OPENHIM_CERT_PIN"], false); err != nil {
		t.Errorf("MHERO_OPENHIM_CERT_PIN: %v", err)
	}

	// fakes, as compose runs it, on free loopback ports here.
	f := startFakesCommand(t, slices.Concat(fakesSvc.command[1:], []string{"--bind", "127.0.0.1", "--public-host", "127.0.0.1",
		"--oim-port", "0", "--rapidpro-port", "0", "--contacts-port", "0"})...)
	check := fakesSvc.healthcheck
	if len(check) < 3 || check[0] != "CMD" || check[1] != imageBinary {
		t.Fatalf("fakes healthcheck %q, want CMD %s …", check, imageBinary)
	}
	contactsPort := f.contacts[strings.LastIndex(f.contacts, ":")+1 : len(f.contacts)-1]
	args := strings.Fields(strings.ReplaceAll(strings.Join(check[2:], " "), ":"+strconv.Itoa(fc.contactPort)+"/", ":"+contactsPort+"/"))
	if _, _, err := runCommand(t, args...); err != nil {
		t.Fatalf("fakes healthcheck %q: %v", args, err)
	}

	// The mediator, with compose's environment and the image's
	// MHERO_STATE_FILE, where only the addresses differ.
	core := openhimtest.New(openhimtest.Options{TLS: true})
	defer core.Close()
	pin := sha256.Sum256(core.Certificate().Raw)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	serveFlags := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := &config{}
	cfg.register(serveFlags)
	for k, v := range mhero.env {
		name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "MHERO_"), "_", "-"))
		if !strings.HasPrefix(k, "MHERO_") || serveFlags.Lookup(name) == nil {
			t.Errorf("mhero-sync environment %s is no serve flag", k)
		}
		t.Setenv(k, v)
	}
	for k, v := range map[string]string{
		"MHERO_OPENHIM_URL": core.URL(), "MHERO_OPENHIM_CERT_PIN": hex.EncodeToString(pin[:]),
		"MHERO_OIM_URL": f.env["MHERO_OIM_URL"], "MHERO_RAPIDPRO_URL": f.env["MHERO_RAPIDPRO_URL"],
		"MHERO_STATE_FILE": filepath.Join(t.TempDir(), "mhero-state.db"),
		"MHERO_PORT":       strconv.Itoa(port), "MHERO_BIND": "127.0.0.1", "MHERO_PUBLIC_HOST": "127.0.0.1",
	} {
		t.Setenv(k, v)
	}
	if err := parseFlags(serveFlags, nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.check(); err != nil {
		t.Fatalf("compose's environment does not pass serve's checks: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svcCtx, stopService := context.WithCancel(ctx)
	defer stopService()
	served := make(chan error, 1)
	logs := &lockedBuffer{}
	go func() { served <- run(svcCtx, []string{"serve"}, logs, logs) }() // the image's CMD
	if err := waitReady(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), served); err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	stored, _ := core.Mediator(cfg.mediatorURN)
	if ch := stored.Mediator.DefaultChannelConfig; len(ch) == 0 || ch[0].PollingSchedule != mhero.env["MHERO_POLLING_SCHEDULE"] {
		t.Errorf("registered channels %+v, want the polling schedule %q", ch, mhero.env["MHERO_POLLING_SCHEDULE"])
	}

	// The image's health check, as Docker runs it in this container.
	hc := dockerfileHealthcheck(t, readRepoFile(t, dockerfilePath))
	if stdout, _, err := runCommand(t, hc[1:]...); err != nil {
		t.Fatalf("the image's HEALTHCHECK %q against the running service: %v", hc[1:], err)
	} else if !strings.Contains(stdout, ":"+strconv.Itoa(port)+"/healthz") {
		t.Errorf("the image's HEALTHCHECK asked another port: %s", stdout)
	}

	tx, err := core.Poll(ctx, cfg.mediatorURN)
	if err != nil {
		t.Fatalf("poll: %v\n%s", err, logs)
	}
	if tx.Status != openhim.StatusSuccessful {
		t.Fatalf("transaction %s (HTTP %d): %s\n%s", tx.Status, tx.HTTPStatus, tx.RawBody, logs)
	}
	want := generatedContacts(fc.seed, fc.providers)
	if page := get(t, f.contacts); !strings.Contains(page, fmt.Sprintf("RapidPro now holds %d contacts", len(want))) {
		t.Fatalf("contacts page after the poll:\n%s", page)
	}
	// The compose comments promise these numbers.
	if len(want) != 60 || !strings.Contains(compose, "creates 60 contacts") {
		t.Errorf("%d contacts from the compose's fakes; the comments say 60", len(want))
	}

	stopService()
	if err := <-served; err != nil {
		t.Errorf("serve after an interrupt: %v", err)
	}
	for _, secret := range []string{mhero.env["MHERO_SYNC_PASSWORD"], mhero.env["MHERO_OPENHIM_PASSWORD"]} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds the secret %q", secret)
		}
	}
}

// The binary built as the Dockerfile builds it registers the stamped
// version, and its healthcheck exits 0 on a healthy service, 1 otherwise.
func TestBinaryVersionStampAndHealthcheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const stamped = "9.8.7"
	bin := filepath.Join(t.TempDir(), "mhero-mediator")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		goTool = p
	}
	build := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w -X main.version="+stamped, "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	core := openhimtest.New(openhimtest.Options{TLS: true})
	defer core.Close()
	pin := sha256.Sum256(core.Certificate().Raw)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(bin, "serve", "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--public-host", "127.0.0.1",
		"--state-file", filepath.Join(t.TempDir(), "state.db"),
		"--rapidpro-url", "http://127.0.0.1:1", "--rapidpro-token", "unused-token",
		"--openhim-url", core.URL(), "--openhim-username", "root@openhim.org", "--openhim-password", "openhim-password",
		"--openhim-cert-pin", hex.EncodeToString(pin[:]))
	logs := &lockedBuffer{}
	serve.Stdout, serve.Stderr = logs, logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	defer func() {
		_ = serve.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = serve.Process.Kill()
			<-exited
		}
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		if m, ok := core.Mediator("urn:mediator:mhero-sync-go"); ok {
			if m.Mediator.Version != stamped {
				t.Fatalf("registered version %q, want the stamped %q", m.Mediator.Version, stamped)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the binary did not register within 30s\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}

	healthcheck := func(args ...string) int {
		cmd := exec.Command(bin, append([]string{"healthcheck"}, args...)...)
		cmd.Env = append(os.Environ(), "MHERO_PORT="+strconv.Itoa(port))
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &exit):
			t.Logf("healthcheck %q: exit %d: %s", args, exit.ExitCode(), out)
			return exit.ExitCode()
		}
		t.Fatalf("healthcheck %q: %v", args, err)
		return -1
	}
	if code := healthcheck(); code != 0 {
		t.Errorf("healthcheck of a running service (MHERO_PORT): exit %d, want 0", code)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + closed.Addr().String() + "/healthz"
	closed.Close()
	if code := healthcheck("--url", dead, "--timeout", "2s"); code != 1 {
		t.Errorf("healthcheck of nothing: exit %d, want 1", code)
	}
}
