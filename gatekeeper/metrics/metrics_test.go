package metrics_test

import (
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gatekeeper/gatekeeper/metrics"
)

// textFormat is what the handler answers a scraper that asks for nothing
// in particular: the text format 0.0.4, names escaped the classic way (ours
// need no escaping).
const textFormat = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"

// scrape fetches /metrics from h over a real loopback HTTP server, as a
// Prometheus server that asks for the text format does, and returns the raw
// text and its parse.
func scrape(t *testing.T, h http.Handler) (string, *exposition) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s: %s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != textFormat {
		t.Errorf("Content-Type = %q, want %q", ct, textFormat)
	}
	return string(body), parse(t, string(body))
}

// text is r.WriteTo's output, checked for the byte count it reports.
func text(t *testing.T, r *metrics.Registry) string {
	t.Helper()
	var b strings.Builder
	n, err := r.WriteTo(&b)
	if err != nil || n != int64(b.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d bytes", n, err, b.Len())
	}
	return b.String()
}

// TestExactOutput pins what a scraper reads for a small registry of every
// kind of metric (the runtime collectors' families left aside).
func TestExactOutput(t *testing.T) {
	r := metrics.NewRegistry()
	h := r.NewHistogram("b_seconds", "Latency.", []float64{0.5, 1})
	v := r.NewCounterVec("a_total", "Help with \\ and\nnewline.", "y", "x")
	g := r.NewGauge("c", "A gauge.")
	r.NewGaugeFunc("d", "From a function.", func() float64 { return math.Inf(1) })
	v.With("z", "1").Inc()
	v.With(`q"b\n`+"\n", "2").Add(3)
	h.Observe(0.5)
	h.Observe(0.75)
	h.Observe(7)
	g.Set(-1.5)
	// Label pairs come sorted by name (x before y), series by values.
	want := map[string]string{
		"a_total": `# HELP a_total Help with \\ and\nnewline.
# TYPE a_total counter
a_total{x="1",y="z"} 1
a_total{x="2",y="q\"b\\n\n"} 3
`,
		"b_seconds": `# HELP b_seconds Latency.
# TYPE b_seconds histogram
b_seconds_bucket{le="0.5"} 1
b_seconds_bucket{le="1"} 2
b_seconds_bucket{le="+Inf"} 3
b_seconds_sum 8.25
b_seconds_count 3
`,
		"c": `# HELP c A gauge.
# TYPE c gauge
c -1.5
`,
		"d": `# HELP d From a function.
# TYPE d gauge
d +Inf
`,
	}
	scraped, _ := scrape(t, r.Handler())
	written := text(t, r)
	for name, w := range want {
		if got := block(scraped, name); got != w {
			t.Errorf("scraped %s:\n%s\nwant:\n%s", name, got, w)
		}
		if got := block(written, name); got != w {
			t.Errorf("WriteTo %s:\n%s\nwant:\n%s", name, got, w)
		}
	}
}

func TestScrapeValuesAndEscaping(t *testing.T) {
	r := metrics.NewRegistry()
	c := r.NewCounter("jobs_total", "Jobs.")
	v := r.NewCounterVec("events_total", "Events by kind.", "kind", "why")
	g := r.NewGauge("temperature", "Now.")
	live := 7.0
	r.NewGaugeFunc("live", "Live things.", func() float64 { return live })

	hostile := []string{`a"b`, `back\slash`, "new\nline", `\n`, `\"`, "ünïcödé", "bad\xffutf8", "", "}", "x=\"y\",z"}
	for i, val := range hostile {
		v.With(val, "r").Add(uint64(i + 1))
	}
	c.Add(41)
	c.Inc()
	g.Set(21.5)
	g.Dec()

	_, e := scrape(t, r.Handler())
	if got := e.get(t, "jobs_total"); got != 42 {
		t.Errorf("jobs_total = %v, want 42", got)
	}
	if got := e.get(t, "temperature"); got != 20.5 {
		t.Errorf("temperature = %v, want 20.5", got)
	}
	if got := e.get(t, "live"); got != 7 {
		t.Errorf("live = %v, want 7", got)
	}
	for i, val := range hostile {
		want := strings.ToValidUTF8(val, "\uFFFD") // the format is UTF-8 only
		if got := e.get(t, "events_total", "kind", want, "why", "r"); got != float64(i+1) {
			t.Errorf("events_total{kind=%q} = %v, want %d", want, got, i+1)
		}
	}
	if e.help["events_total"] != "Events by kind." || e.typ["events_total"] != "counter" || e.typ["live"] != "gauge" {
		t.Errorf("HELP/TYPE wrong: %v %v", e.help, e.typ)
	}
	if c.Value() != 42 || g.Value() != 20.5 || v.With("", "r").Value() != 8 {
		t.Errorf("Value: counter %d, gauge %v, vector child %d", c.Value(), g.Value(), v.With("", "r").Value())
	}
}

// TestSorted: families come sorted by name and a family's series by label
// values, so scrapes are easy to compare by eye.
func TestSorted(t *testing.T) {
	r := metrics.NewRegistry()
	v := r.NewCounterVec("z_total", "Z.", "a")
	for _, val := range []string{"m", "b", "x", "a", "k"} {
		v.With(val).Inc()
	}
	r.NewCounter("a_total", "A.")
	r.NewGauge("m", "M.")
	_, e := scrape(t, r.Handler())
	if !slices.IsSorted(e.order) {
		t.Errorf("families not sorted: %v", e.order)
	}
	var vals []string
	for _, s := range e.samples {
		if s.name == "z_total" {
			vals = append(vals, s.labels["a"])
		}
	}
	if !slices.Equal(vals, []string{"a", "b", "k", "m", "x"}) {
		t.Errorf("label value order %v", vals)
	}
}

func TestHistogramBuckets(t *testing.T) {
	r := metrics.NewRegistry()
	h := r.NewHistogram("lat_seconds", "Latency.", []float64{0.1, 0.5, 1, 5})
	obs := []float64{0.05, 0.1, 0.1000001, 0.5, 0.7, 1, 4.9, 5, 6, 1e9, math.Inf(1), math.Inf(-1), math.NaN()}
	for _, o := range obs {
		h.Observe(o)
	}
	_, e := scrape(t, r.Handler())
	// Cumulative: le=0.1 holds 0.05, 0.1 and -Inf; an observation equal
	// to a bound is in that bucket; NaN is dropped.
	want := map[string]float64{"0.1": 3, "0.5": 5, "1": 7, "5": 9, "+Inf": 12}
	var prev float64
	for _, le := range []string{"0.1", "0.5", "1", "5", "+Inf"} {
		got := e.get(t, "lat_seconds_bucket", "le", le)
		if got != want[le] {
			t.Errorf("bucket le=%s = %v, want %v", le, got, want[le])
		}
		if got < prev {
			t.Errorf("bucket le=%s = %v below the previous %v: not cumulative", le, got, prev)
		}
		prev = got
	}
	if got := e.get(t, "lat_seconds_count"); got != 12 {
		t.Errorf("_count = %v, want 12", got)
	}
	if got := e.get(t, "lat_seconds_sum"); !math.IsNaN(got) {
		// +Inf and -Inf were both observed: the sum is NaN.
		t.Errorf("_sum = %v, want NaN after +Inf and -Inf", got)
	}

	r2 := metrics.NewRegistry()
	h2 := r2.NewHistogram("x", "X.", []float64{1})
	h2.Observe(0.25)
	h2.Observe(2.5)
	e2 := parse(t, text(t, r2))
	if got := e2.get(t, "x_sum"); got != 2.75 {
		t.Errorf("_sum = %v, want 2.75", got)
	}
}

// TestConcurrent hammers every metric type while scraping; run with -race.
// The final counts must be exact.
func TestConcurrent(t *testing.T) {
	r := metrics.NewRegistry()
	c := r.NewCounter("c_total", "C.")
	v := r.NewCounterVec("v_total", "V.", "k")
	g := r.NewGauge("g", "G.")
	h := r.NewHistogram("h", "H.", []float64{1, 2})
	const workers, each = 8, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				c.Inc()
				v.With(strconv.Itoa(i % 5)).Inc()
				g.Add(1)
				h.Observe(float64(w % 3))
			}
		})
	}
	// Scrape while the writers run; the snapshots are checked afterwards,
	// on the test goroutine.
	stop := make(chan struct{})
	snaps := make(chan []string)
	go func() {
		var out []string
		for {
			select {
			case <-stop:
				snaps <- out
				return
			default:
			}
			var b strings.Builder
			if _, err := r.WriteTo(&b); err == nil && len(out) < 50 {
				out = append(out, b.String())
			}
		}
	}()
	wg.Wait()
	close(stop)
	for _, snap := range <-snaps {
		e := parse(t, snap)
		// Every scrape is a consistent snapshot of the histogram.
		if b, cnt := e.get(t, "h_bucket", "le", "+Inf"), e.get(t, "h_count"); b != cnt {
			t.Errorf("+Inf bucket %v != count %v", b, cnt)
		}
	}
	e := parse(t, text(t, r))
	if got := e.get(t, "c_total"); got != workers*each {
		t.Errorf("c_total = %v, want %d", got, workers*each)
	}
	for k := range 5 {
		if got := e.get(t, "v_total", "k", strconv.Itoa(k)); got != workers*each/5 {
			t.Errorf("v_total{k=%d} = %v, want %d", k, got, workers*each/5)
		}
	}
	if got := e.get(t, "g"); got != workers*each {
		t.Errorf("g = %v, want %d", got, workers*each)
	}
	if got := e.get(t, "h_count"); got != workers*each {
		t.Errorf("h_count = %v, want %d", got, workers*each)
	}
	// Workers 0,3,6 observe 0; 1,4,7 observe 1; 2,5 observe 2.
	if got := e.get(t, "h_bucket", "le", "1"); got != 6*each {
		t.Errorf("h_bucket{le=1} = %v, want %d", got, 6*each)
	}
	if got := e.get(t, "h_sum"); got != (3*1+2*2)*each {
		t.Errorf("h_sum = %v, want %d", got, 7*each)
	}
}

func TestMisusePanics(t *testing.T) {
	tests := []struct {
		name string
		f    func(r *metrics.Registry)
	}{
		{"duplicate name", func(r *metrics.Registry) { r.NewCounter("x", ""); r.NewGauge("x", "") }},
		{"name of a runtime collector", func(r *metrics.Registry) { r.NewGauge("go_goroutines", "") }},
		{"empty name", func(r *metrics.Registry) { r.NewCounter("", "") }},
		{"name with dash", func(r *metrics.Registry) { r.NewCounter("a-b", "") }},
		{"name starting with digit", func(r *metrics.Registry) { r.NewCounter("1a", "") }},
		{"reserved label", func(r *metrics.Registry) { r.NewCounterVec("x", "", "__name") }},
		{"label with colon", func(r *metrics.Registry) { r.NewCounterVec("x", "", "a:b") }},
		{"label with dot", func(r *metrics.Registry) { r.NewCounterVec("x", "", "a.b") }},
		{"repeated label", func(r *metrics.Registry) { r.NewCounterVec("x", "", "a", "a") }},
		{"no labels", func(r *metrics.Registry) { r.NewCounterVec("x", "") }},
		{"too few values", func(r *metrics.Registry) { r.NewCounterVec("x", "", "a", "b").With("1") }},
		{"too many values", func(r *metrics.Registry) { r.NewCounterVec("x", "", "a").With("1", "2") }},
		{"unsorted buckets", func(r *metrics.Registry) { r.NewHistogram("x", "", []float64{1, 0.5}) }},
		{"equal buckets", func(r *metrics.Registry) { r.NewHistogram("x", "", []float64{1, 1}) }},
		{"infinite bucket", func(r *metrics.Registry) { r.NewHistogram("x", "", []float64{1, math.Inf(1)}) }},
		{"no buckets", func(r *metrics.Registry) { r.NewHistogram("x", "", nil) }},
		{"nil gauge func", func(r *metrics.Registry) { r.NewGaugeFunc("x", "", nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic")
				}
			}()
			tt.f(metrics.NewRegistry())
		})
	}
}

// TestHandler: what the handler answers for each method and what the
// scraper asks for.
func TestHandler(t *testing.T) {
	r := metrics.NewRegistry()
	r.NewCounter("x_total", "X.").Inc()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()

	tests := []struct {
		name           string
		method         string
		accept, encode string
		status         int
		contentType    string // prefix
		encoding       string
	}{
		{"GET, no Accept", http.MethodGet, "", "", http.StatusOK, textFormat, ""},
		{"HEAD", http.MethodHead, "", "", http.StatusOK, textFormat, ""},
		{"POST", http.MethodPost, "", "", http.StatusMethodNotAllowed, "text/plain", ""},
		{"text asked for", http.MethodGet, "text/plain;version=0.0.4", "", http.StatusOK, textFormat, ""},
		{"protobuf asked for", http.MethodGet, "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
			"", http.StatusOK, "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited", ""},
		{"gzip asked for", http.MethodGet, "", "gzip", http.StatusOK, textFormat, "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+"/metrics", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			if tt.encode != "" {
				// Set by hand, so the client leaves the body as it came.
				req.Header.Set("Accept-Encoding", tt.encode)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body io.Reader = resp.Body
			if resp.StatusCode != tt.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.contentType) ||
				resp.Header.Get("Content-Encoding") != tt.encoding {
				t.Fatalf("%s, Content-Type %q, Content-Encoding %q; want %d, %q, %q", resp.Status,
					resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding"), tt.status, tt.contentType, tt.encoding)
			}
			if tt.status != http.StatusOK {
				return
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
			if tt.encoding == "gzip" {
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			b, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.method == http.MethodHead:
				if len(b) != 0 {
					t.Errorf("HEAD has a body of %d bytes", len(b))
				}
			case strings.HasPrefix(tt.contentType, "text/plain"):
				if got := parse(t, string(b)).get(t, "x_total"); got != 1 {
					t.Errorf("x_total = %v, want 1", got)
				}
			default:
				if !strings.Contains(string(b), "x_total") {
					t.Errorf("protobuf body lacks x_total")
				}
			}
		})
	}
}

// TestRuntimeCollectors: every registry carries the Go runtime and process
// collectors that operators' dashboards expect.
func TestRuntimeCollectors(t *testing.T) {
	_, e := scrape(t, metrics.NewRegistry().Handler())
	want := map[string]string{
		"go_goroutines":                        "gauge",
		"go_threads":                           "gauge",
		"go_gc_duration_seconds":               "summary",
		"go_memstats_alloc_bytes":              "gauge",
		"go_memstats_heap_inuse_bytes":         "gauge",
		"go_info":                              "gauge",
		"promhttp_metric_handler_errors_total": "counter",
	}
	if runtime.GOOS == "linux" { // read from /proc
		for name, typ := range map[string]string{
			"process_cpu_seconds_total":     "counter",
			"process_resident_memory_bytes": "gauge",
			"process_virtual_memory_bytes":  "gauge",
			"process_open_fds":              "gauge",
			"process_max_fds":               "gauge",
			"process_start_time_seconds":    "gauge",
		} {
			want[name] = typ
		}
	}
	for name, typ := range want {
		if e.typ[name] != typ || e.help[name] == "" {
			t.Errorf("%s: TYPE %q HELP %q, want type %s and some help", name, e.typ[name], e.help[name], typ)
		}
	}
	if got := e.get(t, "go_info", "version", runtime.Version()); got != 1 {
		t.Errorf("go_info = %v, want 1", got)
	}
	if got := e.get(t, "go_goroutines"); got < 1 {
		t.Errorf("go_goroutines = %v", got)
	}
	if runtime.GOOS == "linux" {
		if got := e.get(t, "process_open_fds"); got < 1 {
			t.Errorf("process_open_fds = %v", got)
		}
	}
	for _, cause := range []string{"gathering", "encoding"} {
		if got := e.get(t, "promhttp_metric_handler_errors_total", "cause", cause); got != 0 {
			t.Errorf("promhttp_metric_handler_errors_total{cause=%q} = %v, want 0", cause, got)
		}
	}
}

// TestRegistriesApart: two registries share nothing (no global default
// registry), so each gatekeeper in a test process counts on its own.
func TestRegistriesApart(t *testing.T) {
	a, b := metrics.NewRegistry(), metrics.NewRegistry()
	a.NewCounter("same_total", "Same.").Add(5)
	b.NewCounter("same_total", "Same.").Inc()
	if got := parse(t, text(t, a)).get(t, "same_total"); got != 5 {
		t.Errorf("a: same_total = %v, want 5", got)
	}
	if got := parse(t, text(t, b)).get(t, "same_total"); got != 1 {
		t.Errorf("b: same_total = %v, want 1", got)
	}
}
