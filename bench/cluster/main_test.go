package main

import (
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// Records written before there were two designs have none: they are
// status-nodes, and a new status-nodes record of the same N and kind
// replaces them; a node-reports record stands beside them.
func TestMergeKeysRecordsByDesign(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	old := `{"records": [{"nodes": 10, "kind": "virtualservice", "writes_per_change": 12},
		{"nodes": 10, "kind": "endpointslice", "writes_per_change": 21}]}`
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	recs := []record{
		{Design: designStatusNodes, Nodes: 10, Kind: kindVS, WritesPerChange: 13},
		{Design: designNodeReports, Nodes: 10, Kind: kindVS, WritesPerChange: 25},
	}
	if err := merge(path, options{}, recs); err != nil {
		t.Fatal(err)
	}
	r, err := readResults(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, x := range r.Records {
		got[x.Design+" "+x.Kind] = x.WritesPerChange
	}
	want := map[string]float64{"node-reports virtualservice": 25, "status-nodes virtualservice": 13, "status-nodes endpointslice": 21}
	if len(got) != len(want) || len(r.Records) != len(want) {
		t.Fatalf("records %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

func TestReportedOnAllCountsTheNodes(t *testing.T) {
	vs := func(msg string, gen int64, total int32) *lvsv1.VirtualService {
		v := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Generation: 2}}
		v.Status.Conditions = []metav1.Condition{{Type: lvsv1.ConditionProgrammed, Status: metav1.ConditionTrue,
			Reason: "Programmed", Message: msg, ObservedGeneration: gen}}
		v.Status.Backends = &lvsv1.BackendCounts{Total: total, Ready: total}
		return v
	}
	for _, tc := range []struct {
		vs    *lvsv1.VirtualService
		total int32
		want  bool
	}{
		{vs("programmed on 3 nodes", 2, 10), -1, true},
		{vs("programmed on 3 nodes", 2, 10), 10, true},
		{vs("programmed on 3 nodes", 2, 10), 11, false},
		{vs("programmed on 2 nodes", 2, 10), -1, false}, // a node has no report yet
		{vs("programmed on 30 nodes", 2, 10), -1, false},
		{vs("programmed on 3 nodes", 1, 10), -1, false}, // an older generation
	} {
		if got := reportedOnAll(tc.vs, 3, tc.total); got != tc.want {
			t.Errorf("%q at generation %d, total %d: %v, want %v", tc.vs.Status.Conditions[0].Message,
				tc.vs.Status.Conditions[0].ObservedGeneration, tc.total, got, tc.want)
		}
	}
	withEntry := vs("programmed on 3 nodes", 2, 10)
	withEntry.Status.Nodes = []lvsv1.NodeStatus{{Node: "n1"}}
	if reportedOnAll(withEntry, 3, -1) {
		t.Error("a status.nodes entry is not the NodeReports design")
	}
}
