// Package metrics is a small Prometheus registry that writes the text
// exposition format, version 0.0.4, with the standard library only.
//
// It has what gatekeeper needs and nothing more: counters (optionally with a
// fixed set of label names), gauges, gauges read from a function, and
// histograms with fixed buckets. Output is sorted by metric name and then by
// label values, so two scrapes of the same state are byte-identical.
//
// All metric types are safe for concurrent use. Registration mistakes
// (invalid or duplicate names, a wrong number of label values) are
// programming errors and panic, like regexp.MustCompile.
package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// ContentType is the media type of the text exposition format 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// metric is one registered metric family.
type metric interface {
	// write appends the family's sample lines (no HELP/TYPE) to w.
	write(w *bufio.Writer, name string)
}

type family struct {
	name, help, typ string
	m               metric
}

// Registry holds metric families and writes them out. The zero value is not
// usable; use NewRegistry.
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{families: map[string]*family{}}
}

func (r *Registry) register(name, help, typ string, m metric) {
	if !validMetricName(name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", name))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.families[name]; dup {
		panic(fmt.Sprintf("metrics: metric %q registered twice", name))
	}
	r.families[name] = &family{name: name, help: help, typ: typ, m: m}
}

// NewCounter registers and returns a counter without labels.
func (r *Registry) NewCounter(name, help string) *Counter {
	c := &Counter{}
	r.register(name, help, "counter", c)
	return c
}

// NewCounterVec registers and returns a counter family whose children are
// told apart by values for the given label names. Label values should come
// from a small fixed set (results, reasons, directions), never from user
// input such as user names: every distinct value is kept forever.
func (r *Registry) NewCounterVec(name, help string, labels ...string) *CounterVec {
	if len(labels) == 0 {
		panic(fmt.Sprintf("metrics: counter vector %q without labels", name))
	}
	for i, l := range labels {
		if !validLabelName(l) || slices.Contains(labels[:i], l) {
			panic(fmt.Sprintf("metrics: invalid or repeated label name %q for %q", l, name))
		}
	}
	v := &CounterVec{labels: slices.Clone(labels), children: map[string]*vecChild{}}
	r.register(name, help, "counter", v)
	return v
}

// NewGauge registers and returns a gauge.
func (r *Registry) NewGauge(name, help string) *Gauge {
	g := &Gauge{}
	r.register(name, help, "gauge", g)
	return g
}

// NewGaugeFunc registers a gauge whose value is fn's result at each scrape.
// fn must be safe to call concurrently and should be quick.
func (r *Registry) NewGaugeFunc(name, help string, fn func() float64) {
	if fn == nil {
		panic(fmt.Sprintf("metrics: nil function for gauge %q", name))
	}
	r.register(name, help, "gauge", gaugeFunc(fn))
}

// NewHistogram registers and returns a histogram with the given upper
// bucket bounds, which must be finite and strictly increasing; the +Inf
// bucket is added.
func (r *Registry) NewHistogram(name, help string, buckets []float64) *Histogram {
	if len(buckets) == 0 {
		panic(fmt.Sprintf("metrics: histogram %q without buckets", name))
	}
	for i, b := range buckets {
		if math.IsNaN(b) || math.IsInf(b, 0) || (i > 0 && b <= buckets[i-1]) {
			panic(fmt.Sprintf("metrics: histogram %q: buckets must be finite and strictly increasing", name))
		}
	}
	h := &Histogram{upper: slices.Clone(buckets), counts: make([]uint64, len(buckets)+1)}
	r.register(name, help, "histogram", h)
	return h
}

// WriteTo writes every metric in the text exposition format, sorted by name.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	slices.SortFunc(fams, func(a, b *family) int { return strings.Compare(a.name, b.name) })

	cw := &countWriter{w: w}
	bw := bufio.NewWriter(cw)
	for _, f := range fams {
		if f.help != "" {
			fmt.Fprintf(bw, "# HELP %s %s\n", f.name, escapeHelp(f.help))
		}
		fmt.Fprintf(bw, "# TYPE %s %s\n", f.name, f.typ)
		f.m.write(bw, f.name)
	}
	err := bw.Flush()
	return cw.n, err
}

// Handler serves the registry's metrics (GET and HEAD only).
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// Rendered in full first, so a scrape never sees half a family
		// and the length is known.
		var buf bytes.Buffer
		_, _ = r.WriteTo(&buf) // a bytes.Buffer does not fail
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		w.Header().Set("Cache-Control", "no-store")
		if req.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(buf.Bytes()) // the scraper went away; nothing to do
	})
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Counter is a monotonically increasing count.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

func (c *Counter) write(w *bufio.Writer, name string) {
	fmt.Fprintf(w, "%s %d\n", name, c.v.Load())
}

// CounterVec is a family of counters with fixed label names.
type CounterVec struct {
	labels   []string
	mu       sync.RWMutex
	children map[string]*vecChild // key: length-prefixed label values
}

type vecChild struct {
	values []string
	c      Counter
}

// With returns the counter for the given label values, one per label name
// in registration order, creating it at zero on first use. The counter may
// be kept and reused. A wrong number of values panics.
func (v *CounterVec) With(values ...string) *Counter {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %d label values for %d labels %q", len(values), len(v.labels), v.labels))
	}
	// Length-prefixed, so no two different value lists share a key
	// whatever bytes the values hold.
	var kb strings.Builder
	for _, val := range values {
		kb.WriteString(strconv.Itoa(len(val)))
		kb.WriteByte(':')
		kb.WriteString(val)
	}
	key := kb.String()
	v.mu.RLock()
	ch := v.children[key]
	v.mu.RUnlock()
	if ch != nil {
		return &ch.c
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if ch = v.children[key]; ch == nil {
		ch = &vecChild{values: slices.Clone(values)}
		v.children[key] = ch
	}
	return &ch.c
}

func (v *CounterVec) write(w *bufio.Writer, name string) {
	v.mu.RLock()
	kids := make([]*vecChild, 0, len(v.children))
	for _, ch := range v.children {
		kids = append(kids, ch)
	}
	v.mu.RUnlock()
	slices.SortFunc(kids, func(a, b *vecChild) int { return slices.Compare(a.values, b.values) })
	for _, ch := range kids {
		w.WriteString(name)
		w.WriteByte('{')
		for i, l := range v.labels {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(l)
			w.WriteString(`="`)
			w.WriteString(escapeLabel(ch.values[i]))
			w.WriteByte('"')
		}
		fmt.Fprintf(w, "} %d\n", ch.c.v.Load())
	}
}

// Gauge is a value that can go up and down.
type Gauge struct{ bits atomic.Uint64 }

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Add adds d (which may be negative).
func (g *Gauge) Add(d float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Inc adds one.
func (g *Gauge) Inc() { g.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.Add(-1) }

// Value returns the current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

func (g *Gauge) write(w *bufio.Writer, name string) {
	fmt.Fprintf(w, "%s %s\n", name, formatFloat(g.Value()))
}

type gaugeFunc func() float64

func (f gaugeFunc) write(w *bufio.Writer, name string) {
	fmt.Fprintf(w, "%s %s\n", name, formatFloat(f()))
}

// Histogram counts observations into fixed buckets.
type Histogram struct {
	upper []float64 // finite upper bounds; counts has one more, for +Inf

	// A mutex rather than atomics: a scrape must see count, sum and
	// buckets from the same moment, or the +Inf bucket and _count could
	// disagree. Observations are rare (one per login).
	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative
	sum    float64
	n      uint64
}

// Observe records v. NaN is ignored: it would poison the sum forever.
func (h *Histogram) Observe(v float64) {
	if math.IsNaN(v) {
		return
	}
	i, _ := slices.BinarySearch(h.upper, v) // first bucket with v <= upper
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.n++
	h.mu.Unlock()
}

func (h *Histogram) write(w *bufio.Writer, name string) {
	h.mu.Lock()
	counts := slices.Clone(h.counts)
	sum, n := h.sum, h.n
	h.mu.Unlock()
	var cum uint64
	for i, c := range counts {
		cum += c
		le := "+Inf"
		if i < len(h.upper) {
			le = formatFloat(h.upper[i])
		}
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", name, le, cum)
	}
	fmt.Fprintf(w, "%s_sum %s\n", name, formatFloat(sum))
	fmt.Fprintf(w, "%s_count %d\n", name, n)
}

// formatFloat writes a sample value as Prometheus expects: shortest
// round-trip form, and +Inf, -Inf, NaN spelled out.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// escapeLabel escapes a label value: backslash, double quote and newline.
// Invalid UTF-8, which the format does not allow, becomes U+FFFD.
func escapeLabel(s string) string { return escape(s, true) }

// escapeHelp escapes HELP text: backslash and newline.
func escapeHelp(s string) string { return escape(s, false) }

func escape(s string, quote bool) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !strings.ContainsAny(s, "\\\n\"") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '"' && quote:
			b.WriteString(`\"`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// validMetricName: [a-zA-Z_:][a-zA-Z0-9_:]*
func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// validLabelName: [a-zA-Z_][a-zA-Z0-9_]*, and names starting with __ are
// reserved; "le" belongs to histograms.
func validLabelName(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") || s == "le" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
