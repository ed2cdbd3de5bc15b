package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// cpuTime is the CPU this process has used, user and system: the service's
// alone, since the fakes run in another process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS brings the heap back to what is live and returns the rest to
// the OS, then restarts the kernel's high-water mark (VmHWM) from the
// current RSS, so that the next peakRSS is one scenario's. It says whether
// the mark could be restarted (Linux only; elsewhere the peak is the
// process's).
func resetPeakRSS() bool {
	runtime.GC()
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// rss is the kernel's high-water mark of the resident set (VmHWM), and
// of it what is now mapped from files (RssFile: the binary and the state
// file's pages), in bytes: the peak as the OS reports it, Go heap, stacks
// and mapped files included.
func rss() (peak, file int64, err error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		// Not Linux: the process's whole-life peak, from rusage.
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0, 0, err
		}
		return ru.Maxrss * 1024, 0, nil
	}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		for _, f := range []struct {
			key  string
			into *int64
		}{{"VmHWM:", &peak}, {"RssFile:", &file}} {
			rest, ok := strings.CutPrefix(sc.Text(), f.key)
			if !ok {
				continue
			}
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("%s %q: %w", f.key, rest, err)
			}
			*f.into = kb * 1024
			found++
		}
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("no VmHWM or RssFile in /proc/self/status")
	}
	return peak, file, nil
}

// heapPeak keeps the heap profile of the moment the live heap was largest,
// so that a profile shows what the peak RSS was made of, not what was left
// at the end.
type heapPeak struct {
	stop, done chan struct{}
	max        uint64
	profile    bytes.Buffer
}

func watchHeap(every time.Duration) *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
			// The profile's in-use figures are as of the last GC, and so
			// is this live heap.
			metrics.Read(sample)
			if live := sample[0].Value.Uint64(); live > h.max {
				h.max = live
				h.profile.Reset()
				_ = pprof.Lookup("heap").WriteTo(&h.profile, 0)
			}
		}
	}()
	return h
}

// write stops watching and writes the profile of the peak to path.
func (h *heapPeak) write(path string) error {
	close(h.stop)
	<-h.done
	return os.WriteFile(path, h.profile.Bytes(), 0o644)
}

// delayed adds a network latency to every request, as the service would
// see it from a distant server; sleeping costs the service no CPU.
type delayed struct {
	next  http.RoundTripper
	delay time.Duration
}

func (d delayed) RoundTrip(r *http.Request) (*http.Response, error) {
	t := time.NewTimer(d.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	return d.next.RoundTrip(r)
}

// clock is the service's clock: real time, moved forward by hand between
// scenarios, so that record dates can be placed before or after a run's
// watermark without waiting for the real clock to pass them.
type clock struct{ ahead atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *clock) Advance(d time.Duration) { c.ahead.Add(int64(d)) }
