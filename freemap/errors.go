package freemap

import (
	"errors"
	"fmt"
)

// The one error scheme of every <fs>map parser (extfsmap, ntfsmap, fatmap,
// xfsmap, lvm, swap ...). An error from a parser's Read always means the
// caller must pass the whole volume through; errors.Is tells why:
//
//   - ErrFormat: a structure is corrupt, truncated or not this filesystem
//     (a *FormatError, with the byte offset of the offending field);
//   - ErrUnsupported: valid, but uses something the parser does not know
//     (unknown feature bits, an external journal, a realtime section);
//   - ErrUnsafe: valid and understood, but its on-disk allocation state
//     cannot be trusted as it stands (dirty, needs journal recovery,
//     hibernated).
//
// Messages start with the filesystem's name ("ext: ...", "ntfs: ...") and
// never mention command-line flags: callers add their own advice.
var (
	ErrFormat      = errors.New("malformed on-disk structure")
	ErrUnsupported = errors.New("unsupported feature")
	ErrUnsafe      = errors.New("allocation state not safe to trust")
)

// FormatError reports a corrupt on-disk structure at byte Off of the volume.
// errors.Is(err, ErrFormat) is true for it.
type FormatError struct {
	Off int64  // byte offset of the offending field, relative to the volume
	Msg string // what is wrong, starting with the filesystem's name
}

func (e *FormatError) Error() string { return fmt.Sprintf("%s (at byte %d)", e.Msg, e.Off) }

// Is makes errors.Is(err, ErrFormat) true.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// Refusal reports a valid volume that must pass through, with the reason.
// Kind is ErrUnsupported or ErrUnsafe; errors.Is matches it.
type Refusal struct {
	Kind error  // ErrUnsupported or ErrUnsafe
	Msg  string // the reason, starting with the filesystem's name
}

func (e *Refusal) Error() string { return e.Msg }

// Is makes errors.Is(err, e.Kind) true.
func (e *Refusal) Is(target error) bool { return target == e.Kind }

// Unsupported returns a *Refusal of kind ErrUnsupported.
func Unsupported(format string, args ...any) error {
	return &Refusal{Kind: ErrUnsupported, Msg: fmt.Sprintf(format, args...)}
}

// Unsafe returns a *Refusal of kind ErrUnsafe.
func Unsafe(format string, args ...any) error {
	return &Refusal{Kind: ErrUnsafe, Msg: fmt.Sprintf(format, args...)}
}

// Formatf returns a *FormatError at byte off.
func Formatf(off int64, format string, args ...any) error {
	return &FormatError{Off: off, Msg: fmt.Sprintf(format, args...)}
}
