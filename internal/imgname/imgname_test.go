package imgname

import "testing"

func TestParseRoundTrips(t *testing.T) {
	for _, c := range []struct {
		name string
		want Name
	}{
		{"disk.img", Name{Kind: DiskKind}},
		{"header.img", Name{Kind: HeaderKind}},
		{"part1.img", Name{Kind: PartKind, Part: 1}},
		{"part5.img", Name{Kind: PartKind, Part: 5}},
		{"part128.img", Name{Kind: PartKind, Part: 128}},
		{"part9999.img", Name{Kind: PartKind, Part: 9999}},
		{"part10000.img", Name{}},
		{"part0.img", Name{}},
		{"part01.img", Name{}},
		{"part.img", Name{}},
		{"part-1.img", Name{}},
		{"part1.img.bak", Name{}},
		{"part1", Name{}},
		{"Part1.img", Name{}},
		{"x/disk.img", Name{}},
		{"", Name{}},
	} {
		got := Parse(c.name)
		if got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.name, got, c.want)
		}
		if got.Kind != Unknown && got.String() != c.name {
			t.Errorf("Parse(%q).String() = %q", c.name, got.String())
		}
	}
	if Part(3) != "part3.img" {
		t.Errorf("Part(3) = %q", Part(3))
	}
}
