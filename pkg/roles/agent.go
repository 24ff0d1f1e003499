package roles

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/health"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

// AgentOptions configure the agent role.
type AgentOptions struct {
	agent.Options
	// MetricsBindAddress serves Prometheus metrics; "0" turns them off.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz; "0" turns them off.
	HealthProbeBindAddress string
	// PprofBindAddress serves Go's /debug/pprof (profiles of the agent's
	// CPU and memory); "" or "0" turns it off.
	PprofBindAddress string
	// Kernel overrides the netlink kernel (tests use fakes). Nil opens the
	// real one.
	Kernel *syncer.Kernel
	// HealthChecks turns active health checks on (default in the binary).
	HealthChecks bool
	// CleanupOnUninstall removes every owned kernel object when the agent
	// stops because its DaemonSet is gone (helm uninstall, kubectl delete),
	// never on a restart or upgrade. PodName and PodNamespace identify the
	// agent's pod.
	CleanupOnUninstall bool
	PodName            string
	PodNamespace       string
}

// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=virtualservices,verbs=get;list;watch
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=virtualservices/status,verbs=get;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// RunAgent runs the agent role until ctx ends. The kernel is left as it is
// when it returns.
func RunAgent(ctx context.Context, cfg *rest.Config, o AgentOptions) error {
	if err := CheckAPIServer(cfg); err != nil {
		return err
	}
	k := o.Kernel
	if k == nil {
		nk, closeKernel, err := NetlinkKernel()
		if err != nil {
			return err
		}
		defer closeKernel()
		k = &nk
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 Scheme(),
		Metrics:                metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress: o.HealthProbeBindAddress,
		PprofBindAddress:       o.PprofBindAddress,
		Cache: cache.Options{
			// Memory scales with what the cache keeps of every
			// VirtualService and EndpointSlice: only what the agent reads.
			DefaultTransform: cache.TransformStripManagedFields(),
			// Reads hand out the cached objects themselves, not deep
			// copies: the agent reads every VirtualService and its slices
			// on each full sync and never modifies what it reads (status
			// is applied from a fresh object), so a copy would only be
			// garbage, thousands of objects at a time.
			DefaultUnsafeDisableDeepCopy: ptr.To(true),
			ByObject: map[client.Object]cache.ByObject{
				// Only this node's Node object: its labels drive nodeSelector.
				&corev1.Node{}:               {Field: fields.OneTermEqualSelector("metadata.name", o.NodeName)},
				&lvsv1.VirtualService{}:      {Transform: agent.TransformVirtualService(o.NodeName)},
				&discoveryv1.EndpointSlice{}: {Transform: agent.TransformEndpointSlice},
			},
		},
		// Every agent works: no leader election.
		LeaderElection: false,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	s := syncer.New(*k, clock.RealClock{}, syncer.NewMetrics(metrics.Registry))
	var a *agent.Agent
	var hm *health.Manager
	if o.HealthChecks {
		hm, err = health.NewManager(health.NewProber(), func(group string) {
			if a != nil {
				a.HealthChanged(group)
			}
		}, health.WithRegisterer(metrics.Registry))
		if err != nil {
			return fmt.Errorf("health checks: %w", err)
		}
		if err := mgr.Add(runnableFunc(func(ctx context.Context) error { return hm.Run(ctx) })); err != nil {
			return err
		}
	}
	ao := o.Options
	ao.Metrics = metrics.Registry
	a, err = agent.New(ctx, mgr, s, hm, ao)
	if err != nil {
		return err
	}
	if err := mgr.Add(a); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("first-sync", a.Ready); err != nil {
		return err
	}
	err = mgr.Start(ctx)
	if o.CleanupOnUninstall && o.PodName != "" {
		log := ctrl.Log.WithName("agent")
		gone, cerr := uninstalled(cfg, o.PodNamespace, o.PodName)
		switch {
		case cerr != nil:
			log.Error(cerr, "cannot tell whether kubelvs is being uninstalled; leaving the kernel as it is")
		case gone:
			log.Info("the agent's DaemonSet is gone: removing every kernel object kubelvs made")
			if cerr := Cleanup(logWriter{log}); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup on uninstall: %w", cerr))
			}
		default:
			log.Info("stopping; the kernel stays as it is so traffic keeps flowing")
		}
	}
	return err
}

// logWriter turns Cleanup's report lines into log lines.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}

type runnableFunc func(context.Context) error

func (f runnableFunc) Start(ctx context.Context) error { return f(ctx) }

// DefaultResyncPeriod is how often the agent rebuilds everything and
// verifies the kernel.
const DefaultResyncPeriod = 5 * time.Minute
