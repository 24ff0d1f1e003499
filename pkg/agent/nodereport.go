package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// nodeReporter keeps what this node programmed — the watermark, the
// VirtualServices it failed — and writes its NodeReport soon (within
// prompt) after a VirtualService was synced, the failures or what the node
// announces changed. A watermark moved only by status-only events (the
// controller's own status writes, which need no sync and which the
// controller does not wait for) is written at most every refresh (a
// minute: what a restarted controller may wait for), so that
// one change costs one report write per node, not two (the controller's
// Programmed=True write would otherwise move every watermark once more).
type nodeReporter struct {
	node         string
	c            client.Client
	w            *watermark
	clock        clock.Clock
	prompt, idle time.Duration
	refresh      time.Duration
	kick         chan struct{}
	// announced lists what the node announces (nil: nothing).
	announced func() []lvsv1.AnnouncedAddress

	mu         sync.Mutex
	failed     map[types.NamespacedName]lvsv1.NodeReportFailure
	programmed map[types.NamespacedName]bool
	written    string // the last report written, without its time
	// writtenBody is written without the watermark; writtenAt when.
	writtenBody string
	writtenAt   time.Time
}

func newNodeReporter(node string, c client.Client, w *watermark, clk clock.Clock) *nodeReporter {
	return &nodeReporter{
		node: node, c: c, w: w, clock: clk, prompt: time.Second, idle: 30 * time.Second, refresh: time.Minute,
		kick:   make(chan struct{}, 1),
		failed: map[types.NamespacedName]lvsv1.NodeReportFailure{}, programmed: map[types.NamespacedName]bool{},
	}
}

// outcome records the sync of a VirtualService at a generation: selected
// (the node programs it), and why it failed (empty: it did not).
func (r *nodeReporter) outcome(key types.NamespacedName, generation int64, selected bool, problems []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(problems) > 0 {
		r.failed[key] = lvsv1.NodeReportFailure{Namespace: key.Namespace, Name: key.Name, Generation: generation,
			Message: truncate(strings.Join(problems, "; "), 512)}
	} else {
		delete(r.failed, key)
	}
	if selected && len(problems) == 0 {
		r.programmed[key] = true
	} else {
		delete(r.programmed, key)
	}
	r.poke() // a spec change was synced: the controller waits for it
}

// announcedChanged is the announcer's callback.
func (r *nodeReporter) announcedChanged() { r.poke() }

// removed forgets a deleted VirtualService.
func (r *nodeReporter) removed(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.failed, key)
	delete(r.programmed, key)
	r.poke()
}

func (r *nodeReporter) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// status is the report as it stands.
func (r *nodeReporter) status() lvsv1.NodeReportStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := lvsv1.NodeReportStatus{
		ResourceVersion: strconv.FormatUint(r.w.value(), 10),
		VirtualServices: int32(len(r.programmed)),
		FailedCount:     int32(len(r.failed)),
	}
	keys := slices.SortedFunc(maps.Keys(r.failed), func(a, b types.NamespacedName) int {
		return strings.Compare(a.String(), b.String())
	})
	for _, k := range keys[:min(len(keys), lvsv1.MaxReportedFailures)] {
		st.Failed = append(st.Failed, r.failed[k])
	}
	if r.announced != nil {
		an := r.announced()
		st.AnnouncedCount = int32(len(an))
		st.Announced = an[:min(len(an), lvsv1.MaxReportedAnnounced)]
	}
	return st
}

// write applies the report if it changed; it reports whether it wrote.
// On an idle tick (idle), a report whose only change is its watermark is
// written only once refresh has passed since the last write.
func (r *nodeReporter) write(ctx context.Context, idle bool) (bool, error) {
	st := r.status()
	key := fmt.Sprintf("%+v", st)
	bare := st
	bare.ResourceVersion = ""
	body := fmt.Sprintf("%+v", bare)
	r.mu.Lock()
	same := key == r.written
	onlyWatermark := body == r.writtenBody
	recent := r.clock.Since(r.writtenAt) < r.refresh
	r.mu.Unlock()
	if same || (idle && onlyWatermark && recent) {
		return false, nil
	}
	failed := make([]any, len(st.Failed))
	for i, f := range st.Failed {
		failed[i] = map[string]any{"namespace": f.Namespace, "name": f.Name, "generation": f.Generation, "message": f.Message}
	}
	announced := make([]any, len(st.Announced))
	for i, x := range st.Announced {
		announced[i] = map[string]any{"address": x.Address, "mode": string(x.Mode)}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": lvsv1.GroupVersion.String(), "kind": "NodeReport",
		"metadata": map[string]any{"name": r.node},
		"status": map[string]any{
			"resourceVersion": st.ResourceVersion, "virtualServices": int64(st.VirtualServices),
			"failed": failed, "failedCount": int64(st.FailedCount),
			"announced": announced, "announcedCount": int64(st.AnnouncedCount),
			"updateTime": r.clock.Now().UTC().Format(time.RFC3339),
		},
	}}
	if err := r.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner("kubelvs-agent/"+r.node), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("write NodeReport %s: %w", r.node, err)
	}
	r.mu.Lock()
	r.written, r.writtenBody, r.writtenAt = key, body, r.clock.Now()
	r.mu.Unlock()
	return true, nil
}

// run writes the report until ctx ends.
func (r *nodeReporter) run(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("report")
	idle := time.NewTicker(r.idle)
	defer idle.Stop()
	for {
		idleTick := false
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			// Coalesce a burst: one write for what came within prompt.
			select {
			case <-ctx.Done():
				return
			case <-time.After(r.prompt):
			}
			// This write covers the pokes that came meanwhile.
			select {
			case <-r.kick:
			default:
			}
		case <-idle.C:
			idleTick = true
		}
		if _, err := r.write(ctx, idleTick); err != nil && ctx.Err() == nil {
			log.Error(err, "writing this node's report failed; retrying")
			r.poke()
		}
	}
}
