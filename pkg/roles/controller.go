// Package roles wires the kubelvs roles (controller, agent) from their
// options: the managers, probes, metrics and reconcilers. cmd/manager only
// parses flags into these options.
package roles

import (
	"context"
	"fmt"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/controllers"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/metricsauth"
)

// Scheme knows the built-in Kubernetes types and ours.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(lvsv1.AddToScheme(s))
	return s
}

// ControllerOptions configure the controller role.
type ControllerOptions struct {
	// MetricsBindAddress serves Prometheus metrics; "0" turns them off.
	MetricsBindAddress string
	// MetricsSecure serves them over HTTPS to callers the API server
	// authenticates and authorizes (GET on the /metrics non-resource URL).
	MetricsSecure bool
	// HealthProbeBindAddress serves /healthz and /readyz; "0" turns them off.
	HealthProbeBindAddress string
	// LeaderElect makes only one replica active at a time.
	LeaderElect bool
	// LeaderElectionNamespace holds the Lease; required out of cluster.
	LeaderElectionNamespace string
	// DefaultLoadBalancerClass makes kubelvs the cluster's default
	// implementation of Services of type LoadBalancer: it also serves those
	// without a loadBalancerClass, besides those of lbservice.Class.
	DefaultLoadBalancerClass bool
	// SecondInProcess lets a test run another controller role in a process
	// that runs one already (controller-runtime refuses a second controller
	// of the same name: their metrics would mix).
	SecondInProcess bool
	// EndpointSliceSelector: the agents' (AgentOptions). The controller
	// counts backends only from the EndpointSlices it selects, as agents
	// see them, and flags VirtualServices whose Service it does not select.
	EndpointSliceSelector string
}

// MetricsOptions serves metrics at bind: plain HTTP, or when secure HTTPS
// (a self-signed certificate kept in memory) with every request's bearer
// token checked by a TokenReview and its right to GET /metrics by a
// SubjectAccessReview, as kube-controller-manager does.
func MetricsOptions(bind string, secure bool) metricsserver.Options {
	o := metricsserver.Options{BindAddress: bind}
	if secure {
		o.SecureServing = true
		o.FilterProvider = metricsauth.FilterProvider
	}
	return o
}

// LeaderElectionID names the Lease of the controller role.
const LeaderElectionID = "kubelvs-controller.lvs.kubelvs.io"

// RunController runs the controller role until ctx ends.
func RunController(ctx context.Context, cfg *rest.Config, o ControllerOptions) error {
	sliceSel, svcSel, err := EndpointSliceSelectors(o.EndpointSliceSelector)
	if err != nil {
		return err
	}
	if err := CheckAPIServer(cfg); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Metrics:                 MetricsOptions(o.MetricsBindAddress, o.MetricsSecure),
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// Step down promptly on shutdown so a new leader takes over at once.
		LeaderElectionReleaseOnCancel: true,
		Controller:                    config.Controller{SkipNameValidation: ptr.To(o.SecondInProcess)},
		// The EndpointSlices give the backend counts of VirtualServices
		// whose nodes report in NodeReports: keep only what is counted,
		// of the slices the agents watch.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&discoveryv1.EndpointSlice{}: {Label: sliceSel, Transform: agent.TransformEndpointSlice},
		}},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	r := &controllers.VirtualServiceReconciler{
		Client:          mgr.GetClient(),
		Recorder:        mgr.GetEventRecorder("kubelvs-controller"),
		ServiceSelector: svcSel,
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	sr := &controllers.ServiceReconciler{
		Client:       mgr.GetClient(),
		Recorder:     mgr.GetEventRecorder("kubelvs-controller"),
		DefaultClass: o.DefaultLoadBalancerClass,
	}
	if err := sr.SetupWithManager(mgr); err != nil {
		return err
	}
	a := &controllers.AllocationReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("kubelvs-controller"),
	}
	if err := a.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readiness check: %w", err)
	}
	return mgr.Start(ctx)
}

// CheckAPIServer fails fast, with a message that says what to do, when the
// API server cannot be reached or does not serve the VirtualService API.
func CheckAPIServer(cfg *rest.Config) error {
	c := rest.CopyConfig(cfg)
	c.Timeout = 10 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(c)
	if err != nil {
		return fmt.Errorf("API server client: %w", err)
	}
	if _, err := dc.ServerVersion(); err != nil {
		return fmt.Errorf("cannot reach the API server at %s (check --kubeconfig): %w", cfg.Host, err)
	}
	if _, err := dc.ServerResourcesForGroupVersion(lvsv1.GroupVersion.String()); err != nil {
		return fmt.Errorf("the API server at %s does not serve %s (install the CRD: kubectl apply -f config/crd/bases): %w",
			cfg.Host, lvsv1.GroupVersion, err)
	}
	return nil
}
