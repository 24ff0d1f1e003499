// Package lbservice translates a Service of type LoadBalancer into the spec
// of the VirtualService that kubelvs generates for it, and that
// VirtualService's state into the Service's status.loadBalancer.ingress. It
// is pure: no I/O. The reconciler (controllers.ServiceReconciler) reads and
// writes the objects.
//
// A Service says what it can (ports, session affinity, traffic policy,
// source ranges, the address it asks for); annotations say the rest
// (scheduler, forwarding, health check, drain timeout). Whatever does not
// translate is refused as a whole, naming the Service's field or
// annotation: a half-translated VirtualService would program something
// nobody asked for.
package lbservice

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// Class is the spec.loadBalancerClass of the Services kubelvs serves.
const Class = "lvs.kubelvs.io/ipvs"

// Annotations of a Service that say what its spec cannot.
const (
	// AnnotationAddresses lists the virtual IPs the Service asks for,
	// comma-separated, at most one per IP family: "192.0.2.10,2001:db8::10".
	AnnotationAddresses = "lvs.kubelvs.io/addresses"
	// AnnotationScheduler is the IPVS scheduler (spec.scheduler), e.g. wlc.
	AnnotationScheduler = "lvs.kubelvs.io/scheduler"
	// AnnotationSchedulerFlags are the sh/mh scheduler flags
	// (spec.schedulerFlags), comma-separated, e.g. "sh-port,sh-fallback".
	AnnotationSchedulerFlags = "lvs.kubelvs.io/scheduler-flags"
	// AnnotationForwarding is Masquerade, DirectRoute or Tunnel
	// (spec.forwarding).
	AnnotationForwarding = "lvs.kubelvs.io/forwarding"
	// AnnotationHealthCheck is spec.healthCheck as JSON, e.g.
	// {"protocol":"HTTP","path":"/healthz","intervalSeconds":5}; unset
	// fields take the VirtualService's defaults.
	AnnotationHealthCheck = "lvs.kubelvs.io/health-check"
	// AnnotationDrainTimeout is spec.drain.timeoutSeconds, in seconds.
	AnnotationDrainTimeout = "lvs.kubelvs.io/drain-timeout"
	// AnnotationSourceRanges is Kubernetes' legacy spelling of
	// spec.loadBalancerSourceRanges, read only when that field is empty (as
	// kube-proxy does).
	AnnotationSourceRanges = "service.beta.kubernetes.io/load-balancer-source-ranges"
	// AnnotationAddressPool names the AddressPool to allocate from
	// (spec.addressPool) when the Service asks for no address.
	AnnotationAddressPool = "lvs.kubelvs.io/address-pool"
)

// LabelService marks a VirtualService generated from a Service; its value
// is the Service's name.
const LabelService = "lvs.kubelvs.io/service"

// DefaultAffinityTimeoutSeconds is Kubernetes' default of
// sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
const DefaultAffinityTimeoutSeconds = 10800

// Serves reports whether kubelvs generates a VirtualService for svc: a
// Service of type LoadBalancer whose class is Class, or that names no class
// when kubelvs is the cluster's default implementation (defaultClass).
func Serves(svc *corev1.Service, defaultClass bool) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return defaultClass
	}
	return *svc.Spec.LoadBalancerClass == Class
}

// Disowned reports whether svc says that it is not kubelvs's: it is not of
// type LoadBalancer, or names another class. Only then does the controller
// remove what it generated for svc. A Service without a class when kubelvs
// is not the default is neither served nor disowned: a controller started
// without --default-load-balancer-class by mistake must not delete every
// load balancer it generated as the default.
func Disowned(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return true
	}
	return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass != Class
}

// Spec returns the spec of the VirtualService generated from svc, with
// every default of the API filled in (so that it compares equal to what the
// API server stores), or an error that names each problem by the Service's
// field or annotation (Problems). A spec it returns passes
// validation.VirtualService. A Service that asks for no address gets one of
// each of its IP families (spec.ipFamilies) allocated from an AddressPool
// (spec.addressFamilies; the pool of the annotation AnnotationAddressPool,
// if set).
func Spec(svc *corev1.Service) (lvsv1.VirtualServiceSpec, error) {
	var errs field.ErrorList
	ann := svc.Annotations
	spec := lvsv1.VirtualServiceSpec{
		Scheduler:     lvsv1.DefaultScheduler,
		Forwarding:    lvsv1.DefaultForwarding,
		TrafficPolicy: lvsv1.DefaultTrafficPolicy,
		Backends:      lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: svc.Name}},
		Drain:         &lvsv1.Drain{TimeoutSeconds: lvsv1.DefaultDrainTimeoutSeconds},
	}

	addrs, aerrs := addresses(svc)
	errs = append(errs, aerrs...)
	spec.Addresses = addrs

	// An empty scheduler or forwarding annotation is no choice: the
	// default, as the API server would store it.
	if v := strings.TrimSpace(ann[AnnotationScheduler]); v != "" {
		spec.Scheduler = lvsv1.Scheduler(v)
	}
	if v, ok := ann[AnnotationSchedulerFlags]; ok {
		for _, f := range splitList(v) {
			spec.SchedulerFlags = append(spec.SchedulerFlags, lvsv1.SchedulerFlag(f))
		}
	}
	if v := strings.TrimSpace(ann[AnnotationForwarding]); v != "" {
		spec.Forwarding = lvsv1.ForwardingMethod(v)
	}
	ports, perrs := ports(svc, spec.Forwarding)
	spec.Ports = ports
	errs = append(errs, perrs...)

	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		timeout := int32(DefaultAffinityTimeoutSeconds)
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			timeout = *c.ClientIP.TimeoutSeconds
		}
		spec.Persistence = &lvsv1.Persistence{
			TimeoutSeconds:   timeout,
			IPv4PrefixLength: lvsv1.DefaultIPv4PrefixLength,
			IPv6PrefixLength: lvsv1.DefaultIPv6PrefixLength,
		}
	}
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		spec.TrafficPolicy = lvsv1.TrafficPolicyLocal
	}

	ranges, rerrs := sourceRanges(svc)
	spec.SourceRanges = ranges
	errs = append(errs, rerrs...)

	if v, ok := ann[AnnotationHealthCheck]; ok {
		hc, err := healthCheck(v)
		if err != nil {
			errs = append(errs, field.Invalid(annotationPath(AnnotationHealthCheck), v, err.Error()))
		}
		spec.HealthCheck = hc
	}
	if v, ok := ann[AnnotationDrainTimeout]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil {
			errs = append(errs, field.Invalid(annotationPath(AnnotationDrainTimeout), v, "must be a whole number of seconds, 0-86400"))
		}
		spec.Drain.TimeoutSeconds = int32(n)
	}

	problems := make(Problems, 0, len(errs)+1)
	for _, e := range errs {
		problems = append(problems, e.Error())
	}
	if len(spec.Addresses) == 0 && len(aerrs) == 0 {
		// No address asked for: the controller allocates one of each of
		// the Service's families.
		spec.AddressFamilies = families(svc)
	}
	if v, ok := ann[AnnotationAddressPool]; ok {
		spec.AddressPool = strings.TrimSpace(v)
	}
	if len(problems) > 0 {
		return lvsv1.VirtualServiceSpec{}, problems
	}
	// What only the whole VirtualService can tell (a scheduler flag without
	// its scheduler, source ranges without the VIP's family, ...): the same
	// check the controller and every agent make, each error named by the
	// Service's field or annotation it came from.
	vs := &lvsv1.VirtualService{Spec: spec}
	for _, e := range validation.VirtualService(vs) {
		problems = append(problems, fmt.Sprintf("%s (%s of the generated VirtualService): %s", source(svc, e.Field), e.Field, e.ErrorBody()))
	}
	if len(problems) > 0 {
		return lvsv1.VirtualServiceSpec{}, problems
	}
	return spec, nil
}

// Problems is why a Service does not translate: one message per problem,
// each naming the Service's field or annotation.
type Problems []string

// Error joins the messages.
func (p Problems) Error() string { return strings.Join(p, "; ") }

// addresses returns the addresses svc asks for: the annotation, or the
// deprecated spec.loadBalancerIP. Both may be set if they agree.
func addresses(svc *corev1.Service) ([]lvsv1.IPAddress, field.ErrorList) {
	var errs field.ErrorList
	var out []lvsv1.IPAddress
	lbIP := strings.TrimSpace(svc.Spec.LoadBalancerIP)
	v, ok := svc.Annotations[AnnotationAddresses]
	if !ok {
		if lbIP == "" {
			return nil, nil
		}
		a, err := netip.ParseAddr(lbIP)
		if err != nil {
			return nil, append(errs, field.Invalid(field.NewPath("spec", "loadBalancerIP"), lbIP, "must be an IP address"))
		}
		return []lvsv1.IPAddress{lvsv1.IPAddress(a.String())}, nil
	}
	ap := annotationPath(AnnotationAddresses)
	list := splitList(v)
	if len(list) == 0 {
		return nil, append(errs, field.Invalid(ap, v, "must list at least one IP address"))
	}
	for _, s := range list {
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, field.Invalid(ap, v, fmt.Sprintf("%q is not an IP address", s)))
			continue
		}
		// The canonical form: the VirtualService accepts no other.
		out = append(out, lvsv1.IPAddress(a.String()))
	}
	if lbIP != "" && len(errs) == 0 {
		a, err := netip.ParseAddr(lbIP)
		if err != nil || !containsAddr(out, a) {
			errs = append(errs, field.Invalid(field.NewPath("spec", "loadBalancerIP"), lbIP,
				"differs from the annotation "+AnnotationAddresses+": set one of them (loadBalancerIP is deprecated)"))
		}
	}
	return out, errs
}

// families are the address families to allocate for svc: its
// spec.ipFamilies, which the API server sets on every Service with a
// cluster IP (IPv4 when it is unset, as for a Service not yet stored).
func families(svc *corev1.Service) []lvsv1.AddressFamily {
	var out []lvsv1.AddressFamily
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			out = append(out, lvsv1.AddressFamilyIPv4)
		case corev1.IPv6Protocol:
			out = append(out, lvsv1.AddressFamilyIPv6)
		}
	}
	if len(out) == 0 {
		out = []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}
	}
	return out
}

func containsAddr(list []lvsv1.IPAddress, a netip.Addr) bool {
	for _, x := range list {
		if string(x) == a.String() {
			return true
		}
	}
	return false
}

// ports translates the Service's ports. The backends are found through the
// Service's EndpointSlices, whose ports carry the Service port's name and
// the port each endpoint resolved its targetPort to: a named port becomes a
// named targetPort, which finds them whether the Service's targetPort is a
// number or a container port's name, as kube-proxy does. An unnamed port
// (a Service with a single port) can only use a numeric targetPort.
func ports(svc *corev1.Service, fwd lvsv1.ForwardingMethod) ([]lvsv1.VirtualServicePort, field.ErrorList) {
	var errs field.ErrorList
	pp := field.NewPath("spec", "ports")
	if len(svc.Spec.Ports) == 0 {
		return nil, append(errs, field.Required(pp, "a Service of type LoadBalancer needs at least one port"))
	}
	// An unknown method is refused by validation, naming the annotation.
	masq := fwd != lvsv1.ForwardingDirectRoute && fwd != lvsv1.ForwardingTunnel
	out := make([]lvsv1.VirtualServicePort, 0, len(svc.Spec.Ports))
	for i, sp := range svc.Spec.Ports {
		ip := pp.Index(i)
		proto := sp.Protocol
		switch proto {
		case "":
			proto = corev1.ProtocolTCP
		case corev1.ProtocolTCP, corev1.ProtocolUDP:
		default:
			errs = append(errs, field.NotSupported(ip.Child("protocol"), proto, []string{"TCP", "UDP"}))
			continue
		}
		vp := lvsv1.VirtualServicePort{Name: sp.Name, Port: sp.Port, Protocol: lvsv1.Protocol(proto)}
		// The number the Service's targetPort names, if it is one (the API
		// server defaults an unset targetPort to the port).
		num := sp.Port
		if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0 {
			num = sp.TargetPort.IntVal
		}
		numeric := sp.TargetPort.Type == intstr.Int
		switch {
		case !masq:
			// DirectRoute and Tunnel cannot change the port: the backends
			// must listen on the port itself.
			if !numeric || num != sp.Port {
				errs = append(errs, field.Invalid(ip.Child("targetPort"), sp.TargetPort.String(),
					fmt.Sprintf("must equal the port (%d) with forwarding %s: IPVS cannot rewrite the destination port there", sp.Port, fwd)))
				continue
			}
		case sp.Name != "" && validation.TargetPort(intstr.FromString(sp.Name)) == "":
			vp.TargetPort = ptr.To(intstr.FromString(sp.Name))
		case numeric:
			if num != sp.Port {
				vp.TargetPort = ptr.To(intstr.FromInt32(num))
			}
		case sp.Name == "":
			errs = append(errs, field.Invalid(ip.Child("targetPort"), sp.TargetPort.String(),
				"a named targetPort needs a named port: name the port (e.g. http) so that kubelvs finds it in the EndpointSlices"))
			continue
		default:
			errs = append(errs, field.Invalid(ip.Child("name"), sp.Name,
				"with a named targetPort, kubelvs finds the backends by the port's name, which must then be a port name "+
					"(at most 15 lowercase letters, digits and single dashes, with a letter); or make targetPort a number"))
			continue
		}
		out = append(out, vp)
	}
	return out, errs
}

// sourceRanges returns spec.loadBalancerSourceRanges, or the legacy
// annotation's when the field is empty, each CIDR in canonical form (host
// bits cleared, as kube-proxy reads them) and each once.
func sourceRanges(svc *corev1.Service) ([]lvsv1.CIDR, field.ErrorList) {
	list := svc.Spec.LoadBalancerSourceRanges
	path := field.NewPath("spec", "loadBalancerSourceRanges")
	if len(list) == 0 {
		v, ok := svc.Annotations[AnnotationSourceRanges]
		if !ok {
			return nil, nil
		}
		list = splitList(v)
		path = annotationPath(AnnotationSourceRanges)
	}
	var errs field.ErrorList
	var out []lvsv1.CIDR
	seen := map[netip.Prefix]bool{}
	for i, s := range list {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			errs = append(errs, field.Invalid(path.Index(i), s, "must be a CIDR, e.g. 192.0.2.0/24"))
			continue
		}
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			out = append(out, lvsv1.CIDR(p.String()))
		}
	}
	return out, errs
}

// healthCheck decodes the health-check annotation strictly (an unknown key
// is an error, not ignored) and fills in the API's defaults.
func healthCheck(v string) (*lvsv1.HealthCheck, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	var hc lvsv1.HealthCheck
	if err := dec.Decode(&hc); err != nil {
		return nil, fmt.Errorf(`must be a JSON health check, e.g. {"protocol":"HTTP","path":"/healthz"}: %w`, err)
	}
	if dec.More() {
		return nil, errors.New("must be one JSON object")
	}
	if hc.Protocol == "" {
		hc.Protocol = lvsv1.DefaultHealthProtocol
	}
	if hc.IntervalSeconds == 0 {
		hc.IntervalSeconds = lvsv1.DefaultHealthIntervalSeconds
	}
	if hc.TimeoutSeconds == 0 {
		hc.TimeoutSeconds = lvsv1.DefaultHealthTimeoutSeconds
	}
	if hc.Rise == 0 {
		hc.Rise = lvsv1.DefaultHealthRise
	}
	if hc.Fall == 0 {
		hc.Fall = lvsv1.DefaultHealthFall
	}
	return &hc, nil
}

// source names the Service's field or annotation that a field of the
// generated VirtualService comes from.
func source(svc *corev1.Service, vsField string) string {
	prefixes := []struct{ vs, svc string }{
		{"spec.addresses", "annotation " + AnnotationAddresses},
		{"spec.ports", "spec.ports"},
		{"spec.schedulerFlags", "annotation " + AnnotationSchedulerFlags},
		{"spec.scheduler", "annotation " + AnnotationScheduler},
		{"spec.forwarding", "annotation " + AnnotationForwarding},
		{"spec.persistence", "spec.sessionAffinityConfig"},
		{"spec.healthCheck", "annotation " + AnnotationHealthCheck},
		{"spec.drain", "annotation " + AnnotationDrainTimeout},
		{"spec.sourceRanges", "spec.loadBalancerSourceRanges"},
		{"spec.addressPool", "annotation " + AnnotationAddressPool},
		{"spec.addressFamilies", "spec.ipFamilies"},
	}
	for _, p := range prefixes {
		if vsField == p.vs || strings.HasPrefix(vsField, p.vs+".") || strings.HasPrefix(vsField, p.vs+"[") {
			switch {
			case p.vs == "spec.addresses" && svc.Annotations[AnnotationAddresses] == "":
				return "spec.loadBalancerIP"
			case p.vs == "spec.sourceRanges" && len(svc.Spec.LoadBalancerSourceRanges) == 0:
				return "annotation " + AnnotationSourceRanges
			}
			return p.svc
		}
	}
	return "the Service"
}

// Ingress returns the Service's status.loadBalancer.ingress for its
// generated VirtualService vs: its addresses once the controller accepted
// the current generation, nothing otherwise (vs nil included).
func Ingress(vs *lvsv1.VirtualService) []corev1.LoadBalancerIngress {
	if vs == nil {
		return nil
	}
	c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionAccepted)
	if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != vs.Generation {
		return nil
	}
	addrs := vs.EffectiveAddresses()
	out := make([]corev1.LoadBalancerIngress, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, corev1.LoadBalancerIngress{IP: string(a), IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
	}
	return out
}

func annotationPath(key string) *field.Path {
	return field.NewPath("metadata", "annotations").Key(key)
}

// splitList splits a comma-separated annotation, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
