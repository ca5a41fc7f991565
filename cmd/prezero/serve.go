package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/prezero/prezero/fusefs"
	"github.com/prezero/prezero/internal/inuse"
	"github.com/prezero/prezero/internal/source"
	"github.com/prezero/prezero/internal/srcwatch"
)

// serveOptions are the options of the commands that mount a SOURCE.
type serveOptions struct {
	sourceFlags
	force      bool
	holeAlign  byteSize
	allowOther bool
	debug      bool
}

func (o *serveOptions) AddFlags(f *pflag.FlagSet) {
	o.holeAlign = fusefs.DefaultHoleAlign
	f.Var(&o.holeAlign, "hole-align", "report holes (SEEK_HOLE) only for whole free windows of this size; match borg's chunk size")
	f.BoolVar(&o.force, "force", false, "read a block device even if it (or a partition or device on it) is mounted read-write")
	o.sourceFlags.AddFlags(f)
}

// served is a SOURCE mounted on a directory by this process.
type served struct {
	dir    string
	src    *source.Source
	watch  *srcwatch.Watch
	server *fuse.Server
	files  []fusefs.File
}

// serve checks, opens and maps path and mounts its streams on dir: disk.img,
// header.img and partN.img, numbered as 'prezero map' shows.
func serve(path, dir string, o serveOptions, logf func(string, ...any)) (*served, error) {
	if !o.force {
		if err := inuse.Check(path, inuse.Writable); err != nil {
			return nil, err
		}
	}
	// The watch is opened before the maps are read, so that a change while
	// they are read is caught too.
	w, err := srcwatch.Open(path)
	if err != nil {
		return nil, err
	}
	src, err := source.Open(path, o.options())
	if err != nil {
		w.Close()
		return nil, err
	}
	s := &served{dir: dir, src: src, watch: w}
	if err := w.Same(src.File()); err != nil {
		s.close()
		return nil, err
	}
	if err := w.Check(); err != nil {
		s.close()
		return nil, fmt.Errorf("%w while its maps were read; try again on a quiet source or a snapshot", err)
	}
	for _, p := range append(src.Parts, src.LVs...) {
		for _, n := range p.Notes {
			logf("part%s: %s", p.Label(), n)
		}
	}
	s.files = []fusefs.File{{Name: "disk.img", Stream: src.Disk()}, {Name: "header.img", Stream: src.Header()}}
	for _, p := range src.Files() {
		s.files = append(s.files, fusefs.File{Name: "part" + strconv.Itoa(p.Number) + ".img", Stream: p.Stream})
	}
	for _, lv := range src.LVs {
		if lv.Stream != nil {
			s.files = append(s.files, fusefs.File{Name: source.LVFileName(lv), Stream: lv.Stream})
		}
	}
	abs, _ := filepath.Abs(path)
	s.server, err = fusefs.Mount(dir, s.files, fusefs.Options{
		HoleAlign:  int64(o.holeAlign),
		Time:       time.Now(),
		Check:      w.Check,
		Logf:       logf,
		FsName:     abs,
		AllowOther: o.allowOther,
		Debug:      o.debug,
	})
	if err != nil {
		s.close()
		switch {
		case isRoot():
		case unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) != nil:
			err = fmt.Errorf("%w (you cannot open /dev/fuse: it should be mode 0666, as udev makes it)", err)
		case o.allowOther:
			err = fmt.Errorf("%w (--allow-other needs user_allow_other in /etc/fuse.conf)", err)
		}
		return nil, err
	}
	return s, nil
}

// partFiles returns the names borg stores with --partitions: header.img
// and partN.img (LVs are inside their partitions).
func (s *served) partFiles() []string {
	var names []string
	for _, f := range s.files[1:] {
		if !strings.HasPrefix(f.Name, "lv/") {
			names = append(names, f.Name)
		}
	}
	return names
}

// wait returns when the mount is gone, whoever unmounted it.
func (s *served) wait() { s.server.Wait() }

// unmount unmounts; if files are still open it detaches lazily, so the
// mount disappears now and the server ends when the last file is closed.
func (s *served) unmount() error {
	err := s.server.Unmount()
	if err != nil {
		if lerr := unmountDir(s.dir, true); lerr != nil {
			return fmt.Errorf("unmounting %s: %w; lazy unmount: %w", s.dir, err, lerr)
		}
	}
	return nil
}

// close releases the source; the mount must be gone.
func (s *served) close() {
	s.src.Close()
	s.watch.Close()
}

// unmountDir unmounts a FUSE mount as root with umount2(2), otherwise with
// fusermount3 (or fusermount). lazy detaches a busy mount.
func unmountDir(dir string, lazy bool) error {
	if isRoot() {
		flags := 0
		if lazy {
			flags = syscall.MNT_DETACH
		}
		err := syscall.Unmount(dir, flags)
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("%s is busy: close the files open on it (fuser -vm %s) or use --lazy", dir, dir)
		}
		if err != nil {
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
		return nil
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	return runFusermount(append(args, dir))
}

func isRoot() bool { return syscall.Geteuid() == 0 }

// byteSize is a flag holding a byte count written as 4194304, 4M, 4MiB...
type byteSize int64

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		s string
		n int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.n && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	num := strings.TrimRight(s, "KMGTBkmgtib")
	unit := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(s[len(num):], "B"), "i"))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a size (write 4194304, 4M or 4MiB)", s)
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
	sh, ok := shift[unit]
	if !ok || n > (1<<62)>>sh {
		return fmt.Errorf("%q is not a size (write 4194304, 4M or 4MiB)", s)
	}
	*b = byteSize(n << sh)
	return nil
}

func (b *byteSize) Type() string { return "SIZE" }
