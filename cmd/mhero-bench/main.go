// Command mhero-bench measures the sync service on a generated registry: it
// runs the real service code in this process against a fake OpenInfoMan and
// the RapidPro emulator, which it starts in a child process of its own so
// that the CPU and memory it reports are the service's alone.
//
// It prints one line per figure, "scenario name value unit", after a header
// line starting with "#":
//
//	go run ./cmd/mhero-bench -n 100000
//	go run ./cmd/mhero-bench -scenarios first,full -n 50000 -cpuprofile cpu.out
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

const usage = `Usage: mhero-bench [flags]

Runs the mHero sync service against a generated registry of -n health
workers (every one active and reachable, phones in several national
spellings, 30%% with a second phone, under a facility and organization
hierarchy) and prints one line per figure: "scenario name value unit".

Scenarios, in order:
  first      a fresh state and workspace: runs until nothing is pending
  idle       a delta run, nothing changed
  touched    every record date moved, no data changed
  delta_1    one provider changed
  delta_100  100 providers changed
  full       a full reconciliation, nothing changed
  budget     -budget-n creates against an emulator enforcing -rate
  latency    -latency-n creates with -latency added to every request,
             one write at a time and then -concurrency at once

Flags:
`

var allScenarios = []string{"first", "idle", "touched", "delta_1", "delta_100", "full", "budget", "latency"}

type config struct {
	n, budgetN, latencyN int
	seed                 uint64
	rate                 float64 // requests per second per rate scope, in the budget scenario
	latency              time.Duration
	concurrency          int
	chunkSize            int
	maxRuns              int
	scenarios            []string
	cpuProfile           string
	memProfile           string
	logLevel             slog.Level
}

func parseConfig(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("mhero-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usage)
		fs.PrintDefaults()
	}
	fs.IntVar(&c.n, "n", 100000, "providers in the registry of the first … full scenarios")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the generated registry: the same seed, the same providers")
	fs.Float64Var(&c.rate, "rate", 100, "RapidPro `requests/s` per rate scope in the budget scenario: the emulator allows 3600 per 3600/rate seconds, and the service is told 3600·rate per hour")
	fs.IntVar(&c.budgetN, "budget-n", 5000, "providers (all created) in the budget scenario")
	fs.DurationVar(&c.latency, "latency", 20*time.Millisecond, "delay added to every request of the service in the latency scenario")
	fs.IntVar(&c.latencyN, "latency-n", 2000, "providers (all created) in the latency scenario")
	fs.IntVar(&c.concurrency, "concurrency", 8, "writes to RapidPro in flight at once, in every scenario but the latency scenario's one-at-a-time baseline")
	fs.IntVar(&c.chunkSize, "chunk-size", 0, "changed providers the service holds mapped at once (0: the service's default)")
	fs.IntVar(&c.maxRuns, "max-runs", 5, "most runs the first sync may take to leave nothing pending")
	scenarios := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run; those before a picked one that it needs run unmeasured")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the scenarios run to this file")
	fs.StringVar(&c.memProfile, "memprofile", "", "write a heap profile to this file, taken when the live heap was largest (in use then, and allocations until then)")
	logLevel := fs.String("log-level", "warn", "level of the service's and the bench's logs on stderr: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("mhero-bench takes no arguments, got %q", fs.Args())
	}
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	var problems []string
	for _, s := range strings.Split(*scenarios, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allScenarios, s) {
			problems = append(problems, fmt.Sprintf("unknown scenario %q (scenarios: %s)", s, strings.Join(allScenarios, ", ")))
		} else if !slices.Contains(c.scenarios, s) {
			c.scenarios = append(c.scenarios, s)
		}
	}
	for _, v := range []struct {
		name  string
		value int
	}{{"n", c.n}, {"budget-n", c.budgetN}, {"latency-n", c.latencyN}, {"concurrency", c.concurrency}, {"max-runs", c.maxRuns}} {
		if v.value < 1 {
			problems = append(problems, fmt.Sprintf("-%s %d must be 1 or more", v.name, v.value))
		}
	}
	if c.chunkSize < 0 {
		problems = append(problems, fmt.Sprintf("-chunk-size %d must be 0 or more", c.chunkSize))
	}
	if c.rate <= 0 {
		problems = append(problems, fmt.Sprintf("-rate %g must be above 0", c.rate))
	}
	if c.latency < 0 {
		problems = append(problems, fmt.Sprintf("-latency %s must not be negative", c.latency))
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return c, nil
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if os.Getenv(roleEnv) == roleFakes {
		if err := serveFakes(os.Stdin, os.Stdout, logger); err != nil {
			logger.Error("fakes stopped", "err", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mhero-bench:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	f, err := startFakes()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("fakes: %w", cerr))
		}
	}()
	if cfg.cpuProfile != "" {
		pf, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var heap *heapPeak
	if cfg.memProfile != "" {
		heap = watchHeap(200 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "# mhero-bench %s GOMAXPROCS=%d %s/%s %s n=%d seed=%d rate=%g latency=%s concurrency=%d chunk-size=%d budget-n=%d latency-n=%d\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format(time.RFC3339),
		cfg.n, cfg.seed, cfg.rate, cfg.latency, cfg.concurrency, cfg.chunkSize, cfg.budgetN, cfg.latencyN)
	b := &bench{cfg: cfg, out: stdout, fakes: f, logger: logger}
	defer b.closeMain()
	for _, s := range allScenarios {
		if !slices.Contains(cfg.scenarios, s) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		logger.Info("scenario", "name", s)
		if err := b.scenario(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	if heap != nil {
		return heap.write(cfg.memProfile)
	}
	return nil
}
