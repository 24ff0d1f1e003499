// Package validation decides whether a VirtualService can be programmed. It
// is the one place that says so: the controller sets Accepted=False with its
// errors, and every agent refuses to program a VirtualService it rejects,
// whatever the status says. It repeats every check the CRD makes (an object
// stored before the CRD was tightened, or written around it, meets the same
// rules) and adds those the CRD cannot express within the API server's CEL
// cost budget: port-name syntax of targetPort, label-key syntax of
// nodeSelector, health-check paths that parse as a URL path, static
// backends that are a VIP, source ranges that leave a family without any.
// It is pure: no I/O.
package validation

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/intstr"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// Limits, the same as the CRD's.
const (
	MaxAddresses      = 2
	MaxPorts          = 100
	MaxStatic         = 256
	MaxSourceRanges   = 64
	MaxNodeSelector   = 64
	MaxPathLength     = 1024
	MaxPortNameLength = 15 // IANA service names, as Kubernetes port names
	maxValueShown     = 64 // longer values are cut in messages
)

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	serviceRef = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	// reserved IPv4 networks that IsGlobalUnicast lets through but no host
	// can own: "this network" and the former class E.
	reserved4 = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("240.0.0.0/4")}
)

// VirtualService returns everything that keeps vs from being programmed,
// each naming its field; empty means it can be. The messages are bounded:
// no value is quoted at more than 64 characters.
func VirtualService(vs *lvsv1.VirtualService) field.ErrorList {
	spec := &vs.Spec
	p := field.NewPath("spec")
	var errs field.ErrorList

	fams, vips, addrErrs := addresses(vs, p)
	errs = append(errs, addrErrs...)

	errs = append(errs, ports(spec, p.Child("ports"))...)

	switch spec.Scheduler {
	case "", lvsv1.SchedulerRoundRobin, lvsv1.SchedulerWeightedRoundRobin, lvsv1.SchedulerLeastConnection,
		lvsv1.SchedulerWeightedLeastConnection, lvsv1.SchedulerLocalityLeastConnection,
		lvsv1.SchedulerLocalityLeastConnectionRepl, lvsv1.SchedulerDestinationHashing,
		lvsv1.SchedulerSourceHashing, lvsv1.SchedulerShortestExpectedDelay, lvsv1.SchedulerNeverQueue,
		lvsv1.SchedulerMaglevHashing:
	default:
		errs = append(errs, field.NotSupported(p.Child("scheduler"), short(string(spec.Scheduler)),
			[]string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"}))
	}
	fp := p.Child("schedulerFlags")
	if len(spec.SchedulerFlags) > 2 {
		errs = append(errs, field.TooMany(fp, len(spec.SchedulerFlags), 2))
	}
	for i, f := range spec.SchedulerFlags {
		switch f {
		case lvsv1.SchedulerFlagSHFallback, lvsv1.SchedulerFlagSHPort:
			if spec.Scheduler != lvsv1.SchedulerSourceHashing {
				errs = append(errs, field.Invalid(fp, f, "sh-fallback and sh-port require scheduler sh"))
			}
		case lvsv1.SchedulerFlagMHFallback, lvsv1.SchedulerFlagMHPort:
			if spec.Scheduler != lvsv1.SchedulerMaglevHashing {
				errs = append(errs, field.Invalid(fp, f, "mh-fallback and mh-port require scheduler mh"))
			}
		default:
			errs = append(errs, field.NotSupported(fp.Index(i), short(string(f)), []string{"sh-fallback", "sh-port", "mh-fallback", "mh-port"}))
		}
		if slices.Index(spec.SchedulerFlags, f) != i {
			errs = append(errs, field.Duplicate(fp.Index(i), f))
		}
	}

	masq := true
	switch spec.Forwarding {
	case "", lvsv1.ForwardingMasquerade:
	case lvsv1.ForwardingDirectRoute, lvsv1.ForwardingTunnel:
		masq = false
		for _, pt := range spec.Ports {
			if tp := pt.TargetPort; tp != nil && (tp.Type != intstr.Int || tp.IntVal != pt.Port) {
				errs = append(errs, field.Invalid(p.Child("ports"), pt.Port,
					"targetPort must be unset or equal to port when forwarding is DirectRoute or Tunnel: IPVS cannot rewrite the destination port there"))
				break
			}
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("forwarding"), short(string(spec.Forwarding)), []string{"Masquerade", "DirectRoute", "Tunnel"}))
	}

	if per := spec.Persistence; per != nil {
		pp := p.Child("persistence")
		errs = append(errs, between(pp.Child("timeoutSeconds"), per.TimeoutSeconds, 0, 2678400)...)
		errs = append(errs, between(pp.Child("ipv4PrefixLength"), per.IPv4PrefixLength, 0, 32)...)
		errs = append(errs, between(pp.Child("ipv6PrefixLength"), per.IPv6PrefixLength, 0, 128)...)
	}

	errs = append(errs, backends(spec, p.Child("backends"), fams, vips, masq)...)
	errs = append(errs, healthCheck(spec.HealthCheck, p.Child("healthCheck"))...)
	if d := spec.Drain; d != nil {
		errs = append(errs, between(p.Child("drain", "timeoutSeconds"), d.TimeoutSeconds, 0, 86400)...)
	}
	errs = append(errs, sourceRanges(spec.SourceRanges, p.Child("sourceRanges"), fams)...)
	switch spec.TrafficPolicy {
	case "", lvsv1.TrafficPolicyCluster, lvsv1.TrafficPolicyLocal:
	default:
		errs = append(errs, field.NotSupported(p.Child("trafficPolicy"), short(string(spec.TrafficPolicy)), []string{"Cluster", "Local"}))
	}
	errs = append(errs, nodeSelector(spec.NodeSelector, p.Child("nodeSelector"))...)
	return errs
}

// addresses checks spec.addresses, or spec.addressFamilies, spec.addressPool
// and what the controller allocated (status.addresses): exactly one of
// addresses and addressFamilies, at most one address per family. It returns
// the families the VirtualService has (is4 → its VIP there, or the zero
// Addr while a family waits for its allocation) and its VIPs.
func addresses(vs *lvsv1.VirtualService, p *field.Path) (map[bool]netip.Addr, map[netip.Addr]bool, field.ErrorList) {
	spec := &vs.Spec
	var errs field.ErrorList
	fams := map[bool]netip.Addr{}
	vips := map[netip.Addr]bool{}
	ap, fp := p.Child("addresses"), p.Child("addressFamilies")
	switch n := len(spec.Addresses); {
	case n == 0 && len(spec.AddressFamilies) == 0, n > 0 && len(spec.AddressFamilies) > 0:
		errs = append(errs, field.Required(ap, "exactly one of addresses and addressFamilies must be set"))
	case n > MaxAddresses:
		errs = append(errs, field.TooMany(ap, n, MaxAddresses))
	}
	if len(spec.AddressFamilies) > MaxAddresses {
		errs = append(errs, field.TooMany(fp, len(spec.AddressFamilies), MaxAddresses))
	}
	for i, f := range spec.AddressFamilies {
		switch f {
		case lvsv1.AddressFamilyIPv4, lvsv1.AddressFamilyIPv6:
			if slices.Index(spec.AddressFamilies, f) != i {
				errs = append(errs, field.Duplicate(fp.Index(i), f))
			}
			fams[f == lvsv1.AddressFamilyIPv4] = netip.Addr{}
		default:
			errs = append(errs, field.NotSupported(fp.Index(i), short(string(f)), []string{"IPv4", "IPv6"}))
		}
	}
	if spec.AddressPool != "" {
		if len(spec.AddressFamilies) == 0 {
			errs = append(errs, field.Invalid(p.Child("addressPool"), short(spec.AddressPool), "addressPool applies only with addressFamilies"))
		}
		for _, m := range k8svalidation.IsDNS1123Subdomain(spec.AddressPool) {
			errs = append(errs, field.Invalid(p.Child("addressPool"), short(spec.AddressPool), m))
		}
	}
	// With addressFamilies the VIPs are the allocated ones: a status
	// written around the controller meets the same rules.
	list := spec.Addresses
	if len(spec.Addresses) == 0 && len(spec.AddressFamilies) > 0 {
		list, ap = vs.EffectiveAddresses(), field.NewPath("status", "addresses")
	}
	seen := map[bool]bool{}
	for i, a := range list {
		addr, err := Address(string(a))
		if err != nil {
			errs = append(errs, field.Invalid(ap.Index(i), short(string(a)), err.Error()))
			continue
		}
		if seen[addr.Is4()] {
			errs = append(errs, field.Invalid(ap, short(string(a)), "at most one address per IP family"))
			continue
		}
		seen[addr.Is4()] = true
		fams[addr.Is4()] = addr
		vips[addr] = true
	}
	return fams, vips, errs
}

// Address parses a VIP or static backend address: canonical, unicast, not
// IPv4-mapped, not in a reserved IPv4 network.
func Address(s string) (netip.Addr, error) {
	if len(s) > 45 {
		return netip.Addr{}, fmt.Errorf("must be a valid IP address (at most 45 characters)")
	}
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("must be a valid IP address")
	}
	switch {
	case addr.Is4In6():
		return netip.Addr{}, fmt.Errorf("is an IPv4-mapped IPv6 address: write the IPv4 address %s instead", addr.Unmap())
	case addr.String() != s:
		return netip.Addr{}, fmt.Errorf("must be an IP address in canonical form (%s)", addr)
	case !addr.IsGlobalUnicast():
		return netip.Addr{}, fmt.Errorf("must be a unicast address (not unspecified, loopback, link-local, multicast or broadcast)")
	}
	for _, r := range reserved4 {
		if r.Contains(addr) {
			return netip.Addr{}, fmt.Errorf("must be a unicast address: %s is reserved", r)
		}
	}
	return addr, nil
}

func ports(spec *lvsv1.VirtualServiceSpec, pp *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch n := len(spec.Ports); {
	case n == 0:
		errs = append(errs, field.Required(pp, "at least one port"))
	case n > MaxPorts:
		// Each port is checked below: too many is reason enough.
		return append(errs, field.TooMany(pp, n, MaxPorts))
	}
	type key struct {
		port  int32
		proto lvsv1.Protocol
	}
	seen := map[key]bool{}
	names := map[string]bool{}
	for i, pt := range spec.Ports {
		ip := pp.Index(i)
		errs = append(errs, between(ip.Child("port"), pt.Port, 1, 65535)...)
		proto := pt.Protocol
		switch proto {
		case "":
			proto = lvsv1.ProtocolTCP
		case lvsv1.ProtocolTCP, lvsv1.ProtocolUDP, lvsv1.ProtocolSCTP:
		default:
			errs = append(errs, field.NotSupported(ip.Child("protocol"), short(string(proto)), []string{"TCP", "UDP", "SCTP"}))
		}
		k := key{pt.Port, proto}
		if seen[k] {
			errs = append(errs, field.Duplicate(ip, fmt.Sprintf("%d/%s", pt.Port, proto)))
		}
		seen[k] = true
		switch {
		case pt.Name == "" && len(spec.Ports) > 1:
			errs = append(errs, field.Required(ip.Child("name"), "every port needs a name when there is more than one"))
		case pt.Name == "":
		case len(pt.Name) > 63 || !dnsLabel.MatchString(pt.Name):
			errs = append(errs, field.Invalid(ip.Child("name"), short(pt.Name), "must be a DNS label (lowercase letters, digits and dashes, at most 63)"))
		case names[pt.Name]:
			errs = append(errs, field.Duplicate(ip.Child("name"), pt.Name))
		}
		names[pt.Name] = true
		if tp := pt.TargetPort; tp != nil {
			if err := TargetPort(*tp); err != "" {
				errs = append(errs, field.Invalid(ip.Child("targetPort"), shortIntStr(*tp), err))
			}
		}
	}
	return errs
}

// TargetPort checks a targetPort: a number 1-65535 or a port name as
// Kubernetes accepts one. It returns what is wrong, or "".
func TargetPort(tp intstr.IntOrString) string {
	if tp.Type == intstr.Int {
		if tp.IntVal < 1 || tp.IntVal > 65535 {
			return "must be a port number 1-65535"
		}
		return ""
	}
	s := tp.StrVal
	if len(s) > MaxPortNameLength || !dnsLabel.MatchString(s) || !strings.ContainsAny(s, "abcdefghijklmnopqrstuvwxyz") || strings.Contains(s, "--") {
		return "must be a port name (at most 15 lowercase letters, digits and single dashes, with a letter)"
	}
	return ""
}

func backends(spec *lvsv1.VirtualServiceSpec, bp *field.Path, fams map[bool]netip.Addr, vips map[netip.Addr]bool, masq bool) field.ErrorList {
	var errs field.ErrorList
	b := spec.Backends
	if b.ServiceRef == nil && len(b.Static) == 0 {
		errs = append(errs, field.Required(bp, "at least one backend source is required: serviceRef or static"))
	}
	if r := b.ServiceRef; r != nil && (len(r.Name) > 63 || !serviceRef.MatchString(r.Name)) {
		errs = append(errs, field.Invalid(bp.Child("serviceRef", "name"), short(r.Name), "must be a Service name (a DNS label starting with a letter)"))
	}
	sp := bp.Child("static")
	if len(b.Static) > MaxStatic {
		return append(errs, field.TooMany(sp, len(b.Static), MaxStatic))
	}
	namedTarget := false
	for _, pt := range spec.Ports {
		if pt.TargetPort != nil && pt.TargetPort.Type == intstr.String {
			namedTarget = true
		}
	}
	seen := map[string]bool{}
	for i, s := range b.Static {
		ip := sp.Index(i)
		if seen[string(s.Address)] {
			errs = append(errs, field.Duplicate(ip, short(string(s.Address))))
		}
		seen[string(s.Address)] = true
		addr, err := Address(string(s.Address))
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(ip.Child("address"), short(string(s.Address)), err.Error()))
		case vips[addr]:
			errs = append(errs, field.Invalid(ip.Child("address"), s.Address, "is a virtual address of this VirtualService: traffic would loop"))
		default:
			if _, ok := fams[addr.Is4()]; !ok && len(fams) > 0 {
				errs = append(errs, field.Invalid(sp, s.Address, "every static backend address must be of an IP family that spec.addresses or spec.addressFamilies has"))
			}
		}
		if s.Port != nil {
			errs = append(errs, between(ip.Child("port"), *s.Port, 1, 65535)...)
			if !masq && slices.ContainsFunc(spec.Ports, func(p lvsv1.VirtualServicePort) bool { return p.Port != *s.Port }) {
				errs = append(errs, field.Invalid(sp, *s.Port, "static backend port must be unset or equal to every port when forwarding is DirectRoute or Tunnel"))
			}
		} else if namedTarget {
			errs = append(errs, field.Invalid(sp, short(string(s.Address)), "static backends without a port need numeric targetPorts: a named targetPort resolves only through EndpointSlices"))
		}
		if s.Weight != nil {
			errs = append(errs, between(ip.Child("weight"), *s.Weight, 0, 65535)...)
		}
	}
	return errs
}

func healthCheck(hc *lvsv1.HealthCheck, hp *field.Path) field.ErrorList {
	if hc == nil {
		return nil
	}
	var errs field.ErrorList
	http := false
	switch hc.Protocol {
	case "", lvsv1.HealthCheckTCP:
	case lvsv1.HealthCheckHTTP:
		http = true
	default:
		errs = append(errs, field.NotSupported(hp.Child("protocol"), short(string(hc.Protocol)), []string{"TCP", "HTTP"}))
	}
	if hc.Port != nil {
		errs = append(errs, between(hp.Child("port"), *hc.Port, 1, 65535)...)
	}
	pp := hp.Child("path")
	switch {
	case http && hc.Path == "":
		errs = append(errs, field.Required(pp, "path is required for HTTP health checks"))
	case !http && hc.Path != "":
		errs = append(errs, field.Invalid(pp, short(hc.Path), "path applies only to HTTP health checks"))
	case hc.Path != "":
		if msg := Path(hc.Path); msg != "" {
			errs = append(errs, field.Invalid(pp, short(hc.Path), msg))
		}
	}
	errs = append(errs, between(hp.Child("intervalSeconds"), hc.IntervalSeconds, 0, 300)...)
	errs = append(errs, between(hp.Child("timeoutSeconds"), hc.TimeoutSeconds, 0, 299)...)
	errs = append(errs, between(hp.Child("rise"), hc.Rise, 0, 10)...)
	errs = append(errs, between(hp.Child("fall"), hc.Fall, 0, 10)...)
	if hc.IntervalSeconds > 0 && hc.TimeoutSeconds >= hc.IntervalSeconds {
		errs = append(errs, field.Invalid(hp.Child("timeoutSeconds"), hc.TimeoutSeconds, "timeoutSeconds must be shorter than intervalSeconds"))
	}
	return errs
}

// Path checks an HTTP health-check path: it must parse as the path (and
// query) of a URL, as the probe sends it. It returns what is wrong, or "".
func Path(s string) string {
	if len(s) > MaxPathLength {
		return fmt.Sprintf("must be at most %d characters", MaxPathLength)
	}
	if !strings.HasPrefix(s, "/") || strings.ContainsAny(s, " \t\r\n\v\f#") {
		return "must be a URL path starting with / (no spaces, no fragment)"
	}
	u, err := url.ParseRequestURI(s)
	if err != nil || u.Host != "" || u.Scheme != "" || u.Opaque != "" {
		return "must be a URL path: every % starts an escape of two hex digits"
	}
	return ""
}

func sourceRanges(ranges []lvsv1.CIDR, sp *field.Path, fams map[bool]netip.Addr) field.ErrorList {
	var errs field.ErrorList
	if len(ranges) > MaxSourceRanges {
		return append(errs, field.TooMany(sp, len(ranges), MaxSourceRanges))
	}
	has := map[bool]bool{}
	seen := map[lvsv1.CIDR]bool{}
	for i, c := range ranges {
		if seen[c] {
			errs = append(errs, field.Duplicate(sp.Index(i), short(string(c))))
		}
		seen[c] = true
		pfx, err := netip.ParsePrefix(string(c))
		if err != nil || len(c) > 49 || pfx.Addr().Zone() != "" {
			errs = append(errs, field.Invalid(sp.Index(i), short(string(c)), "must be a valid CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32"))
			continue
		}
		if pfx.Addr().Is4In6() {
			errs = append(errs, field.Invalid(sp.Index(i), short(string(c)), "is an IPv4-mapped IPv6 network: write it as an IPv4 CIDR"))
			continue
		}
		has[pfx.Addr().Is4()] = true
	}
	if len(ranges) == 0 || len(errs) > 0 {
		return errs
	}
	for is4, vip := range fams {
		if !has[is4] {
			family, all := "IPv6", "::/0"
			if is4 {
				family, all = "IPv4", "0.0.0.0/0"
			}
			of := vip.String()
			if !vip.IsValid() {
				of = "its " + family + " address"
			}
			errs = append(errs, field.Forbidden(sp,
				fmt.Sprintf("has no %s range, so every client of %s would be dropped; add the %s networks to admit (%s admits all)", family, of, family, all)))
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() }) // map order
	return errs
}

func nodeSelector(sel map[string]lvsv1.LabelValue, np *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(sel) > MaxNodeSelector {
		return append(errs, field.TooMany(np, len(sel), MaxNodeSelector))
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if msgs := k8svalidation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, field.Invalid(np, short(k), "key: "+strings.Join(msgs, "; ")))
		}
		if msgs := k8svalidation.IsValidLabelValue(string(sel[k])); len(msgs) > 0 {
			errs = append(errs, field.Invalid(np.Key(short(k)), short(string(sel[k])), strings.Join(msgs, "; ")))
		}
	}
	return errs
}

func between(p *field.Path, v, lo, hi int32) field.ErrorList {
	if v < lo || v > hi {
		return field.ErrorList{field.Invalid(p, v, fmt.Sprintf("must be %d-%d", lo, hi))}
	}
	return nil
}

// short cuts a value for a message.
func short(s string) string {
	if len(s) <= maxValueShown {
		return s
	}
	return fmt.Sprintf("%s... (%d characters)", s[:maxValueShown], len(s))
}

func shortIntStr(tp intstr.IntOrString) any {
	if tp.Type == intstr.Int {
		return tp.IntVal
	}
	return short(tp.StrVal)
}
