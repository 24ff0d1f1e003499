package ipset

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// ipp, ippn and net make entries of the three shapes kubelvs uses.
func ipp(ip string, proto uint8, port uint16) Entry {
	return Entry{IP: netip.MustParseAddr(ip), Protocol: proto, Port: port}
}

func ippn(ip string, proto uint8, port uint16, n string) Entry {
	e := ipp(ip, proto, port)
	e.Net = netip.MustParsePrefix(n)
	return e
}

func net(n string) Entry { return Entry{Net: netip.MustParsePrefix(n)} }

// Entries print as `ipset add` takes them and sort by address, protocol,
// port, then prefix.
func TestEntryStringAndOrder(t *testing.T) {
	t.Parallel()
	es := []Entry{
		ipp("fd00::1", ProtoTCP, 80),
		ipp("10.0.0.1", ProtoUDP, 53),
		ippn("10.0.0.1", ProtoTCP, 443, "10.1.0.0/16"),
		ippn("10.0.0.1", ProtoTCP, 443, "10.0.0.0/8"),
		ipp("10.0.0.1", ProtoTCP, 80),
		net("10.0.0.0/24"),
		ippn("10.0.0.1", ProtoTCP, 443, "10.0.0.0/16"),
		ipp("10.0.0.1", ProtoSCTP, 9),
	}
	SortEntries(es)
	var got []string
	for _, en := range es {
		got = append(got, en.String())
	}
	want := []string{
		"10.0.0.0/24", // no address sorts first
		"10.0.0.1,tcp:80",
		"10.0.0.1,tcp:443,10.0.0.0/8",
		"10.0.0.1,tcp:443,10.0.0.0/16",
		"10.0.0.1,tcp:443,10.1.0.0/16",
		"10.0.0.1,udp:53",
		"10.0.0.1,sctp:9",
		"fd00::1,tcp:80",
	}
	if !slices.Equal(got, want) {
		t.Errorf("sorted:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDiff(t *testing.T) {
	t.Parallel()
	a, b, c := ipp("10.0.0.1", ProtoTCP, 80), ipp("10.0.0.2", ProtoTCP, 80), ipp("10.0.0.3", ProtoUDP, 53)
	for _, tc := range []struct {
		name                 string
		have, want, add, del []Entry
	}{
		{"empty", nil, nil, nil, nil},
		{"all new", nil, []Entry{b, a}, []Entry{b, a}, nil},
		{"all gone", []Entry{a, c}, nil, nil, []Entry{a, c}},
		{"same, other order", []Entry{a, b}, []Entry{b, a}, nil, nil},
		{"some of each", []Entry{a, b}, []Entry{c, b}, []Entry{c}, []Entry{a}},
		{"duplicates wanted", []Entry{a}, []Entry{a, a}, nil, nil},
	} {
		add, del := Diff(tc.have, tc.want)
		if !slices.Equal(add, tc.add) || !slices.Equal(del, tc.del) {
			t.Errorf("%s: Diff = add %v, del %v; want add %v, del %v", tc.name, add, del, tc.add, tc.del)
		}
	}
}

func TestSetValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		set      Set
		notOwned bool
		ok       bool
	}{
		{Set{Name: "KUBELVS-MASQ", Type: HashIPPort, Family: IPv4}, false, true},
		{Set{Name: "KUBELVS-" + strings.Repeat("X", MaxNameLen-len(Prefix)), Type: HashIP, Family: IPv6}, false, true},
		{Set{Name: "KUBELVS-" + strings.Repeat("X", MaxNameLen-len(Prefix)+1), Type: HashIP, Family: IPv6}, false, false},
		{Set{Name: "KUBE-CLUSTER-IP", Type: HashIPPort, Family: IPv4}, true, false},
		{Set{Name: "kubelvs-masq", Type: HashIPPort, Family: IPv4}, true, false},
		{Set{Name: "KUBELVS-X", Type: HashIP, Family: 7}, false, false},
	} {
		err := tc.set.Validate()
		if (err == nil) != tc.ok || errors.Is(err, ErrNotOwned) != tc.notOwned {
			t.Errorf("Validate(%s) = %v; want ok=%t, ErrNotOwned=%t", tc.set, err, tc.ok, tc.notOwned)
		}
	}
}
