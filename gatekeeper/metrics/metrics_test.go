package metrics_test

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gatekeeper/gatekeeper/metrics"
)

// sample is one parsed sample line.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// exposition is a parsed scrape.
type exposition struct {
	help, typ map[string]string
	order     []string // family names in TYPE order
	samples   []sample
}

// get returns the value of the sample with this name and exactly these
// labels (given as name, value pairs).
func (e *exposition) get(t *testing.T, name string, kv ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		want[kv[i]] = kv[i+1]
	}
	for _, s := range e.samples {
		if s.name == name && mapsEqual(s.labels, want) {
			return s.value
		}
	}
	t.Fatalf("no sample %s%v in scrape", name, want)
	return 0
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// parse is a small strict parser of the text format 0.0.4: it fails the
// test on anything a Prometheus server would reject or misread.
func parse(t *testing.T, text string) *exposition {
	t.Helper()
	e := &exposition{help: map[string]string{}, typ: map[string]string{}}
	seen := map[string]bool{}
	if text != "" && !strings.HasSuffix(text, "\n") {
		t.Fatalf("output does not end in a newline")
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("line %d %q: %s", n, line, fmt.Sprintf(format, args...))
		}
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, help, ok := strings.Cut(line[len("# HELP "):], " ")
			if !ok {
				fail("HELP without text")
			}
			if _, dup := e.help[name]; dup {
				fail("second HELP")
			}
			e.help[name] = unescape(t, help, false)
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, _ := strings.Cut(line[len("# TYPE "):], " ")
			if _, dup := e.typ[name]; dup {
				fail("second TYPE")
			}
			switch typ {
			case "counter", "gauge", "histogram":
			default:
				fail("unknown type %q", typ)
			}
			e.typ[name] = typ
			e.order = append(e.order, name)
		case strings.HasPrefix(line, "#") || line == "":
			fail("unexpected comment or blank line")
		default:
			s, key := parseSample(t, line, fail)
			fam := e.family(s.name)
			if fam == "" || fam != e.order[len(e.order)-1] {
				fail("sample outside its family's block")
			}
			if seen[key] {
				fail("duplicate series")
			}
			seen[key] = true
			e.samples = append(e.samples, s)
		}
	}
	return e
}

// family finds the declared family a sample name belongs to.
func (e *exposition) family(name string) string {
	if _, ok := e.typ[name]; ok {
		return name
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && e.typ[base] == "histogram" {
			return base
		}
	}
	return ""
}

func parseSample(t *testing.T, line string, fail func(string, ...any)) (sample, string) {
	t.Helper()
	s := sample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		fail("no metric name")
	}
	s.name = line[:i]
	rest := line[i:]
	key := s.name
	if rest[0] == '{' {
		rest = rest[1:]
		var names []string
		for rest != "" && rest[0] != '}' {
			eq := strings.IndexByte(rest, '=')
			if eq <= 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
				fail("bad label")
			}
			lname := rest[:eq]
			rest = rest[eq+2:]
			// Scan the quoted value, honouring escapes.
			j := 0
			for ; j < len(rest) && rest[j] != '"'; j++ {
				if rest[j] == '\\' {
					j++
				}
			}
			if j >= len(rest) {
				fail("unterminated label value")
			}
			if _, dup := s.labels[lname]; dup {
				fail("label %s twice", lname)
			}
			s.labels[lname] = unescape(t, rest[:j], true)
			names = append(names, lname)
			rest = strings.TrimPrefix(rest[j+1:], ",")
		}
		if rest == "" {
			fail("unterminated label set")
		}
		rest = rest[1:]
		slices.Sort(names)
		for _, n := range names {
			key += "\x00" + n + "\x00" + s.labels[n]
		}
	}
	if !strings.HasPrefix(rest, " ") {
		fail("no space before value")
	}
	v, err := strconv.ParseFloat(strings.TrimPrefix(rest[1:], "+"), 64)
	if err != nil {
		fail("bad value: %v", err)
	}
	s.value = v
	return s, key
}

// unescape undoes the format's escapes: \\ and \n, and \" in label values.
// Anything else after a backslash is an error.
func unescape(t *testing.T, s string, quoted bool) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' || (quoted && c == '"') {
			t.Fatalf("unescaped %q in %q", c, s)
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		switch {
		case i < len(s) && s[i] == '\\':
			b.WriteByte('\\')
		case i < len(s) && s[i] == 'n':
			b.WriteByte('\n')
		case i < len(s) && s[i] == '"' && quoted:
			b.WriteByte('"')
		default:
			t.Fatalf("bad escape in %q", s)
		}
	}
	return b.String()
}

// scrape fetches /metrics from h over a real loopback HTTP server.
func scrape(t *testing.T, h http.Handler) *exposition {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	return parse(t, string(body))
}

func text(t *testing.T, r *metrics.Registry) string {
	t.Helper()
	var b strings.Builder
	n, err := r.WriteTo(&b)
	if err != nil || n != int64(b.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d bytes", n, err, b.Len())
	}
	return b.String()
}

// TestExactOutput pins the format byte for byte for a small registry.
func TestExactOutput(t *testing.T) {
	r := metrics.NewRegistry()
	h := r.NewHistogram("b_seconds", "Latency.", []float64{0.5, 1})
	v := r.NewCounterVec("a_total", "Help with \\ and\nnewline.", "x", "y")
	g := r.NewGauge("c", "")
	r.NewGaugeFunc("d", "From a function.", func() float64 { return math.Inf(1) })
	v.With("2", `q"b\n`+"\n").Add(3)
	v.With("1", "z").Inc()
	h.Observe(0.5)
	h.Observe(0.75)
	h.Observe(7)
	g.Set(-1.5)
	want := `# HELP a_total Help with \\ and\nnewline.
# TYPE a_total counter
a_total{x="1",y="z"} 1
a_total{x="2",y="q\"b\\n\n"} 3
# HELP b_seconds Latency.
# TYPE b_seconds histogram
b_seconds_bucket{le="0.5"} 1
b_seconds_bucket{le="1"} 2
b_seconds_bucket{le="+Inf"} 3
b_seconds_sum 8.25
b_seconds_count 3
# TYPE c gauge
c -1.5
# HELP d From a function.
# TYPE d gauge
d +Inf
`
	if got := text(t, r); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
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

	e := scrape(t, r.Handler())
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
	if !slices.IsSorted(e.order) {
		t.Errorf("families not sorted: %v", e.order)
	}
}

func TestHistogramBuckets(t *testing.T) {
	r := metrics.NewRegistry()
	h := r.NewHistogram("lat_seconds", "Latency.", []float64{0.1, 0.5, 1, 5})
	obs := []float64{0.05, 0.1, 0.1000001, 0.5, 0.7, 1, 4.9, 5, 6, 1e9, math.Inf(1), math.Inf(-1), math.NaN()}
	for _, o := range obs {
		h.Observe(o)
	}
	e := scrape(t, r.Handler())
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
		// +Inf and -Inf were both observed: the sum is NaN, as in Prometheus' own client.
		t.Errorf("_sum = %v, want NaN after +Inf and -Inf", got)
	}

	r2 := metrics.NewRegistry()
	h2 := r2.NewHistogram("x", "", []float64{1})
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
	c := r.NewCounter("c_total", "")
	v := r.NewCounterVec("v_total", "", "k")
	g := r.NewGauge("g", "")
	h := r.NewHistogram("h", "", []float64{1, 2})
	const workers, each = 8, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c.Inc()
				v.With(strconv.Itoa(i % 5)).Inc()
				g.Add(1)
				h.Observe(float64(w % 3))
			}
		}()
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
			if _, err := r.WriteTo(&b); err == nil && len(out) < 200 {
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

func TestDeterministic(t *testing.T) {
	r := metrics.NewRegistry()
	v := r.NewCounterVec("z_total", "", "a")
	for _, val := range []string{"m", "b", "x", "a", "k"} {
		v.With(val).Inc()
	}
	r.NewCounter("a_total", "")
	r.NewGauge("m", "")
	first := text(t, r)
	for range 20 {
		if got := text(t, r); got != first {
			t.Fatalf("output changed between scrapes:\n%s\n---\n%s", first, got)
		}
	}
	e := parse(t, first)
	if !slices.Equal(e.order, []string{"a_total", "m", "z_total"}) {
		t.Errorf("family order %v", e.order)
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

func TestMisusePanics(t *testing.T) {
	tests := []struct {
		name string
		f    func(r *metrics.Registry)
	}{
		{"duplicate name", func(r *metrics.Registry) { r.NewCounter("x", ""); r.NewGauge("x", "") }},
		{"empty name", func(r *metrics.Registry) { r.NewCounter("", "") }},
		{"name with dash", func(r *metrics.Registry) { r.NewCounter("a-b", "") }},
		{"name starting with digit", func(r *metrics.Registry) { r.NewCounter("1a", "") }},
		{"reserved label", func(r *metrics.Registry) { r.NewCounterVec("x", "", "__name") }},
		{"le label", func(r *metrics.Registry) { r.NewCounterVec("x", "", "le") }},
		{"label with colon", func(r *metrics.Registry) { r.NewCounterVec("x", "", "a:b") }},
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

func TestHandlerMethods(t *testing.T) {
	r := metrics.NewRegistry()
	r.NewCounter("x_total", "X.").Inc()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()

	resp, err := http.Head(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != metrics.ContentType {
		t.Errorf("HEAD: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s, want 405", resp.Status)
	}
}

func TestGatekeeper(t *testing.T) {
	r := metrics.NewRegistry()
	g := metrics.NewGatekeeper(r)

	e := scrape(t, r.Handler())
	wantTypes := map[string]string{
		"gatekeeper_logins_total":               "counter",
		"gatekeeper_code_reuse_refusals_total":  "counter",
		"gatekeeper_trusted_bypass_total":       "counter",
		"gatekeeper_lockouts_total":             "counter",
		"gatekeeper_second_factor_checks_total": "counter",
		"gatekeeper_preauth_refused_total":      "counter",
		"gatekeeper_store_write_errors_total":   "counter",
		"gatekeeper_sessions":                   "gauge",
		"gatekeeper_relayed_bytes_total":        "counter",
		"gatekeeper_auth_duration_seconds":      "histogram",
	}
	for name, typ := range wantTypes {
		if e.typ[name] != typ || e.help[name] == "" {
			t.Errorf("%s: TYPE %q HELP %q, want type %s and some help", name, e.typ[name], e.help[name], typ)
		}
	}
	if len(e.typ) != len(wantTypes) {
		t.Errorf("families %v, want exactly %d", e.order, len(wantTypes))
	}
	// Both directions exist from the start.
	if e.get(t, "gatekeeper_relayed_bytes_total", "direction", "up") != 0 || e.get(t, "gatekeeper_relayed_bytes_total", "direction", "down") != 0 {
		t.Error("relayed bytes not zero at start")
	}

	g.Logins.With(metrics.ResultOK, "code").Inc()
	g.Logins.With(metrics.ResultRefused, "replay").Add(2)
	g.CodeReuseRefusals.Add(2)
	g.TrustedBypass.Inc()
	g.Lockouts.With("user").Inc()
	g.SecondFactorChecks.Add(3)
	g.PreauthRefused.With("per_address").Inc()
	g.StoreWriteErrors.With("no_space").Inc()
	g.Sessions.Inc()
	g.Sessions.Inc()
	g.Sessions.Dec()
	g.RelayedUp.Add(100)
	g.RelayedDown.Add(5000)
	g.AuthDuration.Observe(2.1)

	e = scrape(t, r.Handler())
	checks := []struct {
		name string
		kv   []string
		want float64
	}{
		{"gatekeeper_logins_total", []string{"result", "ok", "reason", "code"}, 1},
		{"gatekeeper_logins_total", []string{"result", "refused", "reason", "replay"}, 2},
		{"gatekeeper_code_reuse_refusals_total", nil, 2},
		{"gatekeeper_trusted_bypass_total", nil, 1},
		{"gatekeeper_lockouts_total", []string{"scope", "user"}, 1},
		{"gatekeeper_second_factor_checks_total", nil, 3},
		{"gatekeeper_preauth_refused_total", []string{"reason", "per_address"}, 1},
		{"gatekeeper_store_write_errors_total", []string{"error", "no_space"}, 1},
		{"gatekeeper_sessions", nil, 1},
		{"gatekeeper_relayed_bytes_total", []string{"direction", "up"}, 100},
		{"gatekeeper_relayed_bytes_total", []string{"direction", "down"}, 5000},
		{"gatekeeper_auth_duration_seconds_bucket", []string{"le", "2"}, 0},
		{"gatekeeper_auth_duration_seconds_bucket", []string{"le", "2.5"}, 1},
		{"gatekeeper_auth_duration_seconds_count", nil, 1},
	}
	for _, c := range checks {
		if got := e.get(t, c.name, c.kv...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.kv, got, c.want)
		}
	}

	// A second set in the same registry is a programming error.
	defer func() {
		if recover() == nil {
			t.Error("second NewGatekeeper on one registry did not panic")
		}
	}()
	metrics.NewGatekeeper(r)
}
