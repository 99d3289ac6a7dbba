// Package metrics is gatekeeper's Prometheus instrumentation, built on
// github.com/prometheus/client_golang.
//
// A Registry is a prometheus.Registry of its own (never the library's global
// default one) that already holds the Go runtime collector (go_*) and the
// process collector (process_*). Its Handler serves it with promhttp, which
// negotiates the exposition format (the text format 0.0.4 unless the scraper
// asks for protobuf) and compression. Families are sorted by name and the
// series in a family by label values; label pairs are sorted by label name.
//
// Counter, CounterVec, Gauge and Histogram are thin wrappers around
// client_golang's types that keep this package's API: whole-number counters,
// Value for tests, With for label values. Gatekeeper is the daemon's set of
// metrics.
//
// All metric types are safe for concurrent use. Registration mistakes
// (invalid or duplicate names, a wrong number of label values) are
// programming errors and panic, like regexp.MustCompile.
package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Registry holds metric families and serves them. The zero value is not
// usable; use NewRegistry.
type Registry struct {
	reg *prometheus.Registry
}

// NewRegistry returns a registry that holds the Go runtime collector (go_*:
// goroutines, GC, memory) and the process collector (process_*: CPU time,
// memory, open file descriptors, start time; on Linux from /proc, and a
// series it cannot read is left out rather than failing the scrape).
func NewRegistry() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Registry{reg: reg}
}

// register checks name and labels against the classic naming rules, which
// the text format 0.0.4 needs without escaping (client_golang would accept
// any UTF-8 and rename at scrape time), and registers c.
func (r *Registry) register(name string, labels []string, c prometheus.Collector) {
	if !model.LegacyValidation.IsValidMetricName(name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", name))
	}
	for _, l := range labels {
		if !model.LegacyValidation.IsValidLabelName(l) {
			panic(fmt.Sprintf("metrics: invalid label name %q for %q", l, name))
		}
	}
	if err := r.reg.Register(c); err != nil {
		panic(fmt.Sprintf("metrics: %s: %v", name, err))
	}
}

// NewCounter registers and returns a counter without labels.
func (r *Registry) NewCounter(name, help string) *Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	r.register(name, nil, c)
	return &Counter{c: c}
}

// NewCounterVec registers and returns a counter family whose children are
// told apart by values for the given label names. Label values should come
// from a small fixed set (results, reasons, directions), never from user
// input such as user names: every distinct value is kept forever.
func (r *Registry) NewCounterVec(name, help string, labels ...string) *CounterVec {
	if len(labels) == 0 {
		panic(fmt.Sprintf("metrics: counter vector %q without labels", name))
	}
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	r.register(name, labels, v)
	return &CounterVec{v: v}
}

// NewGauge registers and returns a gauge.
func (r *Registry) NewGauge(name, help string) *Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	r.register(name, nil, g)
	return &Gauge{g: g}
}

// NewGaugeFunc registers a gauge whose value is fn's result at each scrape.
// fn must be safe to call concurrently and should be quick.
func (r *Registry) NewGaugeFunc(name, help string, fn func() float64) {
	if fn == nil {
		panic(fmt.Sprintf("metrics: nil function for gauge %q", name))
	}
	r.register(name, nil, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

// NewHistogram registers and returns a histogram with the given upper
// bucket bounds, which must be strictly increasing; the +Inf bucket is
// added.
func (r *Registry) NewHistogram(name, help string, buckets []float64) *Histogram {
	checkBuckets(name, buckets)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	r.register(name, nil, h)
	return &Histogram{h: h}
}

// checkBuckets panics unless buckets are finite and strictly increasing
// (client_golang would take no buckets to mean its defaults).
func checkBuckets(name string, buckets []float64) {
	if len(buckets) == 0 {
		panic(fmt.Sprintf("metrics: histogram %q without buckets", name))
	}
	for i, b := range buckets {
		if math.IsNaN(b) || math.IsInf(b, 0) || (i > 0 && b <= buckets[i-1]) {
			panic(fmt.Sprintf("metrics: histogram %q: buckets must be finite and strictly increasing", name))
		}
	}
}

// WriteTo gathers every metric and writes it in the text exposition format
// 0.0.4, as Handler does for a scraper that asks for text. If gathering
// failed in part, what was gathered is written and the error returned.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	mfs, gatherErr := r.reg.Gather()
	var n int64
	for _, mf := range mfs {
		k, err := expfmt.MetricFamilyToText(w, mf)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, gatherErr
}

// Handler serves the registry's metrics (GET and HEAD only) with promhttp.
// It also counts its own failures in promhttp_metric_handler_errors_total
// {cause="gathering"|"encoding"}, which it registers on first use.
func (r *Registry) Handler() http.Handler {
	h := promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		// A scrape that cannot be gathered in full fails with a 500 and
		// the reason, which Prometheus shows for the target, rather than
		// passing part of the metrics off as all of them.
		ErrorHandling: promhttp.HTTPErrorOnError,
		Registry:      r.reg,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, req)
	})
}

// validUTF8 replaces invalid UTF-8 in a label value with U+FFFD:
// client_golang panics on it, and a metric is not worth a crash.
// The caller's slice is not changed.
func validUTF8(values []string) []string {
	for i, v := range values {
		if !utf8.ValidString(v) {
			values = slices.Clone(values)
			values[i] = strings.ToValidUTF8(v, "\uFFFD")
		}
	}
	return values
}

// Counter is a monotonically increasing count.
type Counter struct{ c prometheus.Counter }

// Inc adds one.
func (c *Counter) Inc() { c.c.Inc() }

// Add adds n.
func (c *Counter) Add(n uint64) { c.c.Add(float64(n)) }

// Value returns the current count.
func (c *Counter) Value() uint64 {
	var m dto.Metric
	if err := c.c.Write(&m); err != nil {
		panic(err) // a plain counter always writes
	}
	return uint64(m.GetCounter().GetValue())
}

// CounterVec is a family of counters with fixed label names.
type CounterVec struct{ v *prometheus.CounterVec }

// With returns the counter for the given label values, one per label name
// in registration order, creating it at zero on first use. The counter may
// be kept and reused. A wrong number of values panics.
func (v *CounterVec) With(values ...string) *Counter {
	return &Counter{c: v.v.WithLabelValues(validUTF8(values)...)}
}

// Gauge is a value that can go up and down.
type Gauge struct{ g prometheus.Gauge }

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { g.g.Set(v) }

// Add adds d (which may be negative).
func (g *Gauge) Add(d float64) { g.g.Add(d) }

// Inc adds one.
func (g *Gauge) Inc() { g.g.Inc() }

// Dec subtracts one.
func (g *Gauge) Dec() { g.g.Dec() }

// Value returns the current value.
func (g *Gauge) Value() float64 {
	var m dto.Metric
	if err := g.g.Write(&m); err != nil {
		panic(err) // a plain gauge always writes
	}
	return m.GetGauge().GetValue()
}

// Histogram counts observations into fixed buckets.
type Histogram struct{ h prometheus.Histogram }

// Observe records v. NaN is ignored: it would poison the sum forever.
func (h *Histogram) Observe(v float64) {
	if math.IsNaN(v) {
		return
	}
	h.h.Observe(v)
}
