//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// crdSchemas maps CRD name -> version -> the version's schema as JSON
// (keys sorted, numbers as JSON has them, so a file and the API server's
// copy compare equal when they mean the same).
type crdSchemas map[string]map[string]string

// chartCRDs reads the CRDs of a chart's crds/.
func chartCRDs(t *testing.T, chart string) crdSchemas {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chart, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s/crds: %v", chart, err)
	}
	out := crdSchemas{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(data, []byte("\n---")) {
			var crd map[string]any
			if err := yaml.Unmarshal(doc, &crd); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if crd == nil {
				continue
			}
			meta, _ := crd["metadata"].(map[string]any)
			out[fmt.Sprint(meta["name"])] = versionSchemas(crd)
		}
	}
	return out
}

// versionSchemas maps each version of a CRD object to its schema.
func versionSchemas(crd map[string]any) map[string]string {
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	out := map[string]string{}
	for _, v := range versions {
		m, _ := v.(map[string]any)
		b, err := json.Marshal(m["schema"])
		if err != nil {
			b = []byte(err.Error())
		}
		out[fmt.Sprint(m["name"])] = string(b)
	}
	return out
}

// checkCRDs fails t unless the cluster's CRDs have the schemas of want.
func (r *remote) checkCRDs(t *testing.T, want crdSchemas, when string) {
	t.Helper()
	for name, versions := range want {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("apiextensions.k8s.io/v1")
		u.SetKind("CustomResourceDefinition")
		if err := r.api.Get(context.Background(), client.ObjectKey{Name: name}, u); err != nil {
			t.Fatalf("CRD %s %s: %v", name, when, err)
		}
		got := versionSchemas(u.Object)
		for v, schema := range versions {
			if got[v] != schema {
				t.Fatalf("CRD %s version %s %s: the cluster's schema is not the chart's; first difference:\n%s", name, v, when, firstDiff(got[v], schema))
			}
		}
		if len(got) != len(versions) {
			t.Fatalf("CRD %s %s: the cluster has versions %v, the chart %v", name, when, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(versions)))
		}
	}
}

// firstDiff shows where two long strings part, with some context.
func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(0, i-120)
	return fmt.Sprintf("cluster: ...%s\nchart:   ...%s", a[from:min(len(a), i+120)], b[from:min(len(b), i+120)])
}
