// Command promparse parses the Prometheus text exposition in the file it is given with the
// parser Prometheus itself uses (github.com/prometheus/common/expfmt, Debian's package) and
// prints one JSON object: each family's type, help and samples (labels and value; a histogram's
// value is its sample count, after checking its buckets never decrease). A parse error exits 1.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/common/expfmt"
)

type sample struct {
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

type family struct {
	Type    string   `json:"type"`
	Help    string   `json:"help"`
	Samples []sample `json:"samples"`
}

func main() {
	file, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "promparse:", err)
		os.Exit(1)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "promparse:", err)
		os.Exit(1)
	}
	out := map[string]family{}
	for name, f := range families {
		result := family{Type: strings.ToLower(f.GetType().String()), Help: f.GetHelp()}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, pair := range m.GetLabel() {
				labels[pair.GetName()] = pair.GetValue()
			}
			switch {
			case m.Counter != nil:
				result.Samples = append(result.Samples, sample{labels, m.GetCounter().GetValue()})
			case m.Gauge != nil:
				result.Samples = append(result.Samples, sample{labels, m.GetGauge().GetValue()})
			case m.Histogram != nil:
				h := m.GetHistogram()
				buckets := h.GetBucket()
				sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
				for i := 1; i < len(buckets); i++ {
					if buckets[i].GetCumulativeCount() < buckets[i-1].GetCumulativeCount() {
						fmt.Fprintf(os.Stderr, "promparse: %s: bucket counts decrease\n", name)
						os.Exit(1)
					}
				}
				result.Samples = append(result.Samples, sample{labels, float64(h.GetSampleCount())})
			default:
				result.Samples = append(result.Samples, sample{labels, m.GetUntyped().GetValue()})
			}
		}
		out[name] = result
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
