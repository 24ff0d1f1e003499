// Command plot renders bench/results.json (hack/bench.sh) as an SVG: the
// cold full-sync time against the number of virtual servers for kubelvs and
// the two baselines (log scales), and the distributions of single-change
// latencies at each size (syncer, agent from the API event, agent from the
// API write), with the agent's peak memory. Plain SVG text, no plotting
// library.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"log"
	"math"
	"os"
	"slices"
	"strings"
)

type timing struct {
	Seconds float64 `json:"seconds"`
}

type dist struct {
	Samples []float64 `json:"samples_ms"`
	P50     float64   `json:"p50_ms"`
	P99     float64   `json:"p99_ms"`
}

type size struct {
	VirtualServers int               `json:"virtual_servers"`
	Cold           map[string]timing `json:"cold_full_sync"`
	Change         dist              `json:"one_change"`
	Agent          *struct {
		EventToKernel dist    `json:"event_to_kernel"`
		APIToKernel   dist    `json:"api_write_to_kernel"`
		PeakRSSMiB    float64 `json:"agent_peak_rss_mib"`
	} `json:"agent"`
}

// dists are the single-change distributions of one size, in legend order.
func (z size) dists() []dist {
	out := []dist{z.Change, {}, {}}
	if z.Agent != nil {
		out[1], out[2] = z.Agent.EventToKernel, z.Agent.APIToKernel
	}
	return out
}

var distSeries = []struct{ label, color string }{
	{"syncer: SyncGroup call to kernel ack", "#1b7837"},
	{"agent: API event to kernel ack", "#762a83"},
	{"agent: API write to kernel (end to end)", "#e08214"},
}

type results struct {
	Machine struct {
		Guest, Kernel string
		CPUs          int `json:"cpus"`
	} `json:"machine"`
	Sizes []size `json:"sizes"`
}

// series are the contenders of the full-sync plot, in legend order.
var series = []struct{ key, label, color string }{
	{"kubelvs", "kubelvs (Adopt + SyncAll)", "#1b7837"},
	{"kubelvs-node", "kubelvs + VIPs + ipset members", "#7fbf7b"},
	{"ipvsadm-R", "ipvsadm -R (one exec)", "#2166ac"},
	{"kube-proxy-pattern", "kube-proxy pattern (moby/ipvs)", "#b2182b"},
}

const (
	width, height = 1100, 450
	panelW        = 430
	top, bottom   = 60, 360
)

func main() {
	in := flag.String("in", "bench/results.json", "results file")
	out := flag.String("out", "bench/results.svg", "SVG to write")
	flag.Parse()
	b, err := os.ReadFile(*in)
	if err != nil {
		log.Fatal(err)
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		log.Fatal(err)
	}
	if len(r.Sizes) == 0 {
		log.Fatal("no sizes in ", *in)
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="20" font-size="15" font-weight="bold">kubelvs scale benchmark (%s guest, kernel %s, %d CPU)</text>`+"\n",
		20, html.EscapeString(r.Machine.Guest), html.EscapeString(r.Machine.Kernel), r.Machine.CPUs)
	fullSync(&s, r.Sizes, 70)
	changes(&s, r.Sizes, 580)
	s.WriteString("</svg>\n")
	if err := os.WriteFile(*out, []byte(s.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

// logAxis maps [lo, hi] (decades widened) onto [a, b] logarithmically.
type logAxis struct{ lo, hi, a, b float64 }

func newLogAxis(vals []float64, a, b float64) logAxis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if v > 0 {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1, 10
	}
	lo, hi = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	return logAxis{lo, hi, a, b}
}

func (x logAxis) at(v float64) float64 {
	return x.a + (x.b-x.a)*(math.Log10(v)-math.Log10(x.lo))/(math.Log10(x.hi)-math.Log10(x.lo))
}

func (x logAxis) decades() []float64 {
	var out []float64
	for v := x.lo; v <= x.hi*1.0001; v *= 10 {
		out = append(out, v)
	}
	return out
}

func label(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%gk", v/1000)
	case v >= 1:
		return fmt.Sprintf("%g", v)
	}
	return fmt.Sprintf("%g", v)
}

func fullSync(s *strings.Builder, sizes []size, left float64) {
	var ns, ts []float64
	for _, z := range sizes {
		ns = append(ns, float64(z.VirtualServers))
		for _, c := range series {
			if t, ok := z.Cold[c.key]; ok {
				ts = append(ts, t.Seconds)
			}
		}
	}
	xa := newLogAxis(ns, left, left+panelW)
	ya := newLogAxis(ts, bottom, top)
	fmt.Fprintf(s, `<text x="%g" y="45" font-weight="bold">Cold full sync, 10 real servers per virtual server</text>`+"\n", left)
	axes(s, xa, ya, "virtual servers", "seconds")
	for i, c := range series {
		var pts []string
		for _, z := range sizes {
			if t, ok := z.Cold[c.key]; ok && t.Seconds > 0 {
				x, y := xa.at(float64(z.VirtualServers)), ya.at(t.Seconds)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
				fmt.Fprintf(s, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s: %d VS, %.2f s</title></circle>`+"\n",
					x, y, c.color, html.EscapeString(c.label), z.VirtualServers, t.Seconds)
			}
		}
		if len(pts) > 1 {
			fmt.Fprintf(s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c.color)
		}
		ly := float64(top + 8 + 16*i)
		fmt.Fprintf(s, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="3"/><text x="%g" y="%g">%s</text>`+"\n",
			left+10, ly, left+30, ly, c.color, left+35, ly+4, html.EscapeString(c.label))
	}
}

func axes(s *strings.Builder, xa, ya logAxis, xl, yl string) {
	fmt.Fprintf(s, `<rect x="%g" y="%d" width="%g" height="%d" fill="none" stroke="#444"/>`+"\n", xa.a, top, xa.b-xa.a, bottom-top)
	for _, v := range xa.decades() {
		x := xa.at(v)
		fmt.Fprintf(s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, top, x, bottom, x, bottom+16, label(v))
	}
	for _, v := range ya.decades() {
		y := ya.at(v)
		fmt.Fprintf(s, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n", xa.a, y, xa.b, y, xa.a-5, y+4, label(v))
	}
	fmt.Fprintf(s, `<text x="%g" y="%d" text-anchor="middle">%s (log)</text>`+"\n", (xa.a+xa.b)/2, bottom+34, xl)
	fmt.Fprintf(s, `<text transform="translate(%g,%d) rotate(-90)" text-anchor="middle">%s (log)</text>`+"\n", xa.a-45, (top+bottom)/2, yl)
}

// changes draws, per size, every single-change latency of each
// distribution as a dot (jittered sideways) with the median and p99
// marked, and the agent's peak memory under the size.
func changes(s *strings.Builder, sizes []size, left float64) {
	var all []float64
	for _, z := range sizes {
		for _, d := range z.dists() {
			all = append(all, d.Samples...)
		}
	}
	ya := newLogAxis(all, bottom, top)
	xa := logAxis{a: left, b: left + 490}
	fmt.Fprintf(s, `<text x="%g" y="45" font-weight="bold">One change among N virtual servers: latency (ms)</text>`+"\n", left)
	fmt.Fprintf(s, `<rect x="%g" y="%d" width="%g" height="%d" fill="none" stroke="#444"/>`+"\n", xa.a, top, xa.b-xa.a, bottom-top)
	for _, v := range ya.decades() {
		y := ya.at(v)
		fmt.Fprintf(s, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n", xa.a, y, xa.b, y, xa.a-5, y+4, label(v))
	}
	fmt.Fprintf(s, `<text transform="translate(%g,%d) rotate(-90)" text-anchor="middle">milliseconds (log)</text>`+"\n", xa.a-45, (top+bottom)/2)
	for i, c := range distSeries {
		ly := float64(bottom + 50 + 14*i) // under the panel: the samples fill it
		fmt.Fprintf(s, `<circle cx="%g" cy="%g" r="4" fill="%s"/><text x="%g" y="%g" font-size="11">%s</text>`+"\n",
			xa.a+12, ly, c.color, xa.a+20, ly+4, html.EscapeString(c.label))
	}
	colW := (xa.b - xa.a) / float64(len(sizes))
	subW := colW / float64(len(distSeries))
	for i, z := range sizes {
		for k, d := range z.dists() {
			cx := xa.a + colW*float64(i) + subW*(float64(k)+0.5)
			for j, v := range slices.Clone(d.Samples) {
				if v <= 0 {
					continue
				}
				jit := (float64((j*7919)%101)/100 - 0.5) * subW * 0.5
				fmt.Fprintf(s, `<circle cx="%.1f" cy="%.1f" r="2" fill="%s" fill-opacity="0.35"/>`+"\n", cx+jit, ya.at(v), distSeries[k].color)
			}
			for _, m := range []struct {
				v    float64
				name string
			}{{d.P50, "p50"}, {d.P99, "p99"}} {
				if m.v <= 0 {
					continue
				}
				y := ya.at(m.v)
				fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black" stroke-width="2"><title>%s %.2f ms</title></line><text x="%.1f" y="%.1f" font-size="9">%s %.3g</text>`+"\n",
					cx-subW*0.3, y, cx+subW*0.3, y, m.name, m.v, cx-subW*0.3, y-3, m.name, m.v)
			}
		}
		cx := xa.a + colW*(float64(i)+0.5)
		fmt.Fprintf(s, `<text x="%.1f" y="%d" text-anchor="middle">%s VS</text>`+"\n", cx, bottom+16, label(float64(z.VirtualServers)))
		if z.Agent != nil && z.Agent.PeakRSSMiB > 0 {
			fmt.Fprintf(s, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11">agent peak RSS %.0f MiB</text>`+"\n", cx, bottom+32, z.Agent.PeakRSSMiB)
		}
		if i > 0 {
			x := xa.a + colW*float64(i)
			fmt.Fprintf(s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#888" stroke-dasharray="4 3"/>`+"\n", x, top, x, bottom)
		}
	}
}
