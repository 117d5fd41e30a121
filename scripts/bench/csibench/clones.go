package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
)

// The clone numbers the controller issue asks about; each is reported over the window of
// `window` calls ending at it (clone #1 uses calls 1..window).
var reportedClones = []int{1, 1000, 10000}

// cloneRun is one storm: `count` CreateVolume-from-snapshot calls at one concurrency.
type cloneRun struct {
	concurrency int
	latencies   []time.Duration // by sequence number (the order calls were issued), 0-based
	failed      []bool
	errors      int
	firstError  string
	elapsed     time.Duration
}

func runClones(arguments []string) error {
	flags := flag.NewFlagSet("clones", flag.ExitOnError)
	socket := flags.String("socket", "", "driver socket path")
	count := flags.Int("count", 10000, "clones per concurrency level")
	levels := flags.String("concurrency", "1,16", "comma-separated concurrency levels, run in order")
	window := flags.Int("window", 100, "calls per percentile window")
	goldenSize := flags.Int64("golden-size", 1<<30, "size of the golden volume in bytes")
	asJSON := flags.Bool("json", false, "print one JSON object instead of a table")
	jsonOut := flags.String("json-out", "", "also write the JSON object to this file")
	series := flags.String("series", "", "directory to write each run's per-call latencies to (CSV)")
	flags.Parse(arguments)
	if *socket == "" {
		return fmt.Errorf("-socket is required")
	}

	conn, err := dial(*socket)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	controller := csi.NewControllerClient(conn)

	ctx, cancel := callContext()
	golden, err := controller.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               "bench-golden",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: *goldenSize},
		VolumeCapabilities: []*csi.VolumeCapability{capability(false)},
	})
	cancel()
	if err != nil {
		return fmt.Errorf("create golden volume: %w", err)
	}

	var runs []*cloneRun
	for _, field := range strings.Split(*levels, ",") {
		concurrency, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || concurrency < 1 {
			return fmt.Errorf("bad concurrency %q", field)
		}
		// Each level clones a fresh snapshot of the golden volume.
		ctx, cancel := callContext()
		snapshot, err := controller.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{
			Name:           fmt.Sprintf("bench-golden-snap-c%d", concurrency),
			SourceVolumeId: golden.Volume.VolumeId,
		})
		cancel()
		if err != nil {
			return fmt.Errorf("create snapshot: %w", err)
		}
		run := storm(controller, snapshot.Snapshot.SnapshotId, *count, concurrency)
		runs = append(runs, run)
		if *series != "" {
			if err := run.writeSeries(filepath.Join(*series, fmt.Sprintf("clones-c%d.csv", concurrency))); err != nil {
				return err
			}
		}
		if !*asJSON {
			fmt.Fprintf(os.Stderr, "concurrency %d: %d clones in %.2f s, %d errors\n",
				concurrency, *count, run.elapsed.Seconds(), run.errors)
		}
	}

	report := jsonReport(runs, *count, *window)
	if *jsonOut != "" {
		encoded, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(encoded, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(report)
	}
	printTable(runs, *count, *window)
	return nil
}

// storm issues `count` clones of `snapshotID`; workers take sequence numbers in issue order.
func storm(controller csi.ControllerClient, snapshotID string, count, concurrency int) *cloneRun {
	run := &cloneRun{
		concurrency: concurrency,
		latencies:   make([]time.Duration, count),
		failed:      make([]bool, count),
	}
	var next int64 = -1
	var mutex sync.Mutex
	var group sync.WaitGroup
	source := &csi.VolumeContentSource{
		Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapshotID}},
	}
	start := time.Now()
	for worker := 0; worker < concurrency; worker++ {
		group.Add(1)
		go func() {
			defer group.Done()
			for {
				sequence := int(atomic.AddInt64(&next, 1))
				if sequence >= count {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
				began := time.Now()
				_, err := controller.CreateVolume(ctx, &csi.CreateVolumeRequest{
					Name:                fmt.Sprintf("bench-clone-c%d-%06d", concurrency, sequence+1),
					VolumeCapabilities:  []*csi.VolumeCapability{capability(false)},
					VolumeContentSource: source,
				})
				run.latencies[sequence] = time.Since(began)
				cancel()
				if err != nil {
					mutex.Lock()
					run.failed[sequence] = true
					if run.errors == 0 {
						run.firstError = err.Error()
					}
					run.errors++
					mutex.Unlock()
				}
			}
		}()
	}
	group.Wait()
	run.elapsed = time.Since(start)
	return run
}

// percentile is the nearest-rank percentile of `samples` in milliseconds.
func percentile(samples []time.Duration, p float64) float64 {
	if len(samples) == 0 {
		return math.NaN()
	}
	sorted := append([]time.Duration(nil), samples...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	return float64(sorted[rank].Nanoseconds()) / 1e6
}

// windowEndingAt is calls clone-window+1 ... clone (1-based), clipped to the run.
func (run *cloneRun) windowEndingAt(clone, window int) []time.Duration {
	first := clone - window
	if first < 0 {
		first = 0
	}
	if clone < window {
		clone = window
	}
	if clone > len(run.latencies) {
		clone = len(run.latencies)
	}
	return run.latencies[first:clone]
}

func (run *cloneRun) throughput() float64 {
	return float64(len(run.latencies)) / run.elapsed.Seconds()
}

func (run *cloneRun) writeSeries(path string) error {
	var builder strings.Builder
	builder.WriteString("sequence,latency_ms,failed\n")
	for i, latency := range run.latencies {
		fmt.Fprintf(&builder, "%d,%.3f,%t\n", i+1, float64(latency.Nanoseconds())/1e6, run.failed[i])
	}
	return os.WriteFile(path, []byte(builder.String()), 0o644)
}

func round(value float64) float64 { return math.Round(value*1000) / 1000 }

func jsonReport(runs []*cloneRun, count, window int) map[string]interface{} {
	report := map[string]interface{}{
		"grpc_clone_count":  count,
		"grpc_clone_window": window,
	}
	for _, run := range runs {
		c := run.concurrency
		for _, clone := range reportedClones {
			if clone > count {
				continue
			}
			samples := run.windowEndingAt(clone, window)
			report[fmt.Sprintf("grpc_clone_p50_ms_at_%d_c%d", clone, c)] = round(percentile(samples, 50))
			report[fmt.Sprintf("grpc_clone_p99_ms_at_%d_c%d", clone, c)] = round(percentile(samples, 99))
		}
		report[fmt.Sprintf("grpc_clone_p50_ms_all_c%d", c)] = round(percentile(run.latencies, 50))
		report[fmt.Sprintf("grpc_clone_p99_ms_all_c%d", c)] = round(percentile(run.latencies, 99))
		report[fmt.Sprintf("grpc_clone_throughput_per_s_c%d", c)] = round(run.throughput())
		report[fmt.Sprintf("grpc_clone_seconds_c%d", c)] = round(run.elapsed.Seconds())
		report[fmt.Sprintf("grpc_clone_errors_c%d", c)] = run.errors
		if run.errors > 0 {
			report[fmt.Sprintf("grpc_clone_first_error_c%d", c)] = run.firstError
		}
	}
	return report
}

func printTable(runs []*cloneRun, count, window int) {
	fmt.Printf("gRPC CreateVolume from snapshot: %d clones per concurrency, one connection\n", count)
	fmt.Printf("(percentiles over the %d calls ending at clone #N, numbered in issue order)\n\n", window)
	fmt.Printf("%-12s %-10s %-12s %10s %10s\n", "concurrency", "clone #", "calls", "p50 ms", "p99 ms")
	for _, run := range runs {
		for _, clone := range reportedClones {
			if clone > count {
				continue
			}
			samples := run.windowEndingAt(clone, window)
			last := clone
			if last < window {
				last = window
			}
			fmt.Printf("%-12d %-10d %-12s %10.2f %10.2f\n", run.concurrency, clone,
				fmt.Sprintf("%d-%d", last-len(samples)+1, last), percentile(samples, 50), percentile(samples, 99))
		}
		fmt.Printf("%-12d %-10s %-12s %10.2f %10.2f\n", run.concurrency, "all",
			fmt.Sprintf("1-%d", count), percentile(run.latencies, 50), percentile(run.latencies, 99))
	}
	fmt.Println()
	fmt.Printf("%-12s %12s %10s %8s\n", "concurrency", "clones/s", "seconds", "errors")
	for _, run := range runs {
		fmt.Printf("%-12d %12.1f %10.2f %8d\n", run.concurrency, run.throughput(), run.elapsed.Seconds(), run.errors)
		if run.errors > 0 {
			fmt.Printf("  first error: %s\n", run.firstError)
		}
	}
}
