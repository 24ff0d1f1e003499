package envtest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// The controller folds NodeReports (one per node, as agents with
// --node-reports write them) into a VirtualService's Programmed condition
// without writing anything per node into it: a node whose watermark passed
// the generation counts as programmed, one that lists the VirtualService as
// failed makes Programmed False naming it, a node behind keeps it Pending,
// and a node that goes away stops counting.
func TestControllerFoldsNodeReportObjects(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "ctrl-reports")
	spec := validSpec()
	spec.Addresses = []lvsv1.IPAddress{"10.96.0.13"}
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: spec}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(vs)
	waitCondition(t, key, lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	for _, n := range []string{"report-a", "report-b"} {
		node(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	// report writes a node's NodeReport as its agent would: a watermark
	// and the failures.
	report := func(node string, watermark string, failed ...lvsv1.NodeReportFailure) {
		t.Helper()
		r := &lvsv1.NodeReport{ObjectMeta: metav1.ObjectMeta{Name: node}}
		err := k8s.Get(ctx, client.ObjectKeyFromObject(r), r)
		r.Status = lvsv1.NodeReportStatus{ResourceVersion: watermark, Failed: failed, FailedCount: int32(len(failed)), VirtualServices: 1}
		if err == nil {
			err = k8s.Update(ctx, r)
		} else {
			err = k8s.Create(ctx, r)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), r) })
	}
	// synced is a watermark past every change of the VirtualService so
	// far: its current resourceVersion (watermarks only grow).
	synced := func() string {
		t.Helper()
		var cur lvsv1.VirtualService
		if err := k8s.Get(ctx, key, &cur); err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseUint(cur.ResourceVersion, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return strconv.FormatUint(n, 10)
	}
	far := synced()
	// node-a is behind (watermark 1), node-b has synced everything.
	report("report-a", "1")
	report("report-b", far)
	c := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionFalse, "Pending")
	if m := meta.FindStatusCondition(c.Status.Conditions, lvsv1.ConditionProgrammed).Message; !strings.Contains(m, "report-a") || strings.Contains(m, "report-b") {
		t.Errorf("Pending names %q: want report-a only", m)
	}
	report("report-a", far)
	got := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed")
	if len(got.Status.Nodes) != 0 {
		t.Fatalf("the controller wrote per-node entries: %+v", got.Status.Nodes)
	}
	// node-b fails this generation: Programmed False, naming it.
	report("report-b", far, lvsv1.NodeReportFailure{Namespace: ns, Name: "web", Generation: got.Generation, Message: "IPVS: file exists"})
	f := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionFalse, "ProgrammingFailed")
	if m := meta.FindStatusCondition(f.Status.Conditions, lvsv1.ConditionProgrammed).Message; !strings.Contains(m, "report-b: IPVS: file exists") {
		t.Errorf("ProgrammingFailed says %q", m)
	}
	// node-b goes away: it stops counting.
	if err := k8s.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "report-b"}}); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed")
	// A new generation waits for node-a's watermark to pass it.
	toggleScheduler(t, key)
	p := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionFalse, "Pending")
	if p.Generation < 2 {
		t.Fatalf("generation %d", p.Generation)
	}
	report("report-a", synced())
	waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed")
}

// A node that starts reporting after a VirtualService was Programmed on
// the others changes its count, and a node behind makes it Pending again.
func TestANodeThatStartsReportingCounts(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "ctrl-late")
	spec := validSpec()
	spec.Addresses = []lvsv1.IPAddress{"10.96.0.15"}
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: spec}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(vs)
	waitCondition(t, key, lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	for _, n := range []string{"late-a", "late-b"} {
		node(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	create := func(name, watermark string) {
		t.Helper()
		r := &lvsv1.NodeReport{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: lvsv1.NodeReportStatus{ResourceVersion: watermark}}
		if err := k8s.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), r) })
	}
	var cur lvsv1.VirtualService
	if err := k8s.Get(ctx, key, &cur); err != nil {
		t.Fatal(err)
	}
	create("late-a", cur.ResourceVersion)
	c := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed")
	if m := meta.FindStatusCondition(c.Status.Conditions, lvsv1.ConditionProgrammed).Message; !strings.Contains(m, "on 1 nodes") {
		t.Fatalf("Programmed says %q", m)
	}
	create("late-b", "1")
	p := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionFalse, "Pending")
	if m := meta.FindStatusCondition(p.Status.Conditions, lvsv1.ConditionProgrammed).Message; !strings.Contains(m, "late-b") {
		t.Fatalf("Pending says %q", m)
	}
}

// toggleScheduler changes a VirtualService's scheduler (rr and wrr), so
// that its generation moves on.
func toggleScheduler(t *testing.T, key client.ObjectKey) {
	t.Helper()
	eventually(t, 10*time.Second, "change the spec", func() error {
		var cur lvsv1.VirtualService
		if err := k8s.Get(context.Background(), key, &cur); err != nil {
			return err
		}
		if cur.Spec.Scheduler == lvsv1.SchedulerRoundRobin {
			cur.Spec.Scheduler = lvsv1.SchedulerWeightedRoundRobin
		} else {
			cur.Spec.Scheduler = lvsv1.SchedulerRoundRobin
		}
		return k8s.Update(context.Background(), &cur)
	})
}
