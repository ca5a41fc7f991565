package main

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/prezero/prezero/fusefs"
	"github.com/prezero/prezero/internal/bytesize"
	"github.com/prezero/prezero/internal/imgname"
	"github.com/prezero/prezero/internal/source"
	"github.com/prezero/prezero/internal/srcwatch"
)

// serveOptions are the options of the commands that mount a SOURCE.
type serveOptions struct {
	sourceFlags
	force      bool
	forceShare bool
	holeAlign  bytesize.Value
	allowOther bool
	debug      bool
	tempDir    bool // the mount point is a temporary directory (backup)
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
	server *fusefs.Server
	files  []fusefs.File
}

// serve checks, opens and maps path and mounts its streams on dir: disk.img,
// header.img and partN.img, numbered as 'prezero map' shows.
func serve(path, dir string, o serveOptions, logf func(string, ...any)) (*served, error) {
	if o.holeAlign <= 0 {
		return nil, fmt.Errorf("--hole-align must be a positive multiple of 512 bytes, such as 4MiB")
	}
	if err := checkSource(path); err != nil {
		return nil, err
	}
	if err := checkShare(o.forceShare, o.force); err != nil {
		return nil, err
	}
	if !o.force {
		if err := checkInUse(path); err != nil {
			return nil, err
		}
	}
	// The watch is opened before the maps are read, so that a change while
	// they are read is caught too. An NBD export has no file to watch:
	// its server must export a stable view (a snapshot, a libvirt backup).
	var w *srcwatch.Watch
	if !source.IsURI(path) {
		var err error
		if w, err = srcwatch.Open(path); err != nil {
			return nil, err
		}
	}
	src, err := source.Open(path, o.options())
	if err != nil {
		if w != nil {
			w.Close()
		}
		return nil, err
	}
	s := &served{dir: dir, src: src, watch: w}
	if w != nil {
		if err := w.Same(src.File()); err != nil {
			s.close()
			return nil, err
		}
		if err := w.Check(); err != nil {
			s.close()
			return nil, fmt.Errorf("%w while its maps were read; try again on a quiet source or a snapshot", err)
		}
	}
	for _, p := range append(src.Parts, src.LVs...) {
		for _, n := range p.Notes {
			logf("part%s: %s", p.Label(), n)
		}
	}
	s.files = []fusefs.File{{Name: imgname.Disk, Stream: src.Disk()}, {Name: imgname.Header, Stream: src.Header()}}
	for _, p := range src.Files() {
		s.files = append(s.files, fusefs.File{Name: imgname.Part(p.Number), Stream: p.Stream})
	}
	abs := absPath(path)
	var check func() error
	if w != nil {
		check = w.Check
	}
	for _, lv := range src.LVs {
		if lv.Stream != nil {
			s.files = append(s.files, fusefs.File{Name: source.LVFileName(lv), Stream: lv.Stream})
		}
	}
	s.server, err = fusefs.Mount(dir, s.files, fusefs.Options{
		HoleAlign:  int64(o.holeAlign),
		Time:       time.Now(),
		Check:      check,
		Logf:       logf,
		FsName:     abs,
		AllowOther: o.allowOther,
		Debug:      o.debug,
		RemoveDir:  o.tempDir,
	})
	if err != nil {
		s.close()
		return nil, mountAdvice(err, o.allowOther)
	}
	return s, nil
}

// mountAdvice adds to a failed mount what to do about it.
func mountAdvice(err error, allowOther bool) error {
	var fe *fusefs.FusermountError
	switch {
	case syscall.Geteuid() == 0:
	case unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) != nil:
		return fmt.Errorf("%w: you cannot open /dev/fuse; make it usable by every user as udev does "+
			"(chmod 0666 /dev/fuse, or a udev rule: KERNEL==\"fuse\", MODE=\"0666\"), or run prezero as root", err)
	case allowOther && errors.As(err, &fe):
		return fmt.Errorf("%w: --allow-other needs user_allow_other in /etc/fuse.conf", err)
	}
	return err
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
func (s *served) unmount() error { return s.server.Unmount() }

// close releases the source; the mount must be gone.
func (s *served) close() {
	s.src.Close()
	if s.watch != nil {
		s.watch.Close()
	}
}
