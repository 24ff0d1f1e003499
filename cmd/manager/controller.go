package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kubelvs/kubelvs/pkg/lbservice"
	"github.com/kubelvs/kubelvs/pkg/roles"
)

func runController(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig; default: in-cluster config, then $KUBECONFIG, then ~/.kube/config")
	var o roles.ControllerOptions
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8080", `address of the Prometheus metrics endpoint ("0" turns it off)`)
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", true, "serve metrics over HTTPS to callers the API server authenticates and authorizes to GET /metrics (false: plain HTTP to anyone who reaches the address)")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", `address of /healthz and /readyz ("0" turns them off)`)
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader so that only one replica is active")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader election Lease (default $POD_NAMESPACE)")
	fs.BoolVar(&o.DefaultLoadBalancerClass, "default-load-balancer-class", false, "also serve Services of type LoadBalancer without a loadBalancerClass (besides those of class "+lbservice.Class+")")
	fs.StringVar(&o.EndpointSliceSelector, "endpointslice-selector", "", endpointSliceSelectorUsage)
	zo := zap.Options{}
	zo.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, _, err := roles.EndpointSliceSelectors(o.EndpointSliceSelector); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if o.LeaderElect && o.LeaderElectionNamespace == "" {
		if _, err := rest.InClusterConfig(); err != nil {
			return fmt.Errorf("%w: --leader-elect out of cluster needs --leader-election-namespace", errUsage)
		}
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zo)))
	cfg, err := loadConfig(*kubeconfig)
	if err != nil {
		return err
	}
	return roles.RunController(ctx, cfg, o)
}

// endpointSliceSelectorUsage documents the flag both roles take, with the
// same value.
const endpointSliceSelectorUsage = "label selector (e.g. lvs.kubelvs.io/backend=true) that the EndpointSlices agents watch must match, besides having the kubernetes.io/service-name label; " +
	"the EndpointSlice controller copies a Service's labels onto its slices, so label the Services that back VirtualServices. " +
	"Give agents and controller the same value: the controller flags VirtualServices whose Service does not match (Ready=False, ServiceNotSelected). Default: every Service's slices"

// parseFlags parses args and rejects positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// loadConfig reads the kubeconfig at path, or finds one the usual way. It
// lifts client-go's default client-side limit (5 requests/s) that a
// kubeconfig would otherwise get: an agent reporting status for thousands of
// VirtualServices must not queue behind it; API Priority and Fairness
// protects the server.
func loadConfig(path string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path == "" {
		if cfg, err = ctrl.GetConfig(); err != nil {
			return nil, fmt.Errorf("no API server configuration (pass --kubeconfig): %w", err)
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, nil
}
