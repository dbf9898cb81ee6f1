package bench

import (
	"bytes"
	"fmt"
	"html"
	"math"
)

// plotSVG draws one panel per contender: the store's capacity, the
// contender's send rate (attempts/s, throttled ones included) and its
// goodput, per second. Values above the panel's top are clipped and marked.
func plotSVG(s scenario, results []singleResult) []byte {
	const (
		width   = 960
		panelH  = 170
		left    = 60
		right   = 20
		top     = 40
		gap     = 36
		plotW   = width - left - right
		plotH   = panelH - 20
		legendY = 22
	)
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}
	yMax := 2.5 * s.capacity
	height := top + len(results)*(panelH+gap)
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s run, requests/s: send rate (solid), goodput (dotted), capacity (black), sluice's own rate limit (grey dashes)</text>`+"\n", left, legendY, html.EscapeString(s.name))
	for pi, r := range results {
		y0 := top + pi*(panelH+gap) + 10
		n := len(r.capacity)
		if n < 2 {
			continue
		}
		x := func(i int) float64 { return left + float64(i)*plotW/float64(n-1) }
		y := func(v float64) float64 { return float64(y0) + plotH - math.Min(v, yMax)/yMax*plotH }
		color := colors[pi%len(colors)]
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold" fill="%s">%s</text>`+"\n", left, y0-4, color, html.EscapeString(r.name))
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="#555">goodput %s, throttle %s</text>`+"\n", width-right, y0-4, pct(r.share), pct(r.throttle))
		// Frame and grid lines at C/2, C, 2C.
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#ccc"/>`+"\n", left, y0, plotW, plotH)
		for _, g := range []float64{s.capacity / 2, s.capacity, 2 * s.capacity} {
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, left+plotW, y(g), y(g))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#777">%.0f</text>`+"\n", left-4, y(g)+4, g)
		}
		for t := 0; t < n; t += 10 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#777">%ds</text>`+"\n", x(t), y0+plotH+14, t)
		}
		polyline(&b, r.capacity, x, y, "black", 2, "")
		polyline(&b, r.sendRate, x, y, color, 1.5, "")
		polyline(&b, r.goodput, x, y, color, 1.5, "2,2")
		if len(r.limit) > 0 {
			polyline(&b, r.limit, x, y, "#999", 1, "6,3")
		}
		for i, v := range r.sendRate {
			if v > yMax {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="%s" font-size="10">%.0f</text>`+"\n", x(i), y0+9, color, v)
				break // label the first clipped point only
			}
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func polyline(b *bytes.Buffer, vs []float64, x func(int) float64, y func(float64) float64, color string, w float64, dash string) {
	fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="%.1f"`, color, w)
	if dash != "" {
		fmt.Fprintf(b, ` stroke-dasharray="%s"`, dash)
	}
	b.WriteString(` points="`)
	for i, v := range vs {
		fmt.Fprintf(b, "%.1f,%.1f ", x(i), y(v))
	}
	b.WriteString(`"/>` + "\n")
}
