// Package borg runs BorgBackup for prezero: it finds the borg binary, tells
// borg 1.x (REPO::ARCHIVE) from borg 2 (-r REPO ... ARCHIVE), and builds the
// command lines for create and extract. It is the last step of the backup
// pipeline and the first of the restore one; it never parses a repository.
//
// prezero's own syntax is REPO::ARCHIVE for every borg version; an empty
// REPO (::ARCHIVE) leaves the repository to BORG_REPO, as borg does. BORG_*
// environment variables are passed through untouched.
package borg

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Borg is one borg executable and its version.
type Borg struct {
	Path    string // as found on PATH, or as given to Find
	Version string // e.g. "1.2.4", "2.0.0b5"
	Major   int    // 1 or 2
}

var versionRE = regexp.MustCompile(`(?m)^borg2?\s+(\d+)\.(\d+)\S*`)

// Find locates the borg binary: path if given, else "borg", else "borg2".
// It runs "borg --version" to learn the syntax to speak.
func Find(ctx context.Context, path string) (*Borg, error) {
	candidates := []string{"borg", "borg2"}
	if path != "" {
		candidates = []string{path}
	}
	var errs []string
	for _, c := range candidates {
		p, err := exec.LookPath(c)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out, err := exec.CommandContext(ctx, p, "--version").Output()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s --version: %v", p, err))
			continue
		}
		return parseVersion(p, string(out))
	}
	return nil, fmt.Errorf("%w (%s); install BorgBackup (Debian: apt install borgbackup)", ErrNotFound, strings.Join(errs, "; "))
}

func parseVersion(path, out string) (*Borg, error) {
	m := versionRE.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		return nil, fmt.Errorf("%s --version printed %q, which is not a borg version", path, strings.TrimSpace(out))
	}
	major, _ := strconv.Atoi(m[1])
	if major != 1 && major != 2 {
		return nil, fmt.Errorf("%s is borg %s; prezero supports borg 1.2, 1.4 and 2", path, m[0])
	}
	v := strings.Fields(m[0])[1]
	return &Borg{Path: path, Version: v, Major: major}, nil
}

// ErrNotFound is returned by Find when no borg binary runs.
var ErrNotFound = errors.New("borg not found")

// Ref is a parsed REPO::ARCHIVE.
type Ref struct {
	Repo    string // empty: taken from BORG_REPO by borg itself
	Archive string
}

// ErrRef reports a malformed REPO::ARCHIVE.
var ErrRef = errors.New("expected REPO::ARCHIVE")

// ParseRef splits REPO::ARCHIVE at its last "::".
func ParseRef(s string) (Ref, error) {
	i := strings.LastIndex(s, "::")
	if i < 0 || i+2 == len(s) {
		return Ref{}, fmt.Errorf("%w, got %q (the archive name is missing)", ErrRef, s)
	}
	return Ref{Repo: s[:i], Archive: s[i+2:]}, nil
}

func (r Ref) String() string { return r.Repo + "::" + r.Archive }

// repoArgs returns the global options that select the repository (borg 2),
// and the positional archive argument.
func (b *Borg) refArgs(r Ref) (global []string, archive string) {
	if b.Major >= 2 {
		if r.Repo != "" {
			global = []string{"-r", r.Repo}
		}
		return global, r.Archive
	}
	return nil, r.String()
}

// CreateArgs returns the arguments of "borg create" storing paths into r,
// with prezero's flags first and the user's extra flags after them.
func (b *Borg) CreateArgs(r Ref, flags, extra, paths []string) []string {
	global, archive := b.refArgs(r)
	args := append(global, "create")
	args = append(args, flags...)
	args = append(args, extra...)
	args = append(args, archive)
	return append(args, paths...)
}

// ExtractStdoutArgs returns the arguments of "borg extract --stdout" for one
// path of the archive r.
func (b *Borg) ExtractStdoutArgs(r Ref, path string) []string {
	global, archive := b.refArgs(r)
	return append(global, "extract", "--stdout", archive, path)
}

// ListArgs returns the arguments of "borg list" printing each item's path
// and size, one per line as "SIZE PATH", for the archive r.
func (b *Borg) ListArgs(r Ref) []string {
	global, archive := b.refArgs(r)
	return append(global, "list", "--format", "{size} {path}{NL}", archive)
}

// ExitError describes a borg run that failed, keeping borg's exit code:
// 1 is a warning, 2 an error, 128+N a signal.
type ExitError struct {
	Args   []string
	Code   int
	Stderr string // the last lines borg wrote to stderr, if captured
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("borg %s exited with code %d", strings.Join(e.Args, " "), e.Code)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// Warning reports whether borg finished with warnings only (exit code 1).
func (e *ExitError) Warning() bool { return e.Code == 1 }
