package ipvsnl_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	moby "github.com/moby/ipvs"

	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// coldSync programs svcs the way the syncer does on a cold start: per
// virtual server an add through the guard, then its real servers together.
func coldSync(ctx context.Context, g *ownership.Guard, svcs []ipvs.Service) error {
	for _, s := range svcs {
		if err := g.AddVirtualServer(ctx, s.VirtualServer); err != nil {
			return err
		}
		if err := errors.Join(ipvs.AddRealServers(ctx, g, s.Key(), s.RealServers)...); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkKernelColdSync programs the rule set of BenchmarkKernelIPVS
// (10,000 virtual servers x 10 real servers) into an empty IPVS, each
// contender in a fresh network namespace: kubelvs's guard as the syncer
// drives it (ownership ipset included), `ipvsadm -R` with the whole rule
// set on stdin, and kube-proxy's request-at-a-time pattern. Compare
// contenders within one run: absolute figures in a guest vary by 2x.
func BenchmarkKernelColdSync(b *testing.B) {
	ctx := context.Background()
	kerneltest.Require(b)
	svcs := benchRuleSet()
	size := fmt.Sprintf("%dx%d", benchServices, benchReals)
	var listing time.Duration // excluded from s/sync below: not part of the sync
	measure := func(b *testing.B, f func() error) {
		var d time.Duration
		listing = 0
		for i := 0; i < b.N; i++ {
			kerneltest.InFreshNetns(b, func() {
				start, l0 := time.Now(), listing
				if err := f(); err != nil {
					b.Error(err)
				}
				d += time.Since(start) - (listing - l0)
			})
		}
		b.ReportMetric(d.Seconds()/float64(b.N), "s/sync")
		b.ReportMetric(float64(d.Nanoseconds())/float64(b.N*benchServices*(1+benchReals)), "ns/object")
	}
	b.Run("guard-"+size, func(b *testing.B) {
		measure(b, func() error {
			sets, err := ipsetnl.New()
			if err != nil {
				return err
			}
			defer sets.Close()
			own, err := ownership.NewSetRecords(ctx, sets)
			if err != nil {
				return err
			}
			raw, err := ipvsnl.New()
			if err != nil {
				return err
			}
			g := ownership.NewGuard(raw, own)
			defer g.Close()
			// What the syncer's Adopt does first.
			if _, err := g.ListVirtualServers(ctx); err != nil {
				return err
			}
			if err := coldSync(ctx, g, svcs); err != nil {
				return err
			}
			// What a listing of the whole table costs (a guard takes a
			// new one when a burst of adds outlives its listing).
			start := time.Now()
			_, err = g.ListVirtualServers(ctx)
			listing += time.Since(start)
			return err
		})
		b.ReportMetric(listing.Seconds()/float64(b.N), "s/listing")
	})
	b.Run("ipvsadm-R-"+size, func(b *testing.B) {
		rules := kerneltest.IPVSAdmRules(svcs, false)
		measure(b, func() error {
			cmd := exec.Command("ipvsadm", "-R")
			cmd.Stdin = strings.NewReader(rules)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("ipvsadm -R: %v: %s", err, out)
			}
			return nil
		})
	})
	b.Run("kube-proxy-"+size, func(b *testing.B) {
		measure(b, func() error {
			h, err := moby.New("")
			if err != nil {
				return err
			}
			defer h.Close()
			_, err = kerneltest.KubeProxyPattern(h, svcs)
			return err
		})
	})
}
