package ipvsnl_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

const benchReals = 10

// benchServices is 10,000; KUBELVS_BENCH_SERVICES overrides it to study
// how costs scale.
var benchServices = func() int {
	if n, err := strconv.Atoi(os.Getenv("KUBELVS_BENCH_SERVICES")); err == nil && n > 0 {
		return n
	}
	return 10000
}()

// benchRuleSet returns benchServices TCP virtual servers with benchReals
// masqueraded real servers each.
func benchRuleSet() []ipvs.Service { return kerneltest.RuleSet(benchServices, benchReals) }

func program(b *testing.B, g *ownership.Guard, svcs []ipvs.Service) {
	ctx := context.Background()
	for _, s := range svcs {
		if err := g.AddVirtualServer(ctx, s.VirtualServer); err != nil {
			b.Fatal(err)
		}
		for _, rs := range s.RealServers {
			if err := g.AddRealServer(ctx, s.Key(), rs); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func unprogram(b *testing.B, g *ownership.Guard, svcs []ipvs.Service) {
	ctx := context.Background()
	for _, s := range svcs {
		if err := g.DeleteVirtualServer(ctx, s.Key()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKernelIPVS measures, on one rule set of 10,000 virtual servers x
// 10 real servers: adding it through the ownership guard (what the agent
// does), listing it back with every real server, deleting it, and, as the
// baseline, `ipvsadm -R` restoring the identical rule set.
func BenchmarkKernelIPVS(b *testing.B) {
	ctx := context.Background()
	g := newKernelGuard(b)
	svcs := benchRuleSet()
	perRule := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchServices*(1+benchReals)), "ns/object")
	}

	b.Run(fmt.Sprintf("add-%dx%d", benchServices, benchReals), func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			program(b, g, svcs)
			if i < b.N-1 {
				b.StopTimer()
				unprogram(b, g, svcs)
				b.StartTimer()
			}
		}
		perRule(b)
	})
	b.Run(fmt.Sprintf("list-%dx%d", benchServices, benchReals), func(b *testing.B) {
		if vs, err := g.ListVirtualServers(ctx); err != nil || len(vs) < benchServices {
			program(b, g, svcs) // run on its own (-bench filter)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			got, err := ipvs.List(ctx, g, g.Owns)
			if err != nil {
				b.Fatal(err)
			}
			if len(got) != benchServices || len(got[0].RealServers) != benchReals {
				b.Fatalf("listed %d services", len(got))
			}
		}
		perRule(b)
	})
	b.Run(fmt.Sprintf("delete-%dx%d", benchServices, benchReals), func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if i > 0 || !g.Owns(svcs[0].Key()) {
				b.StopTimer()
				program(b, g, svcs)
				b.StartTimer()
			}
			unprogram(b, g, svcs)
		}
	})
	b.Run(fmt.Sprintf("ipvsadm-R-%dx%d", benchServices, benchReals), func(b *testing.B) {
		add, del := kerneltest.IPVSAdmRules(svcs, false), kerneltest.IPVSAdmRules(svcs, true)
		for i := 0; i < b.N; i++ {
			cmd := exec.Command("ipvsadm", "-R")
			cmd.Stdin = strings.NewReader(add)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("ipvsadm -R: %v: %s", err, out)
			}
			b.StopTimer()
			cmd = exec.Command("ipvsadm", "-R")
			cmd.Stdin = strings.NewReader(del)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("ipvsadm -R (delete): %v: %s", err, out)
			}
			b.StartTimer()
		}
		perRule(b)
	})
}
