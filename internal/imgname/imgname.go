// Package imgname is the one place that names the image files prezero
// serves (mount, backup) and reads back (restore --from): disk.img,
// header.img and partN.img. The mount, the borg archive and restore's
// --disk plan all spell them through it, so a new kind of stream (a logical
// volume, say) is one more entry here.
package imgname

import (
	"strconv"
	"strings"
)

// The fixed names.
const (
	Disk   = "disk.img"   // the whole source, free blocks zeroed
	Header = "header.img" // the bytes before the first partition
)

// partPrefix and ext make partN.img.
const (
	partPrefix = "part"
	ext        = ".img"
	maxPart    = 9999 // more digits than any partition table numbers
)

// Part names partition n's file: part1.img, part5.img, ...
func Part(n int) string { return partPrefix + strconv.Itoa(n) + ext }

// Kind is what an image file holds.
type Kind int

// The kinds of image file.
const (
	Unknown Kind = iota
	DiskKind
	HeaderKind
	PartKind
)

// Name is a parsed image file name.
type Name struct {
	Kind Kind
	Part int // partition number, for PartKind
}

// Parse tells what the base name name stands for: disk.img, header.img, or
// partN.img with N from 1 to 9999 written without leading zeros. Any
// other name is Unknown.
func Parse(name string) Name {
	switch name {
	case Disk:
		return Name{Kind: DiskKind}
	case Header:
		return Name{Kind: HeaderKind}
	}
	num, ok := strings.CutPrefix(name, partPrefix)
	if !ok {
		return Name{}
	}
	num, ok = strings.CutSuffix(num, ext)
	if !ok || num == "" || num[0] == '0' || len(num) > len(strconv.Itoa(maxPart)) || strings.Trim(num, "0123456789") != "" {
		return Name{}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > maxPart {
		return Name{}
	}
	return Name{Kind: PartKind, Part: n}
}

// String is the file name back.
func (n Name) String() string {
	switch n.Kind {
	case DiskKind:
		return Disk
	case HeaderKind:
		return Header
	case PartKind:
		return Part(n.Part)
	}
	return ""
}
