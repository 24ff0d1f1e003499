package ownership

import "time"

// SetClock replaces the clock a Guard ages its listing with.
func (g *Guard) SetClock(now func() time.Time) { g.now = now }
