package roles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/apiwatch"
	"github.com/kubelvs/kubelvs/pkg/health"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

// AgentOptions configure the agent role.
type AgentOptions struct {
	agent.Options
	AnnounceOptions
	// MetricsBindAddress serves Prometheus metrics; "0" turns them off.
	MetricsBindAddress string
	// MetricsSecure: see ControllerOptions.MetricsSecure.
	MetricsSecure bool
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
	// stops after it saw its DaemonSet deleted (helm uninstall, kubectl
	// delete), or the API server answers that it is gone; never on a
	// restart or upgrade, and never on doubt (an error, a Forbidden).
	// PodName and PodNamespace identify the agent's pod.
	CleanupOnUninstall bool
	PodName            string
	PodNamespace       string
	// Cleanup overrides the removal of the kernel objects on uninstall
	// (tests). Nil: Cleanup, or an error when Kernel is overridden.
	Cleanup func(context.Context, io.Writer) error
	// MetricsRegistry registers the agent's metrics. Nil: controller-runtime's
	// registry, which the metrics endpoint serves. A test that runs several
	// agents in one process gives each its own.
	MetricsRegistry prometheus.Registerer
	// EndpointSliceSelector is a label selector the EndpointSlices the
	// agent watches must match besides having the kubernetes.io/service-name
	// label (EndpointSliceSelectors); "" adds nothing. The controller must
	// be given the same one: it flags the VirtualServices whose Service it
	// does not select.
	EndpointSliceSelector string
}

// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=virtualservices,verbs=get;list;watch
// The agent writes no VirtualService status with NodeReports (the
// default); the chart grants virtualservices/status patch only with
// agent.nodeReports=false.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=addresspools,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=nodereports,verbs=get;create;patch

// RunAgent runs the agent role until ctx ends. The kernel is left as it is
// when it returns, unless CleanupOnUninstall is set and kubelvs is
// positively being uninstalled (package uninstall decides).
func RunAgent(ctx context.Context, cfg *rest.Config, o AgentOptions) error {
	sliceSel, _, err := EndpointSliceSelectors(o.EndpointSliceSelector)
	if err != nil {
		return err
	}
	if err := CheckAPIServer(cfg); err != nil {
		return err
	}
	reg := o.MetricsRegistry
	if reg == nil {
		reg = metrics.Registry
	}
	k := o.Kernel
	if k == nil {
		log := ctrl.LoggerFrom(ctx).WithName("kernel")
		nk, closeKernel, err := NetlinkKernel(ctx, func(msg string, err error) { log.Error(err, msg) })
		if err != nil {
			return err
		}
		defer closeKernel()
		k = &nk
	}
	watches := apiwatch.NewTracker(ctrl.Log.WithName("agent").WithName("watch"), reg)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 Scheme(),
		Metrics:                MetricsOptions(o.MetricsBindAddress, o.MetricsSecure),
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
			// Until every informer has listed, the agent does not sync:
			// say why in its own log.
			DefaultWatchErrorHandler: reportRefusedWatch(ctrl.Log.WithName("agent"), watches),
			// Lists and watches retry in place while the API server is
			// unreachable, so that they resume within seconds of its
			// return instead of client-go's backoff of up to a minute.
			NewInformer: func(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, idx toolscache.Indexers) toolscache.SharedIndexInformer {
				return toolscache.NewSharedIndexInformer(watches.Wrap(lw, apiwatch.ResourceOf(obj)), obj, resync, idx)
			},
			ByObject: agentCache(o, sliceSel),
		},
		// Every agent works: no leader election.
		LeaderElection: false,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	s := syncer.New(*k, clock.RealClock{}, syncer.NewMetrics(reg))
	var a *agent.Agent
	var hm *health.Manager
	if o.HealthChecks {
		hm, err = health.NewManager(health.NewProber(), func(group string) {
			if a != nil {
				a.HealthChanged(group)
			}
		}, health.WithRegisterer(reg))
		if err != nil {
			return fmt.Errorf("health checks: %w", err)
		}
		if err := mgr.Add(runnableFunc(func(ctx context.Context) error { return hm.Run(ctx) })); err != nil {
			return err
		}
	}
	ao := o.Options
	ao.Metrics = reg
	if ao.Announcers, err = announcers(mgr, o, reg, func() *agent.Agent { return a }); err != nil {
		return err
	}
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
	// Not ready while it cannot see the API server: the kernel is kept as
	// it was, but changes do not reach it.
	if err := mgr.AddReadyzCheck("watches", func(*http.Request) error { return watches.Healthy() }); err != nil {
		return err
	}
	log := ctrl.Log.WithName("agent")
	// Watched from before the manager starts: an uninstall is only ever
	// seen, never inferred from an error.
	u := startUninstallWatch(ctx, log, cfg, o, reg)
	err = mgr.Start(ctx)
	if u != nil {
		err = errors.Join(err, u.stop(log))
	}
	return err
}

// agentCache is what the agent's cache holds of each kind. slices selects
// the EndpointSlices it lists and watches (EndpointSliceSelectors): the
// API server filters them, so the others cost the agent nothing.
func agentCache(o AgentOptions, slices labels.Selector) map[client.Object]cache.ByObject {
	by := map[client.Object]cache.ByObject{
		// Only this node's Node object: its labels drive nodeSelector.
		&corev1.Node{}:               {Field: fields.OneTermEqualSelector("metadata.name", o.NodeName), Transform: agent.TransformNode},
		&lvsv1.VirtualService{}:      {Transform: agent.TransformVirtualService(o.NodeName)},
		&discoveryv1.EndpointSlice{}: {Label: slices, Transform: agent.TransformEndpointSlice},
		&corev1.Namespace{}:          {Transform: agent.TransformNamespace},
	}
	if o.Layer2 && o.PodNamespace != "" {
		// Every node's labels: which nodes may answer for an address.
		by[&corev1.Node{}] = cache.ByObject{Transform: agent.TransformNode}
		// The agents' heartbeats, in the agent's namespace only.
		by[&coordinationv1.Lease{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{o.PodNamespace: {}},
			Label:      labels.SelectorFromSet(labels.Set{agent.LeaseLabel: "true"}),
		}
	}
	return by
}

// reportRefusedWatch logs a list or watch the API server refuses (RBAC,
// credentials) as an error of the agent; other watch errors go where
// client-go sends them.
func reportRefusedWatch(log logr.Logger, watches *apiwatch.Tracker) toolscache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, r *toolscache.Reflector, err error) {
		watches.Failed(apiwatch.ResourceOfDescription(r.TypeDescription()), err)
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			log.Error(err, "the API server refuses the agent's watch (check its RBAC and credentials); retrying, and until it can read everything the kernel stays as it is",
				"type", r.TypeDescription())
			return
		}
		toolscache.DefaultWatchErrorHandler(ctx, r, err)
	}
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
