package ipvsnl

// HoldReads takes n's read handle, as a dump in progress does, until the
// returned function is called.
func HoldReads(n *Netlink) (release func()) {
	n.rmu.Lock()
	return n.rmu.Unlock
}
