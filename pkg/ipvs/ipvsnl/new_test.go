package ipvsnl_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
)

// TestNewWithoutIPVS runs on hosts whose kernel has no IPVS (ours): the
// constructor must say so and how to fix it, not panic or half-work.
func TestNewWithoutIPVS(t *testing.T) {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Skip("this kernel has IPVS loaded")
	}
	if ipvsnl.CheckKernel() == nil {
		t.Skip("this kernel can load IPVS")
	}
	h, err := ipvsnl.New()
	if err == nil {
		h.Close()
		t.Fatal("New succeeded on a kernel without IPVS")
	}
	if !errors.Is(err, ipvs.ErrNoIPVS) {
		t.Errorf("error %v does not wrap ErrNoIPVS", err)
	}
	for _, want := range []string{"no IPVS", "modprobe ip_vs", "CONFIG_IP_VS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
