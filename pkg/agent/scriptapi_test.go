package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// What a script's agent sees of the API server: objects stored as the API
// server stores them (in a fake client, which is also the agent's cache),
// and each change handed to the agent's event handlers as its informers
// hand it.

// scriptScheme decodes the inputs: the kinds the agent watches.
var scriptScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	utilruntime.Must(discoveryv1.AddToScheme(s))
	utilruntime.Must(lvsv1.AddToScheme(s))
	return s
}()

// objects decodes the objects of an archive file, strictly (an unknown
// field is a mistake in the script).
func (s *script) objects(name string) ([]client.Object, error) {
	i := s.file(name)
	if i < 0 {
		return nil, fmt.Errorf("no file %s in the archive", name)
	}
	dec := serializer.NewCodecFactory(scriptScheme, serializer.EnableStrict).UniversalDeserializer()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(s.ar.Files[i].Data)))
	var out []client.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		o, ok := obj.(client.Object)
		if !ok {
			return nil, fmt.Errorf("%s: a %T is not an object", name, obj)
		}
		out = append(out, o)
	}
}

// apply stores obj as the API server would and, once the agent runs, hands
// it to the agent's handler as its informer would, after the transform the
// agent's cache applies.
func (s *script) apply(obj client.Object) error {
	switch o := obj.(type) {
	case *lvsv1.VirtualService:
		if _, err := TransformVirtualService(scriptNode)(o); err != nil {
			return err
		}
	case *discoveryv1.EndpointSlice:
		if _, err := TransformEndpointSlice(o); err != nil {
			return err
		}
	case *corev1.Namespace:
		if _, err := TransformNamespace(o); err != nil {
			return err
		}
	case *corev1.Node, *lvsv1.AddressPool:
	default:
		return fmt.Errorf("a %T is not an input of the agent", obj)
	}
	old := obj.DeepCopyObject().(client.Object)
	err := s.client.Get(s.ctx, client.ObjectKeyFromObject(obj), old)
	if apierrors.IsNotFound(err) {
		if ts := obj.GetCreationTimestamp(); ts.IsZero() {
			obj.SetCreationTimestamp(metav1.NewTime(s.clock.Now()))
		}
		s.created++
		obj.SetUID(types.UID(fmt.Sprintf("uid-%d", s.created)))
		obj.SetGeneration(1)
		if err := s.client.Create(s.ctx, obj); err != nil {
			return err
		}
		cur, err := s.stored(obj)
		if err == nil && s.agent != nil {
			s.handlers(obj).OnAdd(cur, false)
		}
		return err
	}
	if err != nil {
		return err
	}
	obj.SetUID(old.GetUID())
	obj.SetResourceVersion(old.GetResourceVersion())
	obj.SetCreationTimestamp(old.GetCreationTimestamp())
	obj.SetGeneration(old.GetGeneration())
	if vs, ok := obj.(*lvsv1.VirtualService); ok && !equality.Semantic.DeepEqual(vs.Spec, old.(*lvsv1.VirtualService).Spec) {
		vs.Generation++
	}
	if p, ok := obj.(*lvsv1.AddressPool); ok && !equality.Semantic.DeepEqual(p.Spec, old.(*lvsv1.AddressPool).Spec) {
		p.Generation++
	}
	if err := s.client.Update(s.ctx, obj); err != nil {
		return err
	}
	cur, err := s.stored(obj)
	if err == nil && s.agent != nil {
		s.handlers(obj).OnUpdate(old, cur)
	}
	return err
}

// stored reads obj back as the API server holds it now.
func (s *script) stored(obj client.Object) (client.Object, error) {
	cur := obj.DeepCopyObject().(client.Object)
	return cur, s.client.Get(s.ctx, client.ObjectKeyFromObject(obj), cur)
}

// delete deletes vs/NS/NAME, slice/NS/NAME, node/NAME, pool/NAME or
// namespace/NAME.
func (s *script) delete(ref string) error {
	parts := strings.Split(ref, "/")
	var obj client.Object
	switch parts[0] {
	case "vs":
		obj = &lvsv1.VirtualService{}
	case "slice":
		obj = &discoveryv1.EndpointSlice{}
	case "node":
		obj = &corev1.Node{}
	case "pool":
		obj = &lvsv1.AddressPool{}
	case "namespace":
		obj = &corev1.Namespace{}
	default:
		return fmt.Errorf("unknown kind %q (vs, slice, node, pool, namespace)", parts[0])
	}
	var key client.ObjectKey
	switch len(parts) {
	case 2:
		key.Name = parts[1]
	case 3:
		key.Namespace, key.Name = parts[1], parts[2]
	default:
		return fmt.Errorf("%q is not KIND/[NAMESPACE/]NAME", ref)
	}
	if err := s.client.Get(s.ctx, key, obj); err != nil {
		return err
	}
	if err := s.client.Delete(s.ctx, obj); err != nil {
		return err
	}
	if s.agent != nil {
		s.handlers(obj).OnDelete(obj)
	}
	return nil
}

// allocate writes status.addresses of vs/NS/NAME as the controller does
// when it allocates automatic addresses (none: it takes them back), and
// hands the update to the agent.
func (s *script) allocate(ref string, addrs []string) error {
	parts := strings.Split(ref, "/")
	if len(parts) != 3 || parts[0] != "vs" {
		return fmt.Errorf("%q is not vs/NAMESPACE/NAME", ref)
	}
	vs := &lvsv1.VirtualService{}
	if err := s.client.Get(s.ctx, client.ObjectKey{Namespace: parts[1], Name: parts[2]}, vs); err != nil {
		return err
	}
	old := vs.DeepCopy()
	vs.Status.Addresses = nil
	for _, a := range addrs {
		vs.Status.Addresses = append(vs.Status.Addresses, lvsv1.IPAddress(a))
	}
	if err := s.client.Status().Update(s.ctx, vs); err != nil {
		return err
	}
	cur, err := s.stored(vs)
	if err != nil {
		return err
	}
	if _, err := TransformVirtualService(scriptNode)(cur); err != nil {
		return err
	}
	if s.agent != nil {
		s.handlers(vs).OnUpdate(old, cur)
	}
	return nil
}

// handlers are the agent's event handlers of obj's kind.
func (s *script) handlers(obj client.Object) toolscache.ResourceEventHandler {
	switch obj.(type) {
	case *lvsv1.VirtualService:
		return s.agent.vsEvents()
	case *discoveryv1.EndpointSlice:
		return s.agent.sliceEvents()
	case *corev1.Node:
		return s.agent.nodeEvents(s.ctx)
	case *lvsv1.AddressPool:
		return s.agent.poolEvents(s.ctx)
	case *corev1.Namespace:
		return s.agent.namespaceEvents(s.ctx)
	}
	return nil
}
