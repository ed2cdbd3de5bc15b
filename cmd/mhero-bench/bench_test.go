package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestMain plays the fakes when the bench under test starts this test
// binary as its child, as it starts its own executable.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == roleFakes {
		if err := serveFakes(os.Stdin, os.Stdout, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Every scenario runs at a tiny size and prints its figures, each line
// "scenario name value unit", and the runs did what each scenario says.
func TestEveryScenario(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"-n", "300", "-seed", "7", "-budget-n", "200", "-rate", "5000", "-latency-n", "60", "-latency", "2ms", "-concurrency", "4"}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errOut.String())
	}
	t.Log(out.String())
	if errOut.Len() > 0 {
		t.Errorf("warnings on stderr:\n%s", errOut.String())
	}
	figures := map[string]map[string]float64{}
	sc := bufio.NewScanner(&out)
	header := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			header = true
			continue
		}
		f := strings.Split(line, " ")
		if len(f) != 4 || slices.Contains(f, "") {
			t.Errorf("not \"scenario name value unit\": %q", line)
			continue
		}
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			t.Errorf("value of %q: %v", line, err)
		}
		if figures[f[0]] == nil {
			figures[f[0]] = map[string]float64{}
		}
		if _, dup := figures[f[0]][f[1]]; dup {
			t.Errorf("%s %s printed twice", f[0], f[1])
		}
		figures[f[0]][f[1]] = v
	}
	if !header {
		t.Error("no header line")
	}
	for _, s := range allScenarios {
		suffixes := []string{""}
		if s == "latency" {
			suffixes = []string{"_concurrency_1", "_concurrency_4"}
		}
		for _, sfx := range suffixes {
			for _, name := range []string{"wall", "cpu", "peak_rss", "requests_rapidpro", "requests_rapidpro_contacts_post", "requests_openinfoman", "providers_per_second", "responses_429"} {
				if _, ok := figures[s][name+sfx]; !ok {
					t.Errorf("scenario %s printed no %s", s, name+sfx)
				}
			}
			if figures[s]["peak_rss"+sfx] <= 0 || figures[s]["wall"+sfx] <= 0 {
				t.Errorf("%s: peak RSS %g MiB, wall %g s", s, figures[s]["peak_rss"+sfx], figures[s]["wall"+sfx])
			}
		}
	}
	want := []struct {
		scenario, name string
		value          float64
	}{
		{"first", "created", 300}, {"first", "contacts", 300}, {"first", "pending", 0},
		{"idle", "providers", 0}, {"idle", "requests_rapidpro", 0},
		{"touched", "providers", 300}, {"touched", "requests_rapidpro", 0},
		{"delta_1", "updated", 1}, {"delta_1", "changed", 1},
		{"delta_100", "updated", 100}, {"delta_100", "changed", 100},
		{"full", "providers", 300}, {"full", "requests_rapidpro_contacts_post", 0},
		{"budget", "created", 200}, {"budget", "responses_429", 0},
		{"latency", "created_concurrency_1", 60}, {"latency", "created_concurrency_4", 60},
	}
	for _, w := range want {
		if got, ok := figures[w.scenario][w.name]; !ok || got != w.value {
			t.Errorf("%s %s = %g, want %g", w.scenario, w.name, got, w.value)
		}
	}
	if _, ok := figures["budget"]["budget_use"]; !ok {
		t.Error("no budget_use")
	}
	if _, ok := figures["latency"]["speedup"]; !ok {
		t.Error("no latency speedup")
	}
}

// A scenario picked alone gets the first sync it needs, unmeasured.
func TestScenarioAlone(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-n", "120", "-scenarios", "delta_1"}, &out, &errOut); err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errOut.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
		if !strings.HasPrefix(line, "delta_1 ") {
			t.Errorf("a line of another scenario: %q", line)
		}
	}
	if !strings.Contains(out.String(), "delta_1 updated 1 contacts\n") {
		t.Errorf("delta_1 did not update one contact:\n%s", out.String())
	}
}
