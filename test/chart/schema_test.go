package chart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSchemaRejects: each file under testdata/bad fails `helm template`
// through values.schema.json, with a message naming the value and the reason.
func TestSchemaRejects(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"replicas-zero.yaml":        {"at '/controller/replicas'", "minimum: got 0, want 1"},
		"tag-number.yaml":           {"at '/image/tag'", "got number, want string"},
		"loglevel-enum.yaml":        {"at '/agent/logLevel'", "value must be one of 'debug', 'info', 'error', 'panic'"},
		"resync-duration.yaml":      {"at '/agent/resyncPeriod'", "'five minutes' does not match pattern"},
		"resources-shape.yaml":      {"at '/controller/resources'", "additional properties 'memory' not allowed"},
		"typo-key.yaml":             {"at '/controller'", "additional properties 'replica' not allowed"},
		"port-range.yaml":           {"at '/agent/metricsPort'", "maximum: got 70,000, want 65,535"},
		"module-injection.yaml":     {"at '/agent/kernelSetup/modules/0'", "'ip_vs; reboot' does not match pattern"},
		"repository-empty.yaml":     {"at '/image/repository'", "minLength: got 0, want 1"},
		"addresspool-name.yaml":     {"at '/addressPools/0/name'", "'Shop_Pool' does not match pattern"},
		"default-class-string.yaml": {"at '/controller/defaultLoadBalancerClass'", "got string, want boolean"},
		"selector-type.yaml":        {"at '/endpointSliceSelector'", "got boolean, want string"},
	}
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(cases) {
		t.Errorf("testdata/bad has %d files, the table %d: keep them in step", len(files), len(cases))
	}
	for _, f := range files {
		want, ok := cases[filepath.Base(f)]
		if !ok {
			t.Errorf("%s has no expected message in the table", f)
			continue
		}
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			t.Parallel()
			_, stderr, err := helm(t, "template", release, chartDir, "-f", f)
			if err == nil {
				t.Fatalf("helm template accepted %s", f)
			}
			if !strings.Contains(stderr, "values don't meet the specifications of the schema") {
				t.Errorf("rejected, but not by the schema:\n%s", stderr)
			}
			for _, w := range want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestSchemaAcceptsDefaults guards against a schema stricter than values.yaml.
func TestSchemaAcceptsDefaults(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := helm(t, "template", release, chartDir, "-f", writeValues(t, string(b))); err != nil {
		t.Errorf("values.yaml itself fails: %v\n%s", err, stderr)
	}
}

// TestDigitTagThroughSetString: the README's install flags take a tag of
// digits only (a short commit hash) as a string, which --set would pass as
// a number for the schema to refuse (tag-number.yaml).
func TestDigitTagThroughSetString(t *testing.T) {
	t.Parallel()
	out, stderr, err := helm(t, "template", release, chartDir, "--namespace", namespace,
		"--set", "image.repository=registry.example/kubelvs", "--set-string", "image.tag=8526915")
	if err != nil {
		t.Fatalf("helm template with --set-string image.tag=8526915: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "image: registry.example/kubelvs:8526915") && !strings.Contains(out, `image: "registry.example/kubelvs:8526915"`) {
		t.Fatalf("the rendered chart does not run registry.example/kubelvs:8526915:\n%.2000s", out)
	}
	if _, _, err := helm(t, "template", release, chartDir, "--set", "image.tag=8526915"); err == nil {
		t.Fatal("helm template accepted --set image.tag=8526915 (a number)")
	}
}
