package roles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelvs/kubelvs/pkg/uninstall"
)

// The agent reads its own pod (to find its DaemonSet) and watches that
// DaemonSet alone (a field selector on its name), in its own namespace:
// config/rbac and the chart grant these in a namespaced Role.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get;list;watch

const (
	// uninstallCheckTimeout bounds the GET of the agent's DaemonSet at stop.
	uninstallCheckTimeout = 10 * time.Second
	// uninstallGrace is how long a stopping agent whose GET of its
	// DaemonSet got no answer to rely on waits for its watch to deliver a
	// deletion still on its way. Only that case waits: a restart finds
	// the DaemonSet and stops at once.
	uninstallGrace = 5 * time.Second
)

// uninstallWatch is the agent's watch of its own DaemonSet, running from
// before the manager starts until the stop decision is taken.
type uninstallWatch struct {
	w       *uninstall.Watcher
	cfg     *rest.Config
	cancel  context.CancelFunc
	done    chan struct{}
	cleanup func(context.Context, io.Writer) error
}

// startUninstallWatch starts the watch when the agent is to clean up on
// uninstall; nil otherwise. The watch outlives ctx (the agent's SIGTERM):
// it may still deliver the deletion while the agent decides.
func startUninstallWatch(ctx context.Context, log logr.Logger, cfg *rest.Config, o AgentOptions, reg prometheus.Registerer) *uninstallWatch {
	if !o.CleanupOnUninstall {
		return nil
	}
	if o.PodName == "" || o.PodNamespace == "" {
		log.Info("--cleanup-on-uninstall needs $POD_NAME and $POD_NAMESPACE: the agent will leave the kernel as it is when it stops")
		return nil
	}
	cleanup := o.Cleanup
	if cleanup == nil && o.Kernel != nil {
		cleanup = func(context.Context, io.Writer) error { return errors.New("no cleanup for an injected kernel") }
	} else if cleanup == nil {
		cleanup = Cleanup
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	u := &uninstallWatch{
		w:   uninstall.NewWatcher(cfg, o.PodNamespace, o.PodName, uninstall.NewMetrics(reg)),
		cfg: cfg, cancel: cancel, done: make(chan struct{}), cleanup: cleanup,
	}
	go func() { defer close(u.done); u.w.Run(wctx) }()
	return u
}

// stop decides, stops the watch and cleans up when the decision says so.
func (u *uninstallWatch) stop(log logr.Logger) error {
	defer func() { u.cancel(); <-u.done }()
	c, err := client.New(u.cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		log.Error(err, "cannot tell whether kubelvs is being uninstalled; leaving the kernel as it is")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), uninstallCheckTimeout)
	defer cancel()
	d := u.w.Decide(ctx, c, uninstallGrace)
	switch {
	case d.Cleanup:
		log.Info("kubelvs is being uninstalled: removing every kernel object kubelvs made", "reason", d.Reason)
		// Not bounded by the decision's timeout: once decided, it runs to the end.
		if err := u.cleanup(context.Background(), logWriter{log}); err != nil {
			return fmt.Errorf("cleanup on uninstall: %w", err)
		}
	case d.Err != nil:
		log.Error(d.Err, "cannot tell whether kubelvs is being uninstalled; leaving the kernel as it is", "reason", d.Reason)
	default:
		log.Info("stopping; the kernel stays as it is so traffic keeps flowing", "reason", d.Reason)
	}
	return nil
}
