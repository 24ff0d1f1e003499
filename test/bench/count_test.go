package bench

import (
	"context"
	"sync/atomic"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// countIPVS counts the requests that reach the kernel's IPVS.
type countIPVS struct {
	ipvs.Interface
	reads, writes atomic.Int64
}

func (c *countIPVS) ListVirtualServers(ctx context.Context) ([]ipvs.VirtualServer, error) {
	c.reads.Add(1)
	return c.Interface.ListVirtualServers(ctx)
}

func (c *countIPVS) GetVirtualServer(ctx context.Context, k ipvs.Key) (ipvs.VirtualServer, error) {
	c.reads.Add(1)
	return c.Interface.GetVirtualServer(ctx, k)
}

func (c *countIPVS) ListRealServers(ctx context.Context, k ipvs.Key) ([]ipvs.RealServer, error) {
	c.reads.Add(1)
	return c.Interface.ListRealServers(ctx, k)
}

func (c *countIPVS) AddVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	c.writes.Add(1)
	return c.Interface.AddVirtualServer(ctx, vs)
}

func (c *countIPVS) UpdateVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	c.writes.Add(1)
	return c.Interface.UpdateVirtualServer(ctx, vs)
}

func (c *countIPVS) DeleteVirtualServer(ctx context.Context, k ipvs.Key) error {
	c.writes.Add(1)
	return c.Interface.DeleteVirtualServer(ctx, k)
}

func (c *countIPVS) AddRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	c.writes.Add(1)
	return c.Interface.AddRealServer(ctx, k, rs)
}

func (c *countIPVS) UpdateRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	c.writes.Add(1)
	return c.Interface.UpdateRealServer(ctx, k, rs)
}

func (c *countIPVS) DeleteRealServer(ctx context.Context, k ipvs.Key, rk ipvs.RealKey) error {
	c.writes.Add(1)
	return c.Interface.DeleteRealServer(ctx, k, rk)
}

// countSets counts ipset requests: reads are listings, writes are member
// changes and set creations, swaps and destructions (Replace counts one
// per member plus its set operations).
type countSets struct {
	ipset.Interface
	reads, writes atomic.Int64
}

func (c *countSets) EnsureSet(ctx context.Context, s ipset.Set) error {
	c.writes.Add(1)
	return c.Interface.EnsureSet(ctx, s)
}

func (c *countSets) DestroySet(ctx context.Context, name string) error {
	c.writes.Add(1)
	return c.Interface.DestroySet(ctx, name)
}

func (c *countSets) ListEntries(ctx context.Context, name string) ([]ipset.Entry, error) {
	c.reads.Add(1)
	return c.Interface.ListEntries(ctx, name)
}

func (c *countSets) AddEntry(ctx context.Context, name string, e ipset.Entry) error {
	c.writes.Add(1)
	return c.Interface.AddEntry(ctx, name, e)
}

func (c *countSets) DelEntry(ctx context.Context, name string, e ipset.Entry) error {
	c.writes.Add(1)
	return c.Interface.DelEntry(ctx, name, e)
}

func (c *countSets) Replace(ctx context.Context, s ipset.Set, es []ipset.Entry) error {
	c.writes.Add(int64(len(es)) + 3)
	return c.Interface.Replace(ctx, s, es)
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
func (c *countIPVS) AddRealServers(ctx context.Context, k ipvs.Key, rss []ipvs.RealServer) []error {
	c.writes.Add(int64(len(rss)))
	return ipvs.AddRealServers(ctx, c.Interface, k, rss)
}
