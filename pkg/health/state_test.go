package health

import "testing"

// run feeds results to a fresh (healthy) state and returns the final health
// and the indexes of the results that flipped it.
func run(results []bool, rise, fall int) (bool, []int) {
	s := state{healthy: true}
	var flips []int
	for i, ok := range results {
		var flipped bool
		s, flipped = s.next(ok, rise, fall)
		if flipped {
			flips = append(flips, i)
		}
	}
	return s.healthy, flips
}

func TestStateRiseFall(t *testing.T) {
	t.Parallel()
	const ok, down = true, false
	tests := []struct {
		name        string
		rise, fall  int
		results     []bool
		wantHealthy bool
		wantFlips   []int
	}{
		{"no results stays healthy", 2, 3, nil, true, nil},
		{"successes stay healthy", 2, 3, []bool{ok, ok, ok}, true, nil},
		{"fewer than fall failures", 2, 3, []bool{down, down}, true, nil},
		{"fall failures in a row", 2, 3, []bool{down, down, down}, false, []int{2}},
		{"a success resets the fall streak", 2, 3, []bool{down, down, ok, down, down}, true, nil},
		{"further failures do not flip again", 2, 3, []bool{down, down, down, down, down}, false, []int{2}},
		{"rise successes in a row recover", 2, 3, []bool{down, down, down, ok, ok}, true, []int{2, 4}},
		{"a failure resets the rise streak", 2, 3, []bool{down, down, down, ok, down, ok}, false, []int{2}},
		{"rise 1 fall 1 follows every change", 1, 1, []bool{down, ok, ok, down}, false, []int{0, 1, 3}},
		{"fall 10", 1, 10, []bool{down, down, down, down, down, down, down, down, down, down}, false, []int{9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			healthy, flips := run(tt.results, tt.rise, tt.fall)
			if healthy != tt.wantHealthy {
				t.Errorf("healthy = %v, want %v", healthy, tt.wantHealthy)
			}
			if len(flips) != len(tt.wantFlips) {
				t.Fatalf("flips at %v, want %v", flips, tt.wantFlips)
			}
			for i := range flips {
				if flips[i] != tt.wantFlips[i] {
					t.Fatalf("flips at %v, want %v", flips, tt.wantFlips)
				}
			}
		})
	}
}
