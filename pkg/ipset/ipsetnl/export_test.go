package ipsetnl

// HoldListing takes n's listing handle, as a listing in progress does, until
// the returned function is called.
func HoldListing(n *Netlink) (release func()) {
	n.lmu.Lock()
	return n.lmu.Unlock
}

// DumpEntries is dumpEntries, for the kernel tests to compare with the
// library's List.
var DumpEntries = dumpEntries
