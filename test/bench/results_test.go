package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Results is bench/results.json.
type Results struct {
	Machine Machine `json:"machine"`
	Sizes   []Size  `json:"sizes"`
}

// Machine describes where the figures come from.
type Machine struct {
	Guest     string `json:"guest"` // uml or qemu (hack/run-in-vm.sh backend)
	Kernel    string `json:"kernel"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemoryMiB int    `json:"memory_mib"`
	Host      string `json:"host,omitempty"`
	GoVersion string `json:"go_version"`
	Ipvsadm   string `json:"ipvsadm"`
	Date      string `json:"date"`
}

// Size holds every figure for one number of virtual servers.
type Size struct {
	VirtualServers int `json:"virtual_servers"`
	RealServersPer int `json:"real_servers_per_virtual_server"`

	// Scenario 1: cold full sync from an empty kernel, seconds.
	Cold map[string]Timing `json:"cold_full_sync"`
	// Scenario 2: SyncAll again with nothing changed.
	Resync Timing `json:"resync_nothing_changed"`
	// Scenario 3: one real server replaced in one group, SyncGroup latency.
	Change Latency `json:"one_change"`
	// Scenario 3, during the periodic repair pass: single changes while
	// Verify (every resync period in the agent) walks the whole kernel.
	ChangeDuringVerify Latency `json:"one_change_during_verify"`
	Verify             Timing  `json:"verify"`
	// Scenario 4: one UDP real server removed with 100,000 flows present.
	Conntrack Flush `json:"conntrack_remove_backend"`
	// Scenario 5: an ipset of 20,000 members replaced.
	IPSet Timing `json:"ipset_replace_20000"`
	// Scenario 6: memory of the benchmark process building and syncing.
	Memory Memory `json:"memory"`
}

// Timing is one measured operation.
type Timing struct {
	Seconds float64 `json:"seconds"`
	counts
	Note string `json:"note,omitempty"`
}

// Latency summarizes many samples, milliseconds.
type Latency struct {
	Samples []float64 `json:"samples_ms"`
	P50     float64   `json:"p50_ms"`
	P90     float64   `json:"p90_ms"`
	P99     float64   `json:"p99_ms"`
	Max     float64   `json:"max_ms"`
	Writes  float64   `json:"writes_per_change"`
}

// Flush is the conntrack scenario.
type Flush struct {
	Flows       int     `json:"flows_in_table"`
	Deleted     int     `json:"flows_deleted"`
	SyncMs      float64 `json:"sync_ms"`
	FlushMs     float64 `json:"flush_ms"`
	TotalMs     float64 `json:"total_ms"`
	RealServers int     `json:"real_servers_removed"`
}

// Memory is read from /proc/self/status and runtime.MemStats.
type Memory struct {
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	HeapInuseMiB float64 `json:"heap_inuse_mib"`
	SysMiB       float64 `json:"go_sys_mib"`
	Note         string  `json:"note"`
}

func latency(ds []time.Duration) Latency {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	sorted := slices.Clone(ms)
	slices.Sort(sorted)
	q := func(p float64) float64 {
		if len(sorted) == 0 {
			return 0
		}
		i := int(p*float64(len(sorted))+0.5) - 1
		return sorted[max(0, min(i, len(sorted)-1))]
	}
	return Latency{Samples: ms, P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: q(1)}
}

func (r *Results) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
