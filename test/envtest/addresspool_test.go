package envtest

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/test/corpus"
)

func pool(name string, spec lvsv1.AddressPoolSpec) *lvsv1.AddressPool {
	return &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func TestValidAddressPoolsAreAccepted(t *testing.T) {
	valid := corpus.ValidPoolSpecs()
	names := make([]string, 0, len(valid))
	for n := range valid {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			t.Parallel()
			spec := corpus.ValidPoolSpec()
			valid[n](&spec)
			if err := k8s.Create(context.Background(), pool("ok", spec), client.DryRunAll); err != nil {
				t.Fatalf("refused: %.2000v", err)
			}
		})
	}
}

func TestInvalidAddressPoolsAreRejected(t *testing.T) {
	cases, stored := corpus.AddressPools()
	if len(cases) < 20 {
		t.Fatalf("only %d invalid AddressPools; the issue asks for at least 20", len(cases))
	}
	// The CRD cannot express these: the API server stores them, and
	// validation.AddressPool refuses them (pkg/validation's tests).
	for _, tc := range stored {
		t.Run("stored/"+tc.Name, func(t *testing.T) {
			t.Parallel()
			spec := corpus.ValidPoolSpec()
			tc.Mutate(&spec)
			if err := k8s.Create(context.Background(), pool("stored", spec), client.DryRunAll); err != nil {
				t.Fatalf("the API server refuses it now (%v): move it to the API-refused cases of test/corpus", err)
			}
		})
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			spec := corpus.ValidPoolSpec()
			tc.Mutate(&spec)
			err := k8s.Create(context.Background(), pool("bad", spec), client.DryRunAll)
			if err == nil {
				t.Fatalf("the API server accepted an invalid AddressPool")
			}
			var se *apierrors.StatusError
			if !errors.As(err, &se) || !apierrors.IsInvalid(err) || se.ErrStatus.Details == nil {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			for _, c := range se.ErrStatus.Details.Causes {
				if c.Field == tc.Field && strings.Contains(c.Message, tc.Msg) {
					return
				}
			}
			t.Fatalf("no cause names %s with %q; the API server said: %.2000v", tc.Field, tc.Msg, err)
		})
	}
}

// TestAddressPoolDefaultsAndColumns: a pool that leaves autoAssign out
// gets true, and kubectl get lvspool shows its columns.
func TestAddressPoolDefaultsAndColumns(t *testing.T) {
	ctx := context.Background()
	p := pool("columns", lvsv1.AddressPoolSpec{
		CIDRs:  []lvsv1.PoolCIDR{"192.0.2.0/24", "2001:db8::/64"},
		Ranges: []lvsv1.AddressRange{{First: "198.51.100.1", Last: "198.51.100.9"}},
	})
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(ctx, p); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	})
	if p.Spec.AutoAssign == nil || *p.Spec.AutoAssign != lvsv1.DefaultPoolAutoAssign || p.Spec.NamespaceSelector != nil {
		t.Fatalf("stored spec %+v: want autoAssign defaulted to true and no selector", p.Spec)
	}
	raw, err := kubernetes.NewForConfigOrDie(cfg).RESTClient().Get().AbsPath("/apis/lvs.kubelvs.io/v1alpha1/addresspools", p.Name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range table.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	if got, want := strings.Join(cols, ","), "Name,CIDRs,Ranges,Auto Assign,Age"; got != want {
		t.Fatalf("columns %s, want %s", got, want)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("rows %v", table.Rows)
	}
	row := table.Rows[0].Cells
	t.Logf("kubectl get lvspool -o wide: %v", row)
	if row[1] != `["192.0.2.0/24","2001:db8::/64"]` || row[2] != `[{"first":"198.51.100.1","last":"198.51.100.9"}]` || row[3] != true {
		t.Fatalf("row %#v", row)
	}
}
