package main

import (
	"fmt"
	"html"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
)

// plotFile draws the results at path into svg: per change, write
// requests, watch events delivered and the time until Programmed on all
// nodes, and the size of a VirtualService, against the number of nodes,
// on log scales (growth as N and as N² are straight lines of slopes 1 and
// 2); one color per design, solid for a VirtualService change, dashed
// for an EndpointSlice change. Plain SVG text, in the style of bench/plot.
func plotFile(path, svg string) error {
	r, err := readResults(path)
	if err != nil {
		return err
	}
	if len(r.Records) == 0 {
		return fmt.Errorf("%s: no records", path)
	}
	return os.WriteFile(svg, []byte(draw(r)), 0o644)
}

type series struct {
	label, color, dash string
	design, kind       string
	value              func(record) float64
}

var designColors = map[string]string{designStatusNodes: "#d6604d", designNodeReports: "#2166ac"}

func draw(r results) string {
	const w, h = 960, 800
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&sb, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	title := "Status reports at cluster scale: the cost of one change, by design"
	fmt.Fprintf(&sb, `<text x="%d" y="22" text-anchor="middle" font-size="14" font-weight="bold">%s</text>`+"\n", w/2, html.EscapeString(title))
	designs := designLabel(designStatusNodes) + ": each agent writes its entry into every VirtualService's status;  " +
		designLabel(designNodeReports) + ": each agent writes one NodeReport"
	fmt.Fprintf(&sb, `<text x="%d" y="40" text-anchor="middle">%s</text>`+"\n", w/2, html.EscapeString(designs))
	vsOf := map[int]int{}
	for _, x := range r.Records {
		vsOf[x.Nodes] = x.VirtualServices
	}
	var runs []string
	for _, n := range slices.Sorted(maps.Keys(vsOf)) {
		runs = append(runs, fmt.Sprintf("%d nodes: %d", n, vsOf[n]))
	}
	sub := fmt.Sprintf("VirtualServices (%s), %d endpoints each; kube-apiserver %s; %s, %d CPUs",
		strings.Join(runs, ", "), r.Records[0].Endpoints, strings.TrimPrefix(r.Machine.APIServer, "Kubernetes "), r.Machine.CPU, r.Machine.CPUs)
	fmt.Fprintf(&sb, `<text x="%d" y="58" text-anchor="middle" fill="#555">%s</text>`+"\n", w/2, html.EscapeString(sub))
	legend(&sb, w/2, 82)

	perChange := func(v func(record) float64) []series {
		var ss []series
		for _, d := range []string{designStatusNodes, designNodeReports} {
			for _, k := range []struct{ kind, label, dash string }{
				{kindVS, "VirtualService change", ""}, {kindSlice, "EndpointSlice change", "5,4"},
			} {
				ss = append(ss, series{designLabel(d) + ", " + k.label, designColors[d], k.dash, d, k.kind, v})
			}
		}
		return ss
	}
	panel(&sb, r.Records, 70, 125, 370, 250, "write requests per change", perChange(func(x record) float64 { return x.WritesPerChange }))
	panel(&sb, r.Records, 560, 125, 370, 250, "watch events delivered per change", perChange(func(x record) float64 { return x.EventsTotal }))
	panel(&sb, r.Records, 70, 495, 370, 250, "time to Programmed on all nodes, p50 (ms)", perChange(func(x record) float64 { return x.ProgrammedMS.P50 }))
	var size []series
	for _, d := range []string{designStatusNodes, designNodeReports} {
		size = append(size, series{designLabel(d) + ": VirtualService", designColors[d], "", d, kindVS, func(x record) float64 { return float64(x.VSBytes) }})
	}
	panel(&sb, r.Records, 560, 495, 370, 250, "size of a VirtualService (bytes)", size)
	sb.WriteString("</svg>\n")
	return sb.String()
}

// legend draws the key shared by the panels, centered at x.
func legend(sb *strings.Builder, x, y float64) {
	items := []struct{ label, color, dash string }{
		{designLabel(designStatusNodes), designColors[designStatusNodes], ""},
		{designLabel(designNodeReports), designColors[designNodeReports], ""},
		{"VirtualService change", "#333", ""},
		{"EndpointSlice change", "#333", "5,4"},
	}
	// About 7 pixels a character at 12 px sans-serif.
	width := func(label string) float64 { return 30 + 7*float64(len(label)) + 24 }
	total := 0.0
	for _, it := range items {
		total += width(it.label)
	}
	x -= total / 2
	for _, it := range items {
		dash := ""
		if it.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, it.dash)
		}
		fmt.Fprintf(sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/>`+"\n", x, y-4, x+24, y-4, it.color, dash)
		fmt.Fprintf(sb, `<text x="%.0f" y="%.0f">%s</text>`+"\n", x+30, y, html.EscapeString(it.label))
		x += width(it.label)
	}
}

// panel draws series on log-log axes at (x0, y0), size pw x ph.
func panel(sb *strings.Builder, recs []record, x0, y0, pw, ph float64, title string, ss []series) {
	var ns []float64
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range recs {
		ns = append(ns, float64(r.Nodes))
		for _, s := range ss {
			if r.Kind == s.kind && r.Design == s.design {
				if v := s.value(r); v > 0 {
					lo, hi = min(lo, v), max(hi, v)
				}
			}
		}
	}
	slices.Sort(ns)
	ns = slices.Compact(ns)
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	nlo, nhi := math.Floor(math.Log10(ns[0]*0.8)*2)/2, math.Ceil(math.Log10(ns[len(ns)-1]*1.25)*2)/2
	vlo, vhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if vhi == vlo {
		vhi++
	}
	px := func(n float64) float64 { return x0 + (math.Log10(n)-nlo)/(nhi-nlo)*pw }
	py := func(v float64) float64 { return y0 + ph - (math.Log10(v)-vlo)/(vhi-vlo)*ph }

	fmt.Fprintf(sb, `<text x="%.0f" y="%.0f" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x0+pw/2, y0-8, html.EscapeString(title))
	fmt.Fprintf(sb, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", x0, y0, pw, ph)
	for e := vlo; e <= vhi; e++ {
		y := py(math.Pow(10, e))
		fmt.Fprintf(sb, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+pw, y)
		fmt.Fprintf(sb, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y+4, tick(math.Pow(10, e)))
	}
	for _, n := range ns {
		x := px(n)
		fmt.Fprintf(sb, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`+"\n", x, y0, x, y0+ph)
		fmt.Fprintf(sb, `<text x="%.1f" y="%.0f" text-anchor="middle">%g</text>`+"\n", x, y0+ph+16, n)
	}
	fmt.Fprintf(sb, `<text x="%.0f" y="%.0f" text-anchor="middle">nodes (agents), log scale</text>`+"\n", x0+pw/2, y0+ph+34)
	for _, s := range ss {
		var pts []string
		for _, r := range recs {
			if r.Kind != s.kind || r.Design != s.design {
				continue
			}
			v := s.value(r)
			if v <= 0 {
				continue
			}
			x, y := px(float64(r.Nodes)), py(v)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			fmt.Fprintf(sb, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s, N=%d: %.1f</title></circle>`+"\n", x, y, s.color, html.EscapeString(s.label), r.Nodes, v)
		}
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		if len(pts) > 1 {
			fmt.Fprintf(sb, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		}
	}
}

func tick(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", v)
}
