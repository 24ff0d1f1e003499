package v1alpha1

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDefaultsMatchTheCRD reads every default of the generated CRDs'
// schemas and compares it with the constant the code applies.
func TestDefaultsMatchTheCRD(t *testing.T) {
	for file, want := range map[string]map[string]string{
		"lvs.kubelvs.io_virtualservices.yaml": {
			"spec.scheduler":                    string(DefaultScheduler),
			"spec.forwarding":                   string(DefaultForwarding),
			"spec.trafficPolicy":                string(DefaultTrafficPolicy),
			"spec.ports[].protocol":             string(DefaultProtocol),
			"spec.backends.static[].weight":     fmt.Sprint(DefaultStaticWeight),
			"spec.drain":                        fmt.Sprintf("map[timeoutSeconds:%d]", DefaultDrainTimeoutSeconds),
			"spec.drain.timeoutSeconds":         fmt.Sprint(DefaultDrainTimeoutSeconds),
			"spec.persistence.timeoutSeconds":   fmt.Sprint(DefaultPersistenceTimeoutSeconds),
			"spec.persistence.ipv4PrefixLength": fmt.Sprint(DefaultIPv4PrefixLength),
			"spec.persistence.ipv6PrefixLength": fmt.Sprint(DefaultIPv6PrefixLength),
			"spec.healthCheck.protocol":         string(DefaultHealthProtocol),
			"spec.healthCheck.intervalSeconds":  fmt.Sprint(DefaultHealthIntervalSeconds),
			"spec.healthCheck.timeoutSeconds":   fmt.Sprint(DefaultHealthTimeoutSeconds),
			"spec.healthCheck.rise":             fmt.Sprint(DefaultHealthRise),
			"spec.healthCheck.fall":             fmt.Sprint(DefaultHealthFall),
		},
		"lvs.kubelvs.io_addresspools.yaml": {
			"spec.autoAssign": fmt.Sprint(DefaultPoolAutoAssign),
		},
	} {
		t.Run(file, func(t *testing.T) { checkDefaults(t, "../../config/crd/bases/"+file, want) })
	}
}

func checkDefaults(t *testing.T, file string, want map[string]string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var walk func(path string, s map[string]any)
	walk = func(path string, s map[string]any) {
		if d, ok := s["default"]; ok {
			got[path] = fmt.Sprint(d)
		}
		if props, ok := s["properties"].(map[string]any); ok {
			for name, p := range props {
				walk(strings.TrimPrefix(path+"."+name, "."), p.(map[string]any))
			}
		}
		if items, ok := s["items"].(map[string]any); ok {
			walk(path+"[]", items)
		}
	}
	for _, v := range crd.Spec.Versions {
		if v.Name == "v1alpha1" {
			walk("", v.Schema.OpenAPIV3Schema)
		}
	}
	var paths []string
	for p := range got {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		w, ok := want[p]
		switch {
		case !ok:
			t.Errorf("the CRD defaults %s to %s: add a Default constant for it (defaults.go) and to this table", p, got[p])
		case got[p] != w:
			t.Errorf("the CRD defaults %s to %s, the code to %s", p, got[p], w)
		}
	}
	for p := range want {
		if _, ok := got[p]; !ok {
			t.Errorf("no default for %s in the CRD", p)
		}
	}
}
