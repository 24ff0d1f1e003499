package envtest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

func TestPrinterColumns(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "printer")
	spec := validSpec()
	spec.Addresses = []lvsv1.IPAddress{"10.96.0.77", "2001:db8::77"}
	spec.Backends.Static = nil
	spec.Ports = append(spec.Ports, lvsv1.VirtualServicePort{Name: "https", Port: 443})
	spec.Scheduler = lvsv1.SchedulerMaglevHashing
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "table", Namespace: ns}, Spec: spec}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	// The suite's controller writes the status of every VirtualService
	// too (with no agent reporting: no backends, Programmed Unknown);
	// write ours again until the controller has nothing more to say.
	var table metav1.Table
	cs := kubernetes.NewForConfigOrDie(cfg)
	eventually(t, 20*time.Second, "the status columns show our status", func() error {
		var cur lvsv1.VirtualService
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
			return err
		}
		orig := cur.DeepCopy()
		cur.Status.ReadyBackends = "3/4"
		cur.Status.Ports = "80/TCP,443/TCP"
		cur.Status.Conditions = []metav1.Condition{{Type: lvsv1.ConditionProgrammed, Status: metav1.ConditionTrue, Reason: "Programmed", LastTransitionTime: metav1.Now()}}
		if err := k8s.Status().Patch(ctx, &cur, client.MergeFrom(orig)); err != nil {
			return err
		}
		raw, err := cs.RESTClient().Get().AbsPath("/apis/lvs.kubelvs.io/v1alpha1/namespaces", ns, "virtualservices").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		if err != nil {
			return err
		}
		table = metav1.Table{}
		if err := json.Unmarshal(raw, &table); err != nil {
			return err
		}
		if len(table.Rows) != 1 || len(table.Rows[0].Cells) < 6 || table.Rows[0].Cells[4] != "3/4" || table.Rows[0].Cells[5] != "True" {
			return fmt.Errorf("rows %v", table.Rows)
		}
		return nil
	})
	var names []string
	for _, c := range table.ColumnDefinitions {
		names = append(names, c.Name)
	}
	wantCols := []string{"Name", "Addresses", "Ports", "Scheduler", "Backends", "Programmed", "Age", "Allocated"}
	if len(names) != len(wantCols) {
		t.Fatalf("columns %v, want %v", names, wantCols)
	}
	for i := range wantCols {
		if names[i] != wantCols[i] {
			t.Fatalf("columns %v, want %v", names, wantCols)
		}
	}
	if len(table.Rows) != 1 {
		t.Fatalf("%d rows, want 1", len(table.Rows))
	}
	row := table.Rows[0].Cells
	t.Logf("kubectl get lvs row: %v", row)
	want := []any{"table", `["10.96.0.77","2001:db8::77"]`, "80/TCP,443/TCP", "mh", "3/4", "True"}
	for i, w := range want {
		if row[i] != w {
			t.Errorf("column %s: got %#v, want %#v", wantCols[i], row[i], w)
		}
	}
}
