package netif

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSysctlsConnReuseModeOnlyBefore59(t *testing.T) {
	t.Parallel()
	has := func(release string) bool {
		return slices.ContainsFunc(Sysctls(release, false), func(s Sysctl) bool { return s.Path == "net/ipv4/vs/conn_reuse_mode" })
	}
	for release, want := range map[string]bool{"4.19.0-25-amd64": true, "5.8.18": true, "5.9.0": false, "6.1.0-18-amd64": false, "6.18.44-fc": false} {
		if got := has(release); got != want {
			t.Errorf("%s: conn_reuse_mode set = %v, want %v", release, got, want)
		}
	}
}

func TestApplySysctlsWritesOnlyChanges(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	ss := Sysctls("6.1.0", true)
	for i, s := range ss {
		p := filepath.Join(root, s.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		v := "0\n"
		if i == 0 {
			v = s.Value + "\n"
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	changed, err := ApplySysctls(root, ss)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != len(ss)-1 {
		t.Errorf("changed %v, want all but %s", changed, ss[0])
	}
	for _, s := range ss {
		b, _ := os.ReadFile(filepath.Join(root, s.Path))
		if string(b) != s.Value+"\n" {
			t.Errorf("%s = %q", s, b)
		}
	}
	if again, err := ApplySysctls(root, ss); err != nil || len(again) != 0 {
		t.Errorf("second apply changed %v, err %v", again, err)
	}
}
