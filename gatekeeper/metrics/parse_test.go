package metrics_test

import (
	"bufio"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
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

// parse is a small strict parser of the text format 0.0.4, independent of
// client_golang: it fails the test on anything a Prometheus server would
// reject or misread.
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
			case "counter", "gauge", "histogram", "summary":
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
		base, ok := strings.CutSuffix(name, suf)
		if ok && (e.typ[base] == "histogram" || e.typ[base] == "summary" && suf != "_bucket") {
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

// block returns the lines of one family in a scrape, from its HELP line to
// the last of its samples, as a Prometheus server reads them.
func block(text, name string) string {
	var b strings.Builder
	in := false
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "# HELP ") || strings.HasPrefix(line, "# TYPE ") {
			fields := strings.Fields(line)
			in = len(fields) >= 3 && fields[2] == name
		}
		if in {
			b.WriteString(line)
		}
	}
	return b.String()
}
