package roles

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		name, file, content string
		want                int64
		wantErr             bool
	}{
		{"v2 limit", "memory.max", "268435456\n", 268435456, false},
		{"v2 unlimited", "memory.max", "max\n", 0, false},
		{"v1 limit", "memory/memory.limit_in_bytes", "536870912\n", 536870912, false},
		{"v1 unlimited", "memory/memory.limit_in_bytes", "9223372036854771712\n", 0, false},
		{"garbage", "memory.max", "lots\n", 0, true},
		{"no cgroup files", "", "", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if c.file != "" {
				p := filepath.Join(root, c.file)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(c.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := cgroupMemoryLimit(root)
			if (err != nil) != c.wantErr || got != c.want {
				t.Errorf("cgroupMemoryLimit = %d, %v; want %d, error %v", got, err, c.want, c.wantErr)
			}
		})
	}
}

func TestTuneMemory(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("268435456\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	gc, limit := tuneMemory(root)
	if gc != agentGCPercent || debug.SetGCPercent(-1) != agentGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", gc, agentGCPercent)
	}
	cgroupLimit := 268435456.0
	if want := int64(cgroupLimit * memoryLimitShare); limit != want || debug.SetMemoryLimit(-1) != want {
		t.Errorf("256 MiB cgroup: soft limit %d, want %d", limit, want)
	}

	// The environment wins.
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(1 << 40)
	t.Setenv("GOGC", "100")
	t.Setenv("GOMEMLIMIT", "1TiB")
	gc, limit = tuneMemory(root)
	if gc != -1 || limit != -1 || debug.SetGCPercent(-1) != 100 || debug.SetMemoryLimit(-1) != 1<<40 {
		t.Errorf("GOGC and GOMEMLIMIT set: tuneMemory changed them (%d, %d)", gc, limit)
	}
}
