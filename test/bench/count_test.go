package bench

import (
	"sync/atomic"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// countIPVS counts the requests that reach the kernel's IPVS.
type countIPVS struct {
	ipvs.Interface
	reads, writes atomic.Int64
}

func (c *countIPVS) ListVirtualServers() ([]ipvs.VirtualServer, error) {
	c.reads.Add(1)
	return c.Interface.ListVirtualServers()
}

func (c *countIPVS) GetVirtualServer(k ipvs.Key) (ipvs.VirtualServer, error) {
	c.reads.Add(1)
	return c.Interface.GetVirtualServer(k)
}

func (c *countIPVS) ListRealServers(k ipvs.Key) ([]ipvs.RealServer, error) {
	c.reads.Add(1)
	return c.Interface.ListRealServers(k)
}

func (c *countIPVS) AddVirtualServer(vs ipvs.VirtualServer) error {
	c.writes.Add(1)
	return c.Interface.AddVirtualServer(vs)
}

func (c *countIPVS) UpdateVirtualServer(vs ipvs.VirtualServer) error {
	c.writes.Add(1)
	return c.Interface.UpdateVirtualServer(vs)
}

func (c *countIPVS) DeleteVirtualServer(k ipvs.Key) error {
	c.writes.Add(1)
	return c.Interface.DeleteVirtualServer(k)
}

func (c *countIPVS) AddRealServer(k ipvs.Key, rs ipvs.RealServer) error {
	c.writes.Add(1)
	return c.Interface.AddRealServer(k, rs)
}

func (c *countIPVS) UpdateRealServer(k ipvs.Key, rs ipvs.RealServer) error {
	c.writes.Add(1)
	return c.Interface.UpdateRealServer(k, rs)
}

func (c *countIPVS) DeleteRealServer(k ipvs.Key, rk ipvs.RealKey) error {
	c.writes.Add(1)
	return c.Interface.DeleteRealServer(k, rk)
}

// countSets counts ipset requests: reads are listings, writes are member
// changes and set creations, swaps and destructions (Replace counts one
// per member plus its set operations).
type countSets struct {
	ipset.Interface
	reads, writes atomic.Int64
}

func (c *countSets) EnsureSet(s ipset.Set) error {
	c.writes.Add(1)
	return c.Interface.EnsureSet(s)
}

func (c *countSets) DestroySet(name string) error {
	c.writes.Add(1)
	return c.Interface.DestroySet(name)
}

func (c *countSets) ListEntries(name string) ([]ipset.Entry, error) {
	c.reads.Add(1)
	return c.Interface.ListEntries(name)
}

func (c *countSets) AddEntry(name string, e ipset.Entry) error {
	c.writes.Add(1)
	return c.Interface.AddEntry(name, e)
}

func (c *countSets) DelEntry(name string, e ipset.Entry) error {
	c.writes.Add(1)
	return c.Interface.DelEntry(name, e)
}

func (c *countSets) Replace(s ipset.Set, es []ipset.Entry) error {
	c.writes.Add(int64(len(es)) + 3)
	return c.Interface.Replace(s, es)
}

// counts is a snapshot of the counters.
type counts struct {
	IPVSReads  int64 `json:"ipvs_reads"`
	IPVSWrites int64 `json:"ipvs_writes"`
	SetReads   int64 `json:"ipset_reads"`
	SetWrites  int64 `json:"ipset_writes"`
	AddrEvents int64 `json:"address_changes"`
}

func (c counts) sub(o counts) counts {
	return counts{c.IPVSReads - o.IPVSReads, c.IPVSWrites - o.IPVSWrites, c.SetReads - o.SetReads, c.SetWrites - o.SetWrites, c.AddrEvents - o.AddrEvents}
}

// Writes is every kernel write: IPVS, ipset and kubelvs0 addresses.
func (c counts) Writes() int64 { return c.IPVSWrites + c.SetWrites + c.AddrEvents }

// AddRealServers counts one write per real server and keeps the batch.
func (c *countIPVS) AddRealServers(k ipvs.Key, rss []ipvs.RealServer) []error {
	c.writes.Add(int64(len(rss)))
	return ipvs.AddRealServers(c.Interface, k, rss)
}
