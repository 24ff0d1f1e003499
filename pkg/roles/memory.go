package roles

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// agentGCPercent is the agent's GOGC unless the environment sets one. The
// agent runs on every node and its heap is mostly long-lived caches (every
// VirtualService and EndpointSlice) and the kernel state it programmed;
// what it allocates per change is small. Go's default (100) lets the heap
// grow to twice the live data before collecting; 50 caps it at one and a
// half times, for a little more collection work after bursts.
const agentGCPercent = 50

// memoryLimitShare is the part of the container's memory limit given to Go
// as a soft limit (the rest is for the binary, stacks and the kernel's
// accounting of the process), so the collector works harder as the heap
// nears the limit instead of the container being killed.
const memoryLimitShare = 0.9

// TuneAgentMemory is tuneMemory for the agent process, with the cgroup of
// its container.
func TuneAgentMemory() (gcPercent int, limit int64) { return tuneMemory("/sys/fs/cgroup") }

// tuneMemory applies agentGCPercent and, inside a memory-limited cgroup, a
// soft memory limit, unless GOGC or GOMEMLIMIT say otherwise. It returns
// what it set, for the log.
func tuneMemory(cgroupRoot string) (gcPercent int, limit int64) {
	gcPercent, limit = -1, -1
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
		gcPercent = agentGCPercent
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if l, err := cgroupMemoryLimit(cgroupRoot); err == nil && l > 0 {
			limit = int64(float64(l) * memoryLimitShare)
			debug.SetMemoryLimit(limit)
		}
	}
	return gcPercent, limit
}

// cgroupMemoryLimit reads the memory limit of the process's cgroup from
// cgroupRoot (/sys/fs/cgroup in a container): cgroup v2's memory.max, or
// v1's memory/memory.limit_in_bytes. 0 means no limit.
func cgroupMemoryLimit(cgroupRoot string) (int64, error) {
	data, err := os.ReadFile(filepath.Join(cgroupRoot, "memory.max"))
	if errors.Is(err, fs.ErrNotExist) {
		data, err = os.ReadFile(filepath.Join(cgroupRoot, "memory", "memory.limit_in_bytes"))
	}
	if err != nil {
		return 0, err
	}
	v := strings.TrimSpace(string(data))
	if v == "max" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, err
	}
	if n >= 1<<62 { // v1's "unlimited" is a page-rounded huge number
		return 0, nil
	}
	return n, nil
}
