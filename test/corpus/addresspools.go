package corpus

import (
	"fmt"
	"strings"

	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// ValidPoolSpec is an AddressPool the API server accepts, dual-stack, with
// CIDRs, ranges, avoided addresses and a namespace selector; each
// PoolCase breaks exactly one thing in it.
func ValidPoolSpec() lvsv1.AddressPoolSpec {
	return lvsv1.AddressPoolSpec{
		CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/24", "2001:db8:1::/64"},
		Ranges: []lvsv1.AddressRange{
			{First: "198.51.100.10", Last: "198.51.100.20"},
			{First: "2001:db8:2::10", Last: "2001:db8:2::1:0"},
		},
		Avoid:      []lvsv1.AddressOrCIDR{"192.0.2.0", "192.0.2.255", "2001:db8:1::/126"},
		AutoAssign: ptr.To(true),
		NamespaceSelector: &lvsv1.LabelSelector{
			MatchLabels: map[string]lvsv1.LabelValue{"team": "web"},
			MatchExpressions: []lvsv1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: lvsv1.LabelSelectorOpNotIn, Values: []lvsv1.LabelValue{"kube-system"}},
			},
		},
	}
}

// PoolCase is one invalid AddressPool.
type PoolCase struct {
	Name   string
	Mutate func(s *lvsv1.AddressPoolSpec)
	// Field is what the refusal names (the API server's cause field, or a
	// prefix of the validation error's field path).
	Field string
	// Msg is a part of the API server's message (API cases).
	Msg string
}

// ValidPoolSpecs are AddressPools the API server and validation.AddressPool
// both accept, at the edges of the rules.
func ValidPoolSpecs() map[string]func(s *lvsv1.AddressPoolSpec) {
	return map[string]func(s *lvsv1.AddressPoolSpec){
		"base": func(*lvsv1.AddressPoolSpec) {},
		"CIDRs only, no selector": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges, s.Avoid, s.NamespaceSelector, s.AutoAssign = nil, nil, nil, nil
		},
		"one range only, every namespace": func(s *lvsv1.AddressPoolSpec) {
			s.CIDRs = nil
			s.Ranges = s.Ranges[:1]
			s.NamespaceSelector = &lvsv1.LabelSelector{}
		},
		"single addresses as /32 and /128": func(s *lvsv1.AddressPoolSpec) {
			s.CIDRs = []lvsv1.PoolCIDR{"203.0.113.7/32", "2001:db8::7/128"}
		},
		// Ordered as numbers, not as text: "10.0.0.10" < "10.0.0.9" as text.
		"range 10.0.0.9-10.0.0.10": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "10.0.0.9", Last: "10.0.0.10"}}
		},
		"range 2001:db8::9-2001:db8::10": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "2001:db8::9", Last: "2001:db8::10"}}
		},
		"range 2001:db8::ffff-2001:db8::1:0": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "2001:db8::ffff", Last: "2001:db8::1:0"}}
		},
		"range of one address": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "198.51.100.7", Last: "198.51.100.7"}}
		},
		"range up to the edge of loopback": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "126.0.0.1", Last: "126.255.255.255"}, {First: "128.0.0.0", Last: "169.253.255.255"}}
		},
		"range across most of IPv4 unicast": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "1.0.0.0", Last: "126.255.255.255"}, {First: "169.255.0.0", Last: "223.255.255.255"}}
		},
		"IPv6 range up to link-local": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "fe00::", Last: "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}}
		},
		"IPv6 range from ::2 below the IPv4-mapped block": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "::2", Last: "::fffe:ffff:ffff"}}
		},
		"IPv6 range with full groups": func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: "2001:db8:1:2:3:4:5:6", Last: "2001:db8:1:2:3:4:5:7"}}
		},
		"large IPv4 and IPv6 networks": func(s *lvsv1.AddressPoolSpec) {
			s.CIDRs = []lvsv1.PoolCIDR{"10.0.0.0/8", "2000::/3", "fc00::/7"}
		},
		"overlapping blocks": func(s *lvsv1.AddressPoolSpec) {
			s.CIDRs = []lvsv1.PoolCIDR{"192.0.2.0/24", "192.0.2.0/25"}
			s.Ranges = []lvsv1.AddressRange{{First: "192.0.2.100", Last: "192.0.2.200"}}
		},
		"avoid outside the pool": func(s *lvsv1.AddressPoolSpec) { s.Avoid = []lvsv1.AddressOrCIDR{"203.0.113.0/24", "ff02::1"} },
		"autoAssign false":       func(s *lvsv1.AddressPoolSpec) { s.AutoAssign = ptr.To(false) },
		"selector with every operator": func(s *lvsv1.AddressPoolSpec) {
			s.NamespaceSelector = &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{
				{Key: "team", Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{"a", "b"}},
				{Key: "example.com/tier", Operator: lvsv1.LabelSelectorOpNotIn, Values: []lvsv1.LabelValue{""}},
				{Key: "lb", Operator: lvsv1.LabelSelectorOpExists},
				{Key: "frozen", Operator: lvsv1.LabelSelectorOpDoesNotExist},
			}}
		},
		"64 CIDRs, 32 ranges, 64 avoided": func(s *lvsv1.AddressPoolSpec) {
			s.CIDRs, s.Ranges, s.Avoid = nil, nil, nil
			for i := range 64 {
				s.CIDRs = append(s.CIDRs, lvsv1.PoolCIDR(fmt.Sprintf("2001:db8:%x::/48", i+1)))
				s.Avoid = append(s.Avoid, lvsv1.AddressOrCIDR(fmt.Sprintf("10.%d.0.0/30", i)))
			}
			for i := range 16 {
				s.Ranges = append(s.Ranges,
					lvsv1.AddressRange{First: lvsv1.IPAddress(fmt.Sprintf("10.%d.0.1", i)), Last: lvsv1.IPAddress(fmt.Sprintf("10.%d.255.254", i))},
					lvsv1.AddressRange{First: lvsv1.IPAddress(fmt.Sprintf("2001:db8:ffff:%x::1", i+1)), Last: lvsv1.IPAddress(fmt.Sprintf("2001:db8:ffff:%x:ffff:ffff:ffff:fffe", i+1))})
			}
		},
	}
}

// AddressPools returns the corpus of AddressPools: the cases the API server
// refuses (the CRD's schema and CEL rules), and those it stores, which only
// validation.AddressPool refuses (the controller and the agents, once
// pools are enforced).
func AddressPools() (apiRefused, storedRefused []PoolCase) {
	cidr := func(c string) func(s *lvsv1.AddressPoolSpec) {
		return func(s *lvsv1.AddressPoolSpec) { s.CIDRs = []lvsv1.PoolCIDR{lvsv1.PoolCIDR(c)} }
	}
	rng := func(first, last string) func(s *lvsv1.AddressPoolSpec) {
		return func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: lvsv1.IPAddress(first), Last: lvsv1.IPAddress(last)}}
		}
	}
	avoid := func(a string) func(s *lvsv1.AddressPoolSpec) {
		return func(s *lvsv1.AddressPoolSpec) { s.Avoid = []lvsv1.AddressOrCIDR{lvsv1.AddressOrCIDR(a)} }
	}
	expr := func(e lvsv1.LabelSelectorRequirement) func(s *lvsv1.AddressPoolSpec) {
		return func(s *lvsv1.AddressPoolSpec) {
			s.NamespaceSelector.MatchExpressions = []lvsv1.LabelSelectorRequirement{e}
		}
	}
	matchLabel := func(k, v string) func(s *lvsv1.AddressPoolSpec) {
		return func(s *lvsv1.AddressPoolSpec) {
			s.NamespaceSelector.MatchLabels = map[string]lvsv1.LabelValue{k: lvsv1.LabelValue(v)}
		}
	}
	const unicast = "must hold only unicast addresses"
	apiRefused = []PoolCase{
		{"no CIDR and no range", func(s *lvsv1.AddressPoolSpec) { s.CIDRs, s.Ranges = nil, nil }, "spec", "at least one CIDR or range"},
		{"empty CIDRs and ranges", func(s *lvsv1.AddressPoolSpec) {
			s.CIDRs, s.Ranges = []lvsv1.PoolCIDR{}, []lvsv1.AddressRange{}
		}, "spec", "at least one CIDR or range"},

		{"CIDR without a prefix length", cidr("192.0.2.0"), "spec.cidrs[0]", "valid CIDR"},
		{"CIDR prefix length 33", cidr("192.0.2.0/33"), "spec.cidrs[0]", "valid CIDR"},
		{"CIDR with a zone", cidr("2001:db8::%eth0/64"), "spec.cidrs[0]", "valid CIDR"},
		{"CIDR with host bits", cidr("192.0.2.1/24"), "spec.cidrs[0]", "no bits set after the prefix length"},
		{"IPv6 CIDR with host bits", cidr("2001:db8::1/64"), "spec.cidrs[0]", "no bits set after the prefix length"},
		{"CIDR not canonical", cidr("2001:0db8:1::/64"), "spec.cidrs[0]", "canonical"},
		{"CIDR in capitals", cidr("2001:DB8:1::/64"), "spec.cidrs[0]", "canonical"},
		{"CIDR IPv4-mapped", cidr("::ffff:192.0.2.0/120"), "spec.cidrs[0]", "IPv4-mapped"},
		{"CIDR IPv4-mapped in hex", cidr("::ffff:c000:200/120"), "spec.cidrs[0]", "IPv4-mapped"},
		{"CIDR of every IPv4 address", cidr("0.0.0.0/0"), "spec.cidrs[0]", unicast},
		{"CIDR in this-network", cidr("0.0.0.0/16"), "spec.cidrs[0]", unicast},
		{"CIDR loopback", cidr("127.0.0.0/8"), "spec.cidrs[0]", unicast},
		{"CIDR around link-local", cidr("169.0.0.0/8"), "spec.cidrs[0]", unicast},
		{"CIDR in link-local", cidr("169.254.1.0/24"), "spec.cidrs[0]", unicast},
		{"CIDR multicast", cidr("224.0.0.0/24"), "spec.cidrs[0]", unicast},
		{"CIDR class E", cidr("240.0.0.0/8"), "spec.cidrs[0]", unicast},
		{"CIDR broadcast", cidr("255.255.255.255/32"), "spec.cidrs[0]", unicast},
		{"CIDR of every IPv6 address", cidr("::/0"), "spec.cidrs[0]", unicast},
		{"CIDR around IPv6 loopback", cidr("::/127"), "spec.cidrs[0]", unicast},
		{"CIDR IPv6 link-local", cidr("fe80::/64"), "spec.cidrs[0]", unicast},
		{"CIDR IPv6 multicast", cidr("ff02::/16"), "spec.cidrs[0]", unicast},
		{"CIDR of 50 characters", cidr(strings.Repeat("1", 50)), "spec.cidrs[0]", "49"},
		{"duplicate CIDR", func(s *lvsv1.AddressPoolSpec) { s.CIDRs = append(s.CIDRs, s.CIDRs[0]) }, "spec.cidrs[2]", "Duplicate value"},
		{"65 CIDRs", func(s *lvsv1.AddressPoolSpec) {
			s.CIDRs = nil
			for i := range 65 {
				s.CIDRs = append(s.CIDRs, lvsv1.PoolCIDR(fmt.Sprintf("10.%d.0.0/16", i)))
			}
		}, "spec.cidrs", "at most 64"},

		{"range first not an IP", rng("198.51.100.300", "198.51.100.20"), "spec.ranges[0].first", "valid IP address"},
		{"range last empty", rng("198.51.100.10", ""), "spec.ranges[0].last", "valid IP address"},
		{"range of two families", rng("198.51.100.10", "2001:db8::10"), "spec.ranges[0]", "same IP family"},
		{"IPv4 range reversed", rng("198.51.100.20", "198.51.100.10"), "spec.ranges[0]", "first must not be after last"},
		{"IPv4 range reversed, ordered as text", rng("10.0.0.10", "10.0.0.9"), "spec.ranges[0]", "first must not be after last"},
		{"IPv6 range reversed", rng("2001:db8:2::1:0", "2001:db8:2::10"), "spec.ranges[0]", "first must not be after last"},
		{"IPv6 range reversed, ordered as text", rng("2001:db8::10", "2001:db8::9"), "spec.ranges[0]", "first must not be after last"},
		{"IPv6 range reversed across ::", rng("2001:db8:0:1::", "2001:db8::ffff"), "spec.ranges[0]", "first must not be after last"},
		{"range around loopback", rng("126.255.255.0", "128.0.0.10"), "spec.ranges[0]", "127.0.0.0/8"},
		{"range around link-local", rng("169.253.0.1", "169.255.0.1"), "spec.ranges[0]", "169.254.0.0/16"},
		{"IPv6 range around link-local", rng("fe7f::1", "fec0::1"), "spec.ranges[0]", "fe80::/10"},
		{"IPv6 range around the IPv4-mapped block", rng("::2", "::1:0:0:1"), "spec.ranges[0]", "::ffff:0:0/96"},
		{"range up to loopback", rng("10.0.0.1", "127.0.0.1"), "spec.ranges[0].last", "unicast"},
		{"range up to multicast", rng("223.255.255.0", "224.0.0.10"), "spec.ranges[0].last", "unicast"},
		{"range from this-network", rng("0.0.0.1", "1.0.0.0"), "spec.ranges[0].first", "reserved"},
		{"range first IPv4-mapped", rng("::ffff:198.51.100.10", "::ffff:198.51.100.20"), "spec.ranges[0].first", "IPv4-mapped"},
		{"range first not canonical", rng("2001:db8:2:0::10", "2001:db8:2::20"), "spec.ranges[0].first", "canonical"},
		{"duplicate range first", func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = append(s.Ranges, lvsv1.AddressRange{First: s.Ranges[0].First, Last: "198.51.100.30"})
		}, "spec.ranges[2]", "Duplicate value"},
		{"33 ranges", func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = nil
			for i := range 33 {
				s.Ranges = append(s.Ranges, lvsv1.AddressRange{First: lvsv1.IPAddress(fmt.Sprintf("10.%d.0.1", i)), Last: lvsv1.IPAddress(fmt.Sprintf("10.%d.0.9", i))})
			}
		}, "spec.ranges", "at most 32"},

		{"avoid neither address nor CIDR", avoid("gateway"), "spec.avoid[0]", "IP address or a CIDR"},
		{"avoid CIDR with host bits", avoid("192.0.2.1/24"), "spec.avoid[0]", "no bits set after the prefix length"},
		{"avoid address not canonical", avoid("2001:db8:1:0::1"), "spec.avoid[0]", "canonical"},
		{"avoid CIDR not canonical", avoid("2001:db8:1:0::/126"), "spec.avoid[0]", "canonical"},
		{"avoid IPv4-mapped", avoid("::ffff:192.0.2.1"), "spec.avoid[0]", "IPv4-mapped"},
		{"avoid with a zone", avoid("fe80::1%eth0"), "spec.avoid[0]", "IP address or a CIDR"},
		{"duplicate avoid", func(s *lvsv1.AddressPoolSpec) { s.Avoid = append(s.Avoid, s.Avoid[0]) }, "spec.avoid[3]", "Duplicate value"},
		{"65 avoided", func(s *lvsv1.AddressPoolSpec) {
			s.Avoid = nil
			for i := range 65 {
				s.Avoid = append(s.Avoid, lvsv1.AddressOrCIDR(fmt.Sprintf("192.0.2.%d", i)))
			}
		}, "spec.avoid", "at most 64"},

		{"matchLabels value with a space", matchLabel("team", "a b"), "spec.namespaceSelector.matchLabels.team", "should match"},
		{"matchLabels value of 64 characters", matchLabel("team", strings.Repeat("v", 64)), "spec.namespaceSelector.matchLabels.team", "63"},
		{"matchLabels key of 318 characters", matchLabel(strings.Repeat("k", 318), "x"), "spec.namespaceSelector.matchLabels", "at most 317"},
		{"matchLabels of 33 labels", func(s *lvsv1.AddressPoolSpec) {
			s.NamespaceSelector.MatchLabels = map[string]lvsv1.LabelValue{}
			for i := range 33 {
				s.NamespaceSelector.MatchLabels[fmt.Sprintf("l%d", i)] = "x"
			}
		}, "spec.namespaceSelector.matchLabels", "at most 32"},
		{"matchExpressions operator unknown", expr(lvsv1.LabelSelectorRequirement{Key: "team", Operator: "Gt", Values: []lvsv1.LabelValue{"1"}}),
			"spec.namespaceSelector.matchExpressions[0].operator", "Unsupported value"},
		{"matchExpressions In without values", expr(lvsv1.LabelSelectorRequirement{Key: "team", Operator: lvsv1.LabelSelectorOpIn}),
			"spec.namespaceSelector.matchExpressions[0].values", "must not be empty"},
		{"matchExpressions Exists with values", expr(lvsv1.LabelSelectorRequirement{Key: "team", Operator: lvsv1.LabelSelectorOpExists, Values: []lvsv1.LabelValue{"web"}}),
			"spec.namespaceSelector.matchExpressions[0].values", "must be empty"},
		{"matchExpressions key with a space", expr(lvsv1.LabelSelectorRequirement{Key: "bad key", Operator: lvsv1.LabelSelectorOpExists}),
			"spec.namespaceSelector.matchExpressions[0].key", "should match"},
		{"matchExpressions key empty", expr(lvsv1.LabelSelectorRequirement{Key: "", Operator: lvsv1.LabelSelectorOpExists}),
			"spec.namespaceSelector.matchExpressions[0].key", "at least 1"},
		{"matchExpressions key with two slashes", expr(lvsv1.LabelSelectorRequirement{Key: "a/b/c", Operator: lvsv1.LabelSelectorOpExists}),
			"spec.namespaceSelector.matchExpressions[0].key", "should match"},
		{"matchExpressions key prefix of 254 characters", expr(lvsv1.LabelSelectorRequirement{Key: lvsv1.LabelKey(strings.Repeat("p", 254) + "/team"), Operator: lvsv1.LabelSelectorOpExists}),
			"spec.namespaceSelector.matchExpressions[0].key", "253"},
		{"matchExpressions key name of 64 characters", expr(lvsv1.LabelSelectorRequirement{Key: lvsv1.LabelKey("example.com/" + strings.Repeat("n", 64)), Operator: lvsv1.LabelSelectorOpExists}),
			"spec.namespaceSelector.matchExpressions[0].key", "should match"},
		{"matchExpressions value with a slash", expr(lvsv1.LabelSelectorRequirement{Key: "team", Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{"a/b"}}),
			"spec.namespaceSelector.matchExpressions[0].values[0]", "should match"},
		{"17 matchExpressions", func(s *lvsv1.AddressPoolSpec) {
			s.NamespaceSelector.MatchExpressions = nil
			for i := range 17 {
				s.NamespaceSelector.MatchExpressions = append(s.NamespaceSelector.MatchExpressions,
					lvsv1.LabelSelectorRequirement{Key: lvsv1.LabelKey(fmt.Sprintf("k%d", i)), Operator: lvsv1.LabelSelectorOpExists})
			}
		}, "spec.namespaceSelector.matchExpressions", "at most 16"},
		{"matchExpressions of 65 values", func(s *lvsv1.AddressPoolSpec) {
			e := lvsv1.LabelSelectorRequirement{Key: "team", Operator: lvsv1.LabelSelectorOpIn}
			for i := range 65 {
				e.Values = append(e.Values, lvsv1.LabelValue(fmt.Sprintf("v%d", i)))
			}
			s.NamespaceSelector.MatchExpressions = []lvsv1.LabelSelectorRequirement{e}
		}, "spec.namespaceSelector.matchExpressions[0].values", "at most 64"},
		{"layer-2 node selector In without values", func(s *lvsv1.AddressPoolSpec) {
			s.Announce = &lvsv1.Announcement{Layer2: &lvsv1.Layer2Announcement{NodeSelector: &lvsv1.LabelSelector{
				MatchExpressions: []lvsv1.LabelSelectorRequirement{{Key: "rack", Operator: lvsv1.LabelSelectorOpIn}}}}}
		}, "spec.announce.layer2.nodeSelector.matchExpressions[0].values", "must not be empty"},
	}
	// The syntax of a matchLabels key: a map key has no length the CRD's
	// cost estimate can use, so a regular expression over it is priced as
	// if it were megabytes long (the VirtualService's nodeSelector has the
	// same limit).
	storedRefused = []PoolCase{
		{Name: "matchLabels key with a space", Mutate: matchLabel("bad key", "x"), Field: "spec.namespaceSelector.matchLabels"},
		{Name: "matchLabels key starting with a dash", Mutate: matchLabel("-team", "x"), Field: "spec.namespaceSelector.matchLabels"},
		{Name: "matchLabels key with two slashes", Mutate: matchLabel("a/b/c", "x"), Field: "spec.namespaceSelector.matchLabels"},
		{Name: "matchLabels key with an empty prefix", Mutate: matchLabel("/team", "x"), Field: "spec.namespaceSelector.matchLabels"},
		{Name: "matchLabels key name longer than 63", Mutate: matchLabel("example.com/"+strings.Repeat("n", 64), "x"), Field: "spec.namespaceSelector.matchLabels"},
		{Name: "matchLabels key prefix not a DNS subdomain", Mutate: matchLabel(strings.Repeat("d", 254)+"/team", "x"), Field: "spec.namespaceSelector.matchLabels"},
		{Name: "layer-2 node selector key with two slashes", Mutate: func(s *lvsv1.AddressPoolSpec) {
			s.Announce = &lvsv1.Announcement{Layer2: &lvsv1.Layer2Announcement{NodeSelector: &lvsv1.LabelSelector{
				MatchLabels: map[string]lvsv1.LabelValue{"a/b/c": "x"}}}}
		}, Field: "spec.announce.layer2.nodeSelector.matchLabels"},
	}
	return apiRefused, storedRefused
}
