package lvm

import (
	"fmt"
	"strconv"

	"github.com/prezero/prezero/freemap"
)

// Limits of the metadata text parser: LVM's own metadata stays far below
// them; anything beyond is refused rather than followed.
const (
	maxDepth    = 16      // nested sections
	maxNodes    = 1 << 20 // values, sections and array items in one text
	maxArray    = 1 << 16 // items in one array
	maxStrLen   = 1 << 16 // bytes in one string
	maxNameLen  = 256     // bytes in a key or section name
	maxSections = 1 << 16 // entries in one section
)

// value is a node of LVM's config syntax: a section (Sec != nil), an array
// (Arr != nil, possibly empty), a string (IsStr) or an integer.
type value struct {
	Sec   *section
	Arr   []value
	IsArr bool
	Str   string
	IsStr bool
	Int   int64
	IsInt bool
}

// section keeps its entries in file order; keys may not repeat.
type section struct {
	Keys []string
	Vals map[string]*value
}

func (s *section) get(k string) *value {
	if s == nil {
		return nil
	}
	return s.Vals[k]
}

func (s *section) sub(k string) *section {
	if v := s.get(k); v != nil {
		return v.Sec
	}
	return nil
}

func (s *section) str(k string) (string, bool) {
	if v := s.get(k); v != nil && v.IsStr {
		return v.Str, true
	}
	return "", false
}

func (s *section) num(k string) (int64, bool) {
	if v := s.get(k); v != nil && v.IsInt {
		return v.Int, true
	}
	return 0, false
}

// strs returns an array of strings (false if k is missing or not one).
func (s *section) strs(k string) ([]string, bool) {
	v := s.get(k)
	if v == nil || !v.IsArr {
		return nil, false
	}
	out := make([]string, 0, len(v.Arr))
	for _, e := range v.Arr {
		if !e.IsStr {
			return nil, false
		}
		out = append(out, e.Str)
	}
	return out, true
}

// parser reads LVM's text metadata format (lvm2 lib/config, libdm
// dm-config): `name { ... }` sections, `key = value` with integers,
// floats, "strings" and [arrays], and # comments to the end of the line.
type parser struct {
	b     []byte
	pos   int
	nodes int
}

// parseConfig parses a whole metadata text into its top-level section.
func parseConfig(b []byte) (*section, error) {
	p := &parser{b: b}
	s, err := p.section(0, true)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (p *parser) errf(format string, args ...any) error {
	return freemap.Formatf(int64(p.pos), "lvm: metadata text: "+format, args...)
}

// skip skips white space and comments.
func (p *parser) skip() {
	for p.pos < len(p.b) {
		switch c := p.b[p.pos]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			p.pos++
		case c == '#':
			for p.pos < len(p.b) && p.b[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '+' || c == '.' || c == '/' || c == '@' || c == ':'
}

// section parses entries until '}' (or the end of the text at top level).
func (p *parser) section(depth int, top bool) (*section, error) {
	if depth > maxDepth {
		return nil, p.errf("sections nested deeper than %d", maxDepth)
	}
	s := &section{Vals: map[string]*value{}}
	for {
		p.skip()
		if p.pos == len(p.b) {
			if top {
				return s, nil
			}
			return nil, p.errf("unexpected end of text in a section")
		}
		if p.b[p.pos] == '}' {
			if top {
				return nil, p.errf("unmatched '}'")
			}
			p.pos++
			return s, nil
		}
		name, err := p.name()
		if err != nil {
			return nil, err
		}
		if _, dup := s.Vals[name]; dup {
			return nil, p.errf("%q appears twice in one section", name)
		}
		if len(s.Keys) == maxSections {
			return nil, p.errf("more than %d entries in one section", maxSections)
		}
		if p.nodes++; p.nodes > maxNodes {
			return nil, p.errf("more than %d values", maxNodes)
		}
		p.skip()
		if p.pos == len(p.b) {
			return nil, p.errf("unexpected end of text after %q", name)
		}
		var v *value
		switch p.b[p.pos] {
		case '{':
			p.pos++
			sub, err := p.section(depth+1, false)
			if err != nil {
				return nil, err
			}
			v = &value{Sec: sub}
		case '=':
			p.pos++
			p.skip()
			val, err := p.value(true)
			if err != nil {
				return nil, err
			}
			v = &val
		default:
			return nil, p.errf("expected '{' or '=' after %q", name)
		}
		s.Keys = append(s.Keys, name)
		s.Vals[name] = v
	}
}

// name reads a key or section name.
func (p *parser) name() (string, error) {
	start := p.pos
	for p.pos < len(p.b) && isNameByte(p.b[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		return "", p.errf("unexpected %q", p.b[p.pos])
	}
	if p.pos-start > maxNameLen {
		return "", p.errf("name longer than %d bytes", maxNameLen)
	}
	return string(p.b[start:p.pos]), nil
}

// value reads a string, a number or (if arrays) an array of them.
func (p *parser) value(arrays bool) (value, error) {
	if p.pos == len(p.b) {
		return value{}, p.errf("missing value")
	}
	switch c := p.b[p.pos]; {
	case c == '[' && arrays:
		p.pos++
		v := value{IsArr: true, Arr: []value{}}
		for {
			p.skip()
			if p.pos < len(p.b) && p.b[p.pos] == ']' {
				p.pos++
				return v, nil
			}
			if len(v.Arr) > 0 {
				if p.pos == len(p.b) || p.b[p.pos] != ',' {
					return value{}, p.errf("expected ',' or ']' in an array")
				}
				p.pos++
				p.skip()
			}
			if len(v.Arr) == maxArray {
				return value{}, p.errf("array longer than %d items", maxArray)
			}
			if p.nodes++; p.nodes > maxNodes {
				return value{}, p.errf("more than %d values", maxNodes)
			}
			e, err := p.value(false)
			if err != nil {
				return value{}, err
			}
			v.Arr = append(v.Arr, e)
		}
	case c == '"':
		return p.str()
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return value{}, p.errf("unexpected %q at the start of a value", p.b[p.pos])
}

func (p *parser) str() (value, error) {
	p.pos++ // opening quote
	var out []byte
	for {
		if p.pos == len(p.b) {
			return value{}, p.errf("unterminated string")
		}
		c := p.b[p.pos]
		p.pos++
		switch c {
		case '"':
			return value{IsStr: true, Str: string(out)}, nil
		case '\\':
			if p.pos == len(p.b) {
				return value{}, p.errf("unterminated string")
			}
			c = p.b[p.pos]
			p.pos++
		}
		if len(out) == maxStrLen {
			return value{}, p.errf("string longer than %d bytes", maxStrLen)
		}
		out = append(out, c)
	}
}

// number reads an integer; a float (LVM writes none in VG metadata) is
// kept as a non-integer value.
func (p *parser) number() (value, error) {
	start := p.pos
	if p.b[p.pos] == '-' {
		p.pos++
	}
	float := false
	for p.pos < len(p.b) {
		c := p.b[p.pos]
		if c == '.' || c == 'e' || c == 'E' || c == '+' {
			float = true
		} else if !(c >= '0' && c <= '9' || c == '-' && float) {
			break
		}
		p.pos++
	}
	s := string(p.b[start:p.pos])
	if float {
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return value{}, p.errf("bad number %q", s)
		}
		return value{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return value{}, p.errf("bad integer %q", s)
	}
	return value{IsInt: true, Int: n}, nil
}

// String is for debugging.
func (v value) String() string {
	switch {
	case v.Sec != nil:
		return fmt.Sprintf("{%d entries}", len(v.Sec.Keys))
	case v.IsArr:
		return fmt.Sprint(v.Arr)
	case v.IsStr:
		return strconv.Quote(v.Str)
	}
	return strconv.FormatInt(v.Int, 10)
}
