package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kubelvs/kubelvs/pkg/roles"
)

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig; default: in-cluster config, then $KUBECONFIG, then ~/.kube/config")
	o := roles.AgentOptions{HealthChecks: true}
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "name of this node (default $NODE_NAME)")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":9741", `address of the Prometheus metrics endpoint ("0" turns it off)`)
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", true, "serve metrics over HTTPS to callers the API server authenticates and authorizes to GET /metrics (false: plain HTTP to anyone who reaches the address)")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", "127.0.0.1:9742", `address of /healthz and /readyz ("0" turns them off); the agent runs in the node's network, so only the node itself (its kubelet) reaches localhost`)
	fs.StringVar(&o.PprofBindAddress, "pprof-bind-address", "0", `address of Go's /debug/pprof profiles, e.g. 127.0.0.1:9743 ("0" turns them off)`)
	fs.DurationVar(&o.ResyncPeriod, "resync-period", roles.DefaultResyncPeriod, "how often to rebuild everything and repair drift in the kernel")
	fs.DurationVar(&o.DrainInterval, "drain-interval", time.Second, "how often to check draining real servers")
	fs.BoolVar(&o.ReportStatus, "report-status", true, "write this node's entry into VirtualService status (turn off in very large clusters)")
	fs.BoolVar(&o.NodeReports, "node-reports", true, "report what this node programmed in its NodeReport (one object per node, folded into each VirtualService's conditions by the controller); false: an entry in every VirtualService's status.nodes instead, which costs O(nodes²) watch events per change")
	fs.BoolVar(&o.HealthChecks, "health-checks", true, "run the health checks VirtualServices ask for")
	fs.BoolVar(&o.CleanupOnUninstall, "cleanup-on-uninstall", false, "when stopping after the agent saw its own DaemonSet deleted (or the API server answers it is gone), remove every kernel object kubelvs made; any doubt keeps the kernel (needs $POD_NAME and $POD_NAMESPACE)")
	fs.BoolVar(&o.BGP, "bgp", true, "announce the VIPs this node serves over BGP to the BGPPeers that select it (AddressPool spec.announce.bgp); no BGP runs until one does")
	routerID := fs.String("bgp-router-id", "", "this node's BGP identifier, an IPv4 address (default: the IPv4 address of the default route's interface)")
	fs.BoolVar(&o.Layer2, "layer2", true, "answer ARP and NDP for the VIPs this node owns (AddressPool spec.announce.layer2); needs $POD_NAMESPACE for the heartbeat Leases")
	fs.StringVar(&o.Layer2Interface, "layer2-interface", "", "the interface toward the clients that layer-2 announcement answers on (default: the default route's)")
	fs.DurationVar(&o.Layer2LeaseDuration, "layer2-lease-duration", roles.DefaultLayer2LeaseDuration, "how long after an agent's last heartbeat the others take its layer-2 addresses over (whole seconds, at least 2s)")
	fs.StringVar(&o.EndpointSliceSelector, "endpointslice-selector", "", endpointSliceSelectorUsage)
	o.PodName, o.PodNamespace = os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	zo := zap.Options{}
	zo.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, _, err := roles.EndpointSliceSelectors(o.EndpointSliceSelector); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if o.NodeName == "" {
		return fmt.Errorf("%w: --node-name (or $NODE_NAME) is required", errUsage)
	}
	if o.ResyncPeriod < time.Second || o.DrainInterval < 10*time.Millisecond {
		return fmt.Errorf("%w: --resync-period must be at least 1s and --drain-interval at least 10ms", errUsage)
	}
	if *routerID != "" {
		id, err := netip.ParseAddr(*routerID)
		if err != nil || !id.Is4() {
			return fmt.Errorf("%w: --bgp-router-id must be an IPv4 address, not %q", errUsage, *routerID)
		}
		o.BGPRouterID = id
	}
	if d := o.Layer2LeaseDuration; d < 2*time.Second || d%time.Second != 0 {
		return fmt.Errorf("%w: --layer2-lease-duration must be whole seconds, at least 2s", errUsage)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zo)))
	if gc, limit := roles.TuneAgentMemory(); gc >= 0 || limit >= 0 {
		ctrl.Log.WithName("agent").Info("memory tuning (GOGC and GOMEMLIMIT override it)", "gcPercent", gc, "softLimitBytes", limit)
	}
	cfg, err := loadConfig(*kubeconfig)
	if err != nil {
		return err
	}
	return roles.RunAgent(ctx, cfg, o)
}
