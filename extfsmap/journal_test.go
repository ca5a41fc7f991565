package extfsmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/prezero/prezero/extfsmap/internal/jbd2"
	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
	"golang.org/x/sys/unix"
)

// Crash-consistent copies, made the way they happen: a random-filled ext
// image is loop-mounted with a long commit interval, a workload writes and
// fsyncs files, deletes, truncates, fallocates and renames, and the image
// file is copied while still mounted. The copy has needs_recovery set, and
// its on-disk bitmaps miss what only the journal records.

type crashVariant struct {
	name  string
	size  int64
	mkfs  []string
	mount string // extra mount options
	seed  uint64
	small int  // extra small fsync'd files (many transactions)
	wrap  bool // the log must have wrapped
	// fastCommit: the copy's fast-commit area holds commits.
	fastCommit bool
	// lossy: zerofree on this copy must lose data (the proof that these
	// tests can fail).
	lossy bool
	// the journal features the copy must show
	jCompat, jIncompat uint32
	// uninitLogged: some group is BLOCK_UNINIT on disk but initialised
	// by a logged descriptor (its on-disk bitmap block is random bytes).
	uninitLogged bool
}

var crashVariants = []crashVariant{
	{name: "ext4", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096"}, seed: 1, lossy: true, jIncompat: jbd2.IncompatCsumV3 | jbd2.Incompat64Bit},
	{name: "ext4-seed2", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096"}, seed: 2, lossy: true},
	{name: "ext4-seed3", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-g", "4096"}, seed: 3},
	{name: "ext4-1k", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "1024"}, seed: 4},
	{name: "ext4-32bit-nocsum", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "^64bit,^metadata_csum"}, seed: 5},
	{name: "ext4-fast_commit", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "fast_commit"}, seed: 6, fastCommit: true, lossy: true},
	{name: "ext3", size: 32 << 20, mkfs: []string{"-t", "ext3", "-b", "4096"}, seed: 7},
	{name: "ext4-data_journal", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096"}, mount: "data=journal", seed: 8},
	// Journal formats only mount options make: the legacy commit checksum
	// (journal_checksum without metadata_csum) and async_commit.
	{name: "ext4-journal_checksum-v1", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "^metadata_csum"}, mount: "journal_checksum", seed: 11, jCompat: jbd2.CompatChecksum},
	{name: "ext4-async_commit", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096"}, mount: "journal_async_commit,data=writeback", seed: 12, jIncompat: jbd2.IncompatAsyncCommit | jbd2.IncompatCsumV3},
	// Layouts: descriptors spread by meta_bg; bitmaps of clusters.
	{name: "ext4-meta_bg", size: 48 << 20, mkfs: []string{"-t", "ext4", "-b", "1024", "-g", "1024", "-O", "meta_bg,^resize_inode"}, seed: 13, uninitLogged: true},
	{name: "ext4-bigalloc", size: 48 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "16384"}, seed: 14},
	{name: "ext4-orphan_file", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "orphan_file"}, seed: 10},
	{name: "ext4-wrapped", size: 32 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-J", "size=4"}, seed: 9, small: 400, wrap: true},
}

// crashCopy is a built crash copy.
type crashCopy struct {
	img    string            // the copy, taken while mounted
	synced map[string]string // sha256 of every fsync'd file, read in the mounted source
}

var crashBuilds = imgtest.Builds[*crashCopy]{Prefix: "crash-"}

// losetup attaches img to a free loop device and returns it, with a
// function that detaches it once (also run at cleanup): a device number
// freed is soon another's, and must not be detached twice.
func losetup(t testing.TB, img string) (string, func()) {
	t.Helper()
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", img))
	detach := func() { imgtest.Detach(t, dev, img) }
	t.Cleanup(detach)
	return dev, detach
}

// mountHash mounts the clean ext image img read-only and hashes its files.
func mountHash(t testing.TB, img string) map[string]string {
	t.Helper()
	files, err := tryMountHash(t, img, "ro,noload")
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// tryMountHash mounts img with opts and hashes its files, or says why it
// cannot mount.
func tryMountHash(t testing.TB, img, opts string) (map[string]string, error) {
	t.Helper()
	dev, detach := losetup(t, img)
	defer detach()
	dir := t.TempDir()
	if out, err := imgtest.Output("mount", "-o", opts, dev, dir); err != nil {
		return nil, fmt.Errorf("mount %s: %v: %s", img, err, out)
	}
	defer imgtest.Umount(t, dir)
	return imgtest.HashTree(t, dir), nil
}

// buildCrash makes (once) the crash copy of v. Builds of different
// variants may run at once.
func buildCrash(t *testing.T, v crashVariant) *crashCopy {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "mkfs.ext4", "losetup", "mount", "e2fsck", "zerofree", "dumpe2fs")
	return crashBuilds.Get(t, v.name, func(t *testing.T, path string) *crashCopy {
		c := &crashCopy{img: path + ".crash"}
		c.build(t, v, path+".src")
		return c
	})
}

// build makes the crash copy of v, mounting the source image src.
func (c *crashCopy) build(t *testing.T, v crashVariant, src string) {
	t.Helper()
	imgtest.RandomFile(t, src, v.size)
	args := append([]string{"-F", "-q", "-E", "nodiscard"}, v.mkfs...)
	imgtest.Run(t, "mkfs.ext4", append(args, src)...)
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", src))
	defer imgtest.Detach(t, dev, src)
	mnt := t.TempDir()
	opts := "commit=600"
	if v.mount != "" {
		opts += "," + v.mount
	}
	imgtest.Run(t, "mount", "-o", opts, dev, mnt)
	mounted := true
	defer func() {
		if mounted {
			imgtest.Umount(t, mnt)
		}
	}()
	synced, orphan, err := workload(mnt, v)
	if err != nil {
		t.Fatal(err)
	}
	defer orphan.Close() // before the unmount: an open file keeps it busy
	c.synced = synced
	imgtest.CopyFile(t, c.img, src) // while mounted: a crash-consistent copy
	// Whether the log has wrapped past the journal's end, or the fast-commit
	// area holds commits, when the copy is taken depends on when the kernel
	// last checkpointed or committed in full: add fsync'd transactions,
	// each followed by a new copy, until the copy shows what v must test.
	// A group initialised in the log stays BLOCK_UNINIT on disk only until
	// writeback writes its descriptor home (30 s after the commit, or at
	// a sync, so a slow build loses it): for that case each transaction
	// writes a file larger than a group, which spills into a group not used
	// yet.
	more := 0
	for ; !c.shows(t, v); more++ {
		if more == 1000 {
			t.Fatalf("the copy of %s does not show its case (wrap %v, fast commits %v, uninit group logged %v) after %d more transactions", v.name, v.wrap, v.fastCommit, v.uninitLogged, more)
		}
		n := 3000
		if v.uninitLogged {
			n = 1536 << 10
		}
		os.Mkdir(filepath.Join(mnt, "more"), 0o755)
		if err := writeData(filepath.Join(mnt, fmt.Sprintf("more/m%03d", more)), bytes.Repeat([]byte{byte(more)}, n)); err != nil {
			t.Fatal(err)
		}
		imgtest.CopyFile(t, c.img, src)
	}
	if more > 0 {
		t.Logf("%s: the copy shows its case after %d more transactions", v.name, more)
	}
	orphan.Close()
	imgtest.Umount(t, mnt)
	mounted = false
	os.Remove(src)
}

// shows reports whether the copy's log wraps around the journal's end if
// v.wrap, holds fast commits if v.fastCommit, and initialises a group that
// is BLOCK_UNINIT on disk if v.uninitLogged.
func (c *crashCopy) shows(t *testing.T, v crashVariant) bool {
	if v.uninitLogged && uninitLogged(t, c.img) == 0 {
		return false
	}
	if !v.wrap && !v.fastCommit {
		return true
	}
	b, err := os.ReadFile(c.img)
	if err != nil {
		t.Fatal(err)
	}
	l := recoverJournal(t, b).log
	return (!v.wrap || l.Wrapped) && (!v.fastCommit || l.FastCommit)
}

// workload runs on the mounted filesystem and returns the sha256 of every
// file it fsync'd (and did not touch afterwards), and a file it unlinked
// but keeps open (an orphan), to be closed after the copy.
func workload(dir string, v crashVariant) (map[string]string, *os.File, error) {
	rng := rand.New(rand.NewPCG(v.seed, 42))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := 0; i < n; i += 8 {
			x := rng.Uint64()
			for k := 0; k < 8 && i+k < n; k++ {
				b[i+k] = byte(x >> (8 * k))
			}
		}
		return b
	}
	write := func(name string, n int, sync bool) error {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write(data(n)); err != nil {
			return err
		}
		if sync {
			return f.Sync()
		}
		return nil
	}
	syncDir := func(name string) error {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	}
	// A base, written back with syncfs: its bitmaps are on disk. (Not
	// sync(2): that would also write back the other variants building at
	// the same time, whose copies must catch their bitmaps unwritten.)
	for i := range 8 {
		if err := write(fmt.Sprintf("base/b%d", i), 64<<10+rng.IntN(1<<20), false); err != nil {
			return nil, nil, err
		}
	}
	if err := syncfs(dir); err != nil {
		return nil, nil, err
	}
	// Then fsync'd changes only: committed to the journal, their bitmaps
	// not written back.
	synced := []string{}
	for i := range 14 {
		name := fmt.Sprintf("new/f%02d", i)
		if i%3 == 0 {
			name = fmt.Sprintf("new/d%d/sub/f%02d", i%2, i)
		}
		if err := write(name, 4<<10+rng.IntN(1536<<10), true); err != nil {
			return nil, nil, err
		}
		synced = append(synced, name)
	}
	for i := range v.small {
		name := fmt.Sprintf("small/s%03d", i)
		if err := write(name, 1+rng.IntN(6000), true); err != nil {
			return nil, nil, err
		}
		synced = append(synced, name)
		if i%50 == 49 {
			for k := i - 49; k < i-25; k++ {
				os.Remove(filepath.Join(dir, fmt.Sprintf("small/s%03d", k)))
			}
			syncDir("small")
		}
	}
	for _, i := range []int{1, 3, 6} {
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("base/b%d", i))); err != nil {
			return nil, nil, err
		}
	}
	if err := syncDir("base"); err != nil {
		return nil, nil, err
	}
	// truncate
	if err := os.Truncate(filepath.Join(dir, "base/b0"), 5000); err != nil {
		return nil, nil, err
	}
	if f, err := os.OpenFile(filepath.Join(dir, "base/b0"), os.O_RDWR, 0); err == nil {
		f.Sync()
		f.Close()
	}
	// fallocate, partly written
	f, err := os.Create(filepath.Join(dir, "new/falloc"))
	if err != nil {
		return nil, nil, err
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, 3<<20); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		f.Close()
		return nil, nil, err // ext3 has no fallocate; the write below still counts
	}
	f.WriteAt(data(200<<10), 1<<20)
	f.Sync()
	f.Close()
	synced = append(synced, "new/falloc")
	// rename over an existing file
	if err := write("new/tmp", 700<<10, true); err != nil {
		return nil, nil, err
	}
	if err := os.Rename(filepath.Join(dir, "new/tmp"), filepath.Join(dir, "base/b2")); err != nil {
		return nil, nil, err
	}
	if err := syncDir("base"); err != nil {
		return nil, nil, err
	}
	synced = append(synced, "base/b2")
	// and some writes nobody waits for
	for i := range 3 {
		write(fmt.Sprintf("unsynced/u%d", i), 300<<10, false)
	}
	// an orphan: written, fsync'd, unlinked while open
	orphan, err := os.Create(filepath.Join(dir, "orphan"))
	if err != nil {
		return nil, nil, err
	}
	orphan.Write(data(400 << 10))
	orphan.Sync()
	os.Remove(filepath.Join(dir, "orphan"))
	syncDir(".")
	// With data=journal, file data goes through the log: blocks that begin
	// with the jbd2 magic are logged escaped (JBD2_FLAG_ESCAPE).
	if strings.Contains(v.mount, "data=journal") {
		b := make([]byte, 64<<10)
		for off := 0; off < len(b); off += 1024 {
			copy(b[off:], []byte{0xC0, 0x3B, 0x39, 0x98})
			b[off+4] = byte(off >> 10)
		}
		if err := writeData(filepath.Join(dir, "new/magic"), b); err != nil {
			return nil, nil, err
		}
		synced = append(synced, "new/magic")
	}
	// Last, fsync'd writes after every full commit: with fast_commit these
	// are in the fast-commit area only (no logged bitmap shows them).
	for i := range 4 {
		name := fmt.Sprintf("last/l%d", i)
		if i == 0 {
			os.Mkdir(filepath.Join(dir, "last"), 0o755)
			syncDir(".")
		}
		if err := write(name, 200<<10+rng.IntN(800<<10), true); err != nil {
			return nil, nil, err
		}
		synced = append(synced, name)
	}
	hashes := imgtestHashFiles(dir, synced)
	return hashes, orphan, nil
}

// writeData writes b to a new file at p and fsyncs it.
func writeData(p string, b []byte) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return err
	}
	return f.Sync()
}

// imgtestHashFiles hashes the named files under dir ("" for a missing one).
func imgtestHashFiles(dir string, names []string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		out[n] = fmt.Sprintf("%x", sha256.Sum256(b))
	}
	return out
}

// fsck runs e2fsck -fy on img and returns its report with img's name taken
// out, one line each.
func fsck(t testing.TB, img string) []string {
	t.Helper()
	out, err := imgtest.Output("e2fsck", "-fy", img)
	var ee interface{ ExitCode() int }
	if err != nil && (!errors.As(err, &ee) || ee.ExitCode() >= 4) {
		t.Fatalf("e2fsck -fy %s: %v\n%s", img, err, out)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(strings.ReplaceAll(l, img, "IMG"))
		if l != "" && !strings.HasPrefix(l, "e2fsck 1.") {
			lines = append(lines, l)
		}
	}
	return lines
}

// nonzeroBlocks counts the bs-byte blocks of img holding a nonzero byte.
func nonzeroBlocks(t testing.TB, img string, bs int) int {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 0; off+bs <= len(b); off += bs {
		for _, x := range b[off : off+bs] {
			if x != 0 {
				n++
				break
			}
		}
	}
	return n
}

// journalOf runs jbd2 over the internal journal of the ext image img.
func journalOf(t testing.TB, img string) *jbd2.Log {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return recoverJournal(t, b).log
}

// internalJournal is the internal journal of an ext image in memory: the
// image's superblock, the journal inode's block map, and jbd2's recovery.
type internalJournal struct {
	s   *superblock
	fm  *fileMap
	log *jbd2.Log
}

// recoverJournal runs jbd2 over the internal journal of the ext image img.
func recoverJournal(t testing.TB, img []byte) internalJournal {
	t.Helper()
	s, err := parseSuperblock(img[sbOffset:sbOffset+sbSize], int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	fm, err := s.readInodeMap(bytes.NewReader(img), 8, 1<<32)
	if err != nil {
		t.Fatal(err)
	}
	jr := &fileReader{r: bytes.NewReader(img), bs: s.blockSize, fm: fm, size: int64(fm.size)}
	l, err := jbd2.Recover(jr, int64(fm.size), int(s.blockSize))
	if err != nil {
		t.Fatal(err)
	}
	return internalJournal{s, fm, l}
}

// offset returns the image offset of journal block lblk.
func (j internalJournal) offset(t testing.TB, lblk uint32) int64 {
	t.Helper()
	for _, e := range j.fm.extents {
		if uint64(lblk) >= e.logical && uint64(lblk) < e.logical+e.count {
			return int64(e.physical+uint64(lblk)-e.logical) * j.s.blockSize
		}
	}
	t.Fatalf("journal block %d unmapped", lblk)
	return 0
}

// walked returns the journal blocks of the walked log, in log order.
func (j internalJournal) walked() []uint32 {
	var pos []uint32
	for i := range uint32(j.log.Walked) {
		p := j.log.Start + i
		if p >= j.log.Last {
			p -= j.log.Last - j.log.First
		}
		pos = append(pos, p)
	}
	return pos
}

// checkEscaped: the log of img holds escaped copies (data blocks that
// begin with the jbd2 magic), and each reads back with its magic.
func checkEscaped(t *testing.T, img string) {
	t.Helper()
	log := journalOf(t, img)
	buf := make([]byte, log.BlockSize)
	n := 0
	for _, c := range log.Copies {
		if !c.Escaped {
			continue
		}
		n++
		if err := log.ReadCopy(c, buf); err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint32(buf) != 0xC03B3998 {
			t.Errorf("escaped copy of block %d reads back as %x, not the jbd2 magic", c.Home, buf[:4])
		}
	}
	if n == 0 {
		t.Error("no escaped copy in the log: the variant no longer tests JBD2_FLAG_ESCAPE")
	}
	t.Logf("%d escaped copies in the log", n)
}

// uninitLogged counts the groups of the ext image img that are
// BLOCK_UNINIT in the on-disk descriptors but not in some logged copy of
// their descriptor block.
func uninitLogged(t testing.TB, img string) int {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseSuperblock(b[sbOffset:sbOffset+sbSize], int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if !s.gdtCsum {
		return 0
	}
	log := journalOf(t, img)
	d := newDescReader(bytes.NewReader(b), s)
	buf := make([]byte, s.blockSize)
	n := 0
	for g := range s.groups {
		gd, err := d.desc(g)
		if err != nil {
			t.Fatal(err)
		}
		if gd.flags&bgBlockUninit == 0 {
			continue
		}
		loc := s.descBlockLoc(g / s.descPerBlock)
		o := int64(g%s.descPerBlock) * s.descSize
		for _, c := range log.Copies {
			if c.Home != loc {
				continue
			}
			if err := log.ReadCopy(c, buf); err != nil {
				t.Fatal(err)
			}
			if lg := parseDesc(s, g, buf[o:o+s.descSize]); lg.csumOK && lg.flags&bgBlockUninit == 0 {
				n++
				break
			}
		}
	}
	return n
}

// replay replays img's journal, by e2fsck -fy, or by a kernel mount
// (then e2fsck -fy), and returns e2fsck's report and the files' hashes.
func replay(t testing.TB, img string, kernel bool) ([]string, map[string]string) {
	t.Helper()
	if !kernel {
		report := fsck(t, img)
		return report, mountHash(t, img)
	}
	files, err := tryMountHash(t, img, "rw") // the kernel replays
	if err != nil {
		t.Fatal(err)
	}
	return fsck(t, img), files
}

// TestCrashCopies is the end-to-end proof: prezero's stream of each crash
// copy, replayed and checked by e2fsck -fy, holds exactly the files the
// copy itself holds after e2fsck -fy, while zerofree on the copy loses some.
//
// Whether zerofree loses files on one copy depends on how far the kernel had
// checkpointed when the copy was taken, which varies from machine to machine.
// So each lossy variant logs its loss, and the test fails if none of them
// shows one: then it could not tell a lossy map from a right one.
func TestCrashCopies(t *testing.T) {
	var lossyRuns, losses atomic.Int32
	t.Cleanup(func() {
		if lossyRuns.Load() > 0 && losses.Load() == 0 {
			t.Errorf("zerofree lost nothing on any of the %d lossy copies: the test cannot tell a lossy map from a right one", lossyRuns.Load())
		}
	})
	for _, v := range crashVariants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel() // most of the time goes waiting on mounts and fsyncs
			c := buildCrash(t, v)
			f, err := os.Open(c.img)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := f.Stat()
			size := fi.Size()
			vol, err := Read(f, size)
			f.Close()
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			checkInvariants(t, vol, size)
			j := vol.Journal
			if j == nil || j.Transactions == 0 || j.Blocks == 0 {
				t.Fatalf("no journal replay reported: %+v (notes %q)", j, vol.Notes)
			}
			if jl := journalOf(t, c.img); jl.Compat&v.jCompat != v.jCompat || jl.Incompat&v.jIncompat != v.jIncompat {
				t.Errorf("journal features compat %#x incompat %#x, want %#x %#x", jl.Compat, jl.Incompat, v.jCompat, v.jIncompat)
			}
			if v.fastCommit && !j.FastCommit {
				t.Errorf("the fast-commit area holds no commits: the variant does not test them")
			}
			if v.wrap && !j.Wrapped {
				t.Errorf("the log did not wrap: %+v", j)
			}
			if strings.Contains(v.mount, "data=journal") {
				checkEscaped(t, c.img)
			}
			if n := uninitLogged(t, c.img); v.uninitLogged && n == 0 {
				t.Errorf("no group is BLOCK_UNINIT on disk and initialised in the log: the variant does not test it")
			} else if n > 0 {
				t.Logf("%d groups BLOCK_UNINIT on disk, initialised by a logged descriptor", n)
			}
			t.Logf("%s; kept %d bytes by the union; notes %q", j, j.KeptBytes, vol.Notes)

			// The truth: the copy replayed and repaired by e2fsck -fy.
			// (With fast commits, the kernel replays: e2fsck 1.47.0 drops
			// the fsync'd files a fast commit holds.)
			truth := filepath.Join(t.TempDir(), "truth.img")
			imgtest.CopyFile(t, truth, c.img)
			truthFsck, truthFiles := replay(t, truth, v.fastCommit)
			for name, sum := range c.synced {
				if got := truthFiles[name]; got != sum {
					t.Errorf("fsync'd file %s: %q after replay of the copy, %q in the mounted source", name, got, sum)
				}
			}

			// prezero's stream, replayed and repaired the same way.
			zimg := imgtest.WriteStream(t, c.img, vol.Free)
			nzStream := nonzeroBlocks(t, zimg, vol.BlockSize)
			zFsck, zFiles := replay(t, zimg, v.fastCommit)
			have := map[string]bool{}
			for _, l := range truthFsck {
				have[l] = true
			}
			for _, l := range zFsck {
				if !have[l] {
					t.Errorf("e2fsck on the stream reports %q, which it does not on the copy\nstream:\n%s\ncopy:\n%s", l, strings.Join(zFsck, "\n"), strings.Join(truthFsck, "\n"))
					break
				}
			}
			if diff := diffTrees(truthFiles, zFiles); diff != "" {
				t.Errorf("the stream's files differ from the copy's: %s", diff)
			}

			// Savings: against the source copy and the ideal (e2fsck -fy,
			// then zerofree).
			nzSource := nonzeroBlocks(t, c.img, vol.BlockSize)
			imgtest.Run(t, "zerofree", truth)
			nzIdeal := nonzeroBlocks(t, truth, vol.BlockSize)
			if nzStream >= nzSource {
				t.Errorf("the stream has %d nonzero blocks, the copy %d", nzStream, nzSource)
			}
			t.Logf("nonzero %d-byte blocks: source %d, stream %d, ideal %d (stream/ideal %.3f)", vol.BlockSize, nzSource, nzStream, nzIdeal, float64(nzStream)/float64(nzIdeal))

			// zerofree on the copy itself, which does not replay: the
			// files it loses are what these checks exist to catch.
			zf := filepath.Join(t.TempDir(), "zerofree.img")
			imgtest.CopyFile(t, zf, c.img)
			if out, err := imgtest.Output("zerofree", zf); err != nil {
				// Some copies make zerofree stop (a bitmap block whose
				// checksum only the journal makes right): no loss, and no
				// saving either.
				t.Logf("zerofree refused the copy: %v: %s", err, strings.TrimSpace(out))
				if v.lossy {
					lossyRuns.Add(1)
				}
				return
			}
			opts := "rw" // with fast commits, the kernel replays
			if !v.fastCommit {
				fsck(t, zf)
				opts = "ro,noload"
			}
			diff := "the whole filesystem" // zerofree may leave it unmountable
			if zfFiles, err := tryMountHash(t, zf, opts); err == nil {
				diff = diffTrees(truthFiles, zfFiles)
			}
			t.Logf("zerofree on the copy: %s", cmpOr(diff, "no loss"))
			if v.lossy {
				lossyRuns.Add(1)
				if diff != "" {
					losses.Add(1)
				}
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// diffTrees describes how two file hash sets differ, or returns "".
func diffTrees(want, got map[string]string) string {
	var bad []string
	for n, h := range want {
		if got[n] != h {
			bad = append(bad, n)
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			bad = append(bad, "+"+n)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	sort.Strings(bad)
	return fmt.Sprintf("%d of %d files differ: %s", len(bad), len(want), strings.Join(bad[:min(len(bad), 8)], " "))
}

// dumpFree returns the free blocks of img's on-disk bitmaps, as a map:
// those dumpe2fs lists. dumpe2fs refuses a copy whose on-disk bitmap
// checksums are stale (the journal holds the right ones), as a crash copy's
// may be; then debugfs -n (checksums not verified) tests every block.
func dumpFree(t testing.TB, img string, size int64) *freemap.Map {
	t.Helper()
	out, err := imgtest.Output("dumpe2fs", img)
	if err != nil {
		if !strings.Contains(out, "checksum does not match") {
			t.Fatalf("dumpe2fs %s: %v\n%s", img, err, out)
		}
		return debugfsFree(t, img, size)
	}
	bs := dumpField(t, out, "Block size")
	b := freemap.NewBuilder(size)
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Free blocks: ")
		if !ok {
			continue
		}
		for _, r := range strings.Split(rest, ",") {
			if r = strings.TrimSpace(r); r == "" {
				continue
			}
			a, z, two := strings.Cut(r, "-")
			x, err := strconv.ParseInt(a, 10, 64)
			y := x
			if two {
				y, err = strconv.ParseInt(z, 10, 64)
			}
			if err != nil {
				t.Fatalf("dumpe2fs free range %q", r)
			}
			b.Add(x*bs, (y-x+1)*bs)
		}
	}
	return b.Map()
}

// debugfsFree is dumpFree through debugfs -n: the blocks its testb finds
// not in use.
func debugfsFree(t testing.TB, img string, size int64) *freemap.Map {
	t.Helper()
	hdr := imgtest.Run(t, "dumpe2fs", "-h", img)
	bs, first, n := dumpField(t, hdr, "Block size"), dumpField(t, hdr, "First block"), dumpField(t, hdr, "Block count")
	first = max(first, 1) // block 0 always holds the superblock
	out, err := imgtest.Output("debugfs", "-n", "-R", fmt.Sprintf("testb %d %d", first, n-first), img)
	if err != nil {
		t.Fatalf("debugfs -n %s: %v\n%s", img, err, out)
	}
	b := freemap.NewBuilder(size)
	tested := 0
	for _, line := range strings.Split(out, "\n") {
		var blk int64
		if _, err := fmt.Sscanf(line, "Block %d not in use", &blk); err == nil {
			b.Add(blk*bs, bs)
			tested++
		} else if strings.HasSuffix(line, "marked in use") {
			tested++
		}
	}
	if int64(tested) != n-first {
		t.Fatalf("debugfs -n %s tested %d blocks of %d\n%s", img, tested, n-first, out)
	}
	return b.Map()
}

// notFree returns the first byte free in got but not in want, or -1.
func notFree(got, want *freemap.Map) int64 {
	for _, e := range got.Extents() {
		for off := e.Off; off < e.End(); {
			w, ok := want.Next(off)
			if !ok || w.Off > off {
				return off
			}
			off = w.End()
		}
	}
	return -1
}

// replayedFree is the free space e2fsck leaves after replaying img's
// journal (and nothing else).
func replayedFree(t testing.TB, img []byte) *freemap.Map {
	t.Helper()
	p := filepath.Join(t.(interface{ TempDir() string }).TempDir(), "replayed.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	imgtest.Output("e2fsck", "-E", "journal_only", "-y", p)
	return dumpFree(t, p, int64(len(img)))
}

// TestCrashCorruptJournal damages the journal of a crash copy, block kind
// by block kind: each result must pass through, or zero only blocks that
// are free both after e2fsck replays the intact journal and after it
// replays the damaged one. Never a wrong free.
func TestCrashCorruptJournal(t *testing.T) {
	// A journal with checksums (csum v3) and one without (ext3), where
	// nothing but the structure tells a damaged block.
	for _, name := range []string{"ext4", "ext3"} {
		t.Run(name, func(t *testing.T) { testCorruptJournal(t, crashVariant0(t, name)) })
	}
}

// crashVariant0 returns the crash variant called name.
func crashVariant0(t *testing.T, name string) crashVariant {
	for _, v := range crashVariants {
		if v.name == name {
			return v
		}
	}
	t.Fatalf("no crash variant %q", name)
	return crashVariant{}
}

func testCorruptJournal(t *testing.T, v crashVariant) {
	c := buildCrash(t, v)
	orig, err := os.ReadFile(c.img)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(orig))
	intact := replayedFree(t, orig)
	onDisk := dumpFree(t, c.img, size)
	whole, err := Read(bytes.NewReader(orig), size)
	if err != nil {
		t.Fatal(err)
	}
	intactEnd := whole.Journal.EndTID
	if off := notFree(whole.Free, intact); off >= 0 {
		t.Fatalf("undamaged: byte %d zeroed, but in use after replay", off)
	}
	j := recoverJournal(t, orig)
	bs := j.s.blockSize
	// The log's blocks by kind: every block of the walked log that starts
	// with the jbd2 magic is a header (logged copies that do are escaped).
	be := binary.BigEndian
	var descs, commits, datas []int64
	for _, pos := range j.walked() {
		b := orig[j.offset(t, pos):]
		if be.Uint32(b) != 0xC03B3998 {
			continue
		}
		switch be.Uint32(b[4:]) {
		case 1:
			descs = append(descs, j.offset(t, pos))
			datas = append(datas, j.offset(t, pos+1))
		case 2:
			commits = append(commits, j.offset(t, pos))
		}
	}
	type damage struct {
		name string
		off  int64
		xor  byte
		zero int64 // zero this many bytes instead
		fill int64 // or fill this many bytes with garbage
	}
	var ds []damage
	last := func(xs []int64, n int) []int64 { return xs[max(0, len(xs)-n):] }
	for i, d := range last(descs, 2) {
		ds = append(ds,
			damage{name: fmt.Sprintf("desc%d/seq", i), off: d + 11, xor: 0x01},
			damage{name: fmt.Sprintf("desc%d/type", i), off: d + 7, xor: 0x04},
			damage{name: fmt.Sprintf("desc%d/tag-block", i), off: d + 12 + 3, xor: 0x10},
			damage{name: fmt.Sprintf("desc%d/tag-flags-last", i), off: d + 12 + 7, xor: 0x08},
			damage{name: fmt.Sprintf("desc%d/tag-flags-escape", i), off: d + 12 + 7, xor: 0x01},
			damage{name: fmt.Sprintf("desc%d/tail-csum", i), off: d + bs - 1, xor: 0x01},
		)
	}
	for i, cm := range last(commits, 2) {
		ds = append(ds,
			damage{name: fmt.Sprintf("commit%d/seq", i), off: cm + 11, xor: 0x01},
			damage{name: fmt.Sprintf("commit%d/csum", i), off: cm + 16, xor: 0x01},
			damage{name: fmt.Sprintf("commit%d/time", i), off: cm + 48 + 7, xor: 0x01},
			damage{name: fmt.Sprintf("commit%d/zeroed", i), off: cm, zero: bs},
			damage{name: fmt.Sprintf("commit%d/torn-after-header", i), off: cm + commitHeaderBytes, fill: bs - commitHeaderBytes},
		)
	}
	for i, d := range last(datas, 2) {
		ds = append(ds, damage{name: fmt.Sprintf("data%d/byte", i), off: d + 100, xor: 0x01})
	}
	ds = append(ds,
		damage{name: "jsb/start", off: j.offset(t, 0) + 0x1F, xor: 0x01},
		damage{name: "jsb/sequence", off: j.offset(t, 0) + 0x1B, xor: 0x01},
		damage{name: "torn-tail", off: commits[len(commits)-1], zero: bs},
	)
	passed, mapped := 0, 0
	for _, d := range ds {
		t.Run(d.name, func(t *testing.T) {
			img := bytes.Clone(orig)
			switch {
			case d.zero > 0:
				clear(img[d.off : d.off+d.zero])
			case d.fill > 0:
				tear(img[d.off : d.off+d.fill])
			default:
				img[d.off] ^= d.xor
			}
			vol, err := Read(bytes.NewReader(img), size)
			if err != nil {
				if !errors.Is(err, freemap.ErrUnsupported) && !errors.Is(err, freemap.ErrUnsafe) {
					t.Fatalf("error %v is not a refusal", err)
				}
				passed++
				return
			}
			mapped++
			checkInvariants(t, vol, size)
			if off := notFree(vol.Free, onDisk); off >= 0 {
				t.Errorf("byte %d (block %d) zeroed, but in use in the on-disk bitmaps", off, off/bs)
			}
			// Where the damage cuts the log short, the transactions
			// after it are replayed by nobody: only the damaged
			// journal's replay is the truth then.
			if vol.Journal.EndTID == intactEnd {
				if off := notFree(vol.Free, intact); off >= 0 {
					t.Errorf("byte %d (block %d) zeroed, but in use after replay of the intact journal", off, off/bs)
				}
			} else {
				t.Logf("the log now ends at transaction %d, not %d", vol.Journal.EndTID, intactEnd)
			}
			if off := notFree(vol.Free, replayedFree(t, img)); off >= 0 {
				t.Errorf("byte %d (block %d) zeroed, but in use after e2fsck replays this journal", off, off/bs)
			}
		})
	}
	t.Logf("%d damages: %d passed through, %d mapped safely", len(ds), passed, mapped)
}

// commitHeaderBytes is sizeof(struct commit_header): what a commit block
// holds before its zero padding.
const commitHeaderBytes = 60

// tear fills b with garbage: what a torn write leaves.
func tear(b []byte) {
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
}

// TestCrashTornCommit: a commit block torn after its header (the sector
// holding the header written, the rest of the block stale). Kernels with
// jbd2_commit_block_csum_verify_partial accept it, as Recover does; e2fsck
// 1.47.0, and the 6.18 kernel this was written on, call the transaction
// corrupt. The union rule keeps the stream right either way: each tool,
// run on the torn copy and on its stream, ends with the same files.
func TestCrashTornCommit(t *testing.T) {
	v := crashVariant0(t, "ext4")
	c := buildCrash(t, v)
	orig, err := os.ReadFile(c.img)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(orig))
	j := recoverJournal(t, orig)
	s := j.s
	// The last commit block of the log.
	var last int64 = -1
	be := binary.BigEndian
	for _, pos := range j.walked() {
		off := j.offset(t, pos)
		if b := orig[off:]; be.Uint32(b) == 0xC03B3998 && be.Uint32(b[4:]) == 2 {
			last = off
		}
	}
	if last < 0 {
		t.Fatal("no commit block in the log")
	}
	img := bytes.Clone(orig)
	tear(img[last+commitHeaderBytes : last+s.blockSize])
	whole, err := Read(bytes.NewReader(orig), size)
	if err != nil {
		t.Fatal(err)
	}
	vol, err := Read(bytes.NewReader(img), size)
	if err != nil {
		t.Fatalf("torn commit block: %v", err)
	}
	if vol.Journal.EndTID != whole.Journal.EndTID {
		t.Errorf("torn commit block: replay ends at transaction %d, the intact log's at %d", vol.Journal.EndTID, whole.Journal.EndTID)
	}
	dir := t.TempDir()
	torn := filepath.Join(dir, "torn.img")
	if err := os.WriteFile(torn, img, 0o644); err != nil {
		t.Fatal(err)
	}
	zimg := imgtest.WriteStream(t, torn, vol.Free)
	copyOf := func(p string) string {
		q := filepath.Join(t.TempDir(), "copy.img")
		imgtest.CopyFile(t, q, p)
		return q
	}
	// The kernel: it mounts both (replaying) with the same files, or
	// neither.
	kTorn, errTorn := tryMountHash(t, copyOf(torn), "rw")
	kStream, errStream := tryMountHash(t, copyOf(zimg), "rw")
	switch {
	case (errTorn == nil) != (errStream == nil):
		t.Errorf("kernel mount: torn copy %v, its stream %v", errTorn, errStream)
	case errTorn == nil:
		if diff := diffTrees(kTorn, kStream); diff != "" {
			t.Errorf("replayed by the kernel, the stream's files differ from the torn copy's: %s", diff)
		}
		t.Logf("the kernel replays the torn commit block")
	default:
		t.Logf("the kernel refuses the torn commit block (%v)", errTorn)
	}
	// e2fsck -fy: the same report and the same files.
	fTorn, filesTorn := replay(t, torn, false)
	fStream, filesStream := replay(t, zimg, false)
	have := map[string]bool{}
	for _, l := range fTorn {
		have[l] = true
	}
	for _, l := range fStream {
		if !have[l] {
			t.Errorf("e2fsck on the stream reports %q, which it does not on the torn copy", l)
		}
	}
	if diff := diffTrees(filesTorn, filesStream); diff != "" {
		t.Errorf("repaired by e2fsck -fy, the stream's files differ from the torn copy's: %s", diff)
	}
	if len(filesTorn) == 0 {
		t.Error("e2fsck left no files: the test compares nothing")
	}
}

// TestCrashRefusals: what cannot be replayed safely passes through, with
// the reason, as a refusal of the right kind.
func TestCrashRefusals(t *testing.T) {
	seed := crashSeed(t, "crash-ext4")
	size := int64(len(seed))
	s, err := parseSuperblock(seed[sbOffset:sbOffset+sbSize], size)
	if err != nil {
		t.Fatal(err)
	}
	gd, err := newDescReader(bytes.NewReader(seed), s).desc(0)
	if err != nil {
		t.Fatal(err)
	}
	inode8 := int64(gd.inodeTable)*s.blockSize + 7*int64(s.inodeSize)
	fm, err := s.readInodeMap(bytes.NewReader(seed), 8, 1<<32)
	if err != nil {
		t.Fatal(err)
	}
	jsb := int64(fm.extents[0].physical) * s.blockSize
	cases := []struct {
		name string
		off  int64
		xor  byte
		set  []byte // written at off instead
		kind error
		msg  string
	}{
		{name: "journal-inode-extents", off: inode8 + inoBlock, xor: 0x01, kind: freemap.ErrUnsafe, msg: "journal inode 8 cannot be read"},
		{name: "external-journal", off: sbOffset + sbJournalInum, set: []byte{0, 0, 0, 0}, kind: freemap.ErrUnsupported, msg: "external device"},
		{name: "journal-magic", off: jsb, xor: 0x01, kind: freemap.ErrUnsafe, msg: "bad journal superblock magic"},
		{name: "journal-unknown-incompat", off: jsb + 0x28 + 3, xor: 0x40, kind: freemap.ErrUnsupported, msg: "unknown journal INCOMPAT"},
		{name: "journal-errno", off: jsb + 0x20 + 3, xor: 0x01, kind: freemap.ErrUnsafe, msg: "s_errno"},
		{name: "journal-superblock-csum", off: jsb + 0x30, xor: 0x01, kind: freemap.ErrUnsafe, msg: "journal superblock checksum mismatch"},
		{name: "journal-maxlen", off: jsb + 0x10, xor: 0x10, kind: freemap.ErrUnsafe, msg: "journal claims"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := bytes.Clone(seed)
			if c.set != nil {
				copy(img[c.off:], c.set)
				// keep the superblock checksum right: the refusal must
				// come from the journal, not from the superblock
				sb := img[sbOffset : sbOffset+sbSize]
				binary.LittleEndian.PutUint32(sb[sbChecksum:], crc32c(^uint32(0), sb[:sbChecksum]))
			} else {
				img[c.off] ^= c.xor
			}
			_, err := Read(bytes.NewReader(img), size)
			if err == nil || !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want a %v refusal mentioning %q", err, c.kind, c.msg)
			}
		})
	}
}

// TestCrashResizeInFlight: a logged superblock whose geometry differs from
// the on-disk one (as during an online resize) passes through. The copy of
// the plain-journal variant logs its superblock (the orphan list lives
// there); its s_blocks_count is changed in the log.
func TestCrashResizeInFlight(t *testing.T) {
	c := buildCrash(t, crashVariants[4]) // ext4-32bit-nocsum: no journal checksums
	orig, err := os.ReadFile(c.img)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(orig))
	j := recoverJournal(t, orig)
	home := uint64(sbOffset / j.s.blockSize)
	n := 0
	img := bytes.Clone(orig)
	for _, cp := range j.log.Copies {
		if cp.Home == home {
			off := j.offset(t, cp.Pos) + sbOffset%j.s.blockSize
			img[off+sbBlocksCountLo] ^= 0x08
			n++
		}
	}
	if n == 0 {
		t.Fatal("the journal logs no superblock: the workload no longer exercises this")
	}
	_, err = Read(bytes.NewReader(img), size)
	if err == nil || !errors.Is(err, freemap.ErrUnsupported) || !strings.Contains(err.Error(), "resize") {
		t.Fatalf("err = %v, want a resize refusal", err)
	}
	if _, err := Read(bytes.NewReader(orig), size); err != nil {
		t.Fatalf("undamaged: %v", err)
	}
}

// TestCrashExternalJournal: a real external journal (mke2fs -O journal_dev,
// mkfs.ext4 -J device=), the filesystem copied while mounted. Its log is
// on another device, so the copy passes through with that reason; the
// journal device itself has no bitmaps and passes through too.
func TestCrashExternalJournal(t *testing.T) {
	imgtest.NeedRoot(t)
	imgtest.Need(t, "mkfs.ext4", "losetup", "mount")
	dir := t.TempDir()
	jimg, src := filepath.Join(dir, "journal.img"), filepath.Join(dir, "fs.img")
	imgtest.RandomFile(t, jimg, 8<<20)
	imgtest.RandomFile(t, src, 24<<20)
	imgtest.Run(t, "mkfs.ext4", "-F", "-q", "-b", "4096", "-O", "journal_dev", jimg)
	jdev, _ := losetup(t, jimg)
	imgtest.Run(t, "mkfs.ext4", "-F", "-q", "-E", "nodiscard", "-b", "4096", "-J", "device="+jdev, src)
	dev, detach := losetup(t, src)
	mnt := t.TempDir()
	imgtest.Run(t, "mount", "-o", "commit=600,journal_path="+jdev, dev, mnt)
	mounted := true
	defer func() {
		if mounted {
			imgtest.Umount(t, mnt)
		}
	}()
	v := crashVariant{seed: 21}
	_, orphan, err := workload(mnt, v)
	if err != nil {
		t.Fatal(err)
	}
	crash := filepath.Join(dir, "crash.img")
	jcrash := filepath.Join(dir, "journal-crash.img")
	imgtest.CopyFile(t, crash, src) // while mounted
	imgtest.CopyFile(t, jcrash, jimg)
	orphan.Close()
	imgtest.Umount(t, mnt)
	mounted = false
	detach()

	b, err := os.ReadFile(crash)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if le.Uint32(b[sbOffset+sbFeatureIncompat:])&incompatRecover == 0 || le.Uint32(b[sbOffset+sbJournalInum:]) != 0 {
		t.Fatal("the copy does not need recovery from an external journal: the test no longer tests it")
	}
	_, err = Read(bytes.NewReader(b), int64(len(b)))
	if err == nil || !errors.Is(err, freemap.ErrUnsupported) || !strings.Contains(err.Error(), "external device") {
		t.Fatalf("crash copy with an external journal: err = %v, want an external-device refusal", err)
	}
	j, err := os.ReadFile(jcrash)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Read(bytes.NewReader(j), int64(len(j)))
	if err == nil || !errors.Is(err, freemap.ErrUnsupported) || !strings.Contains(err.Error(), "external journal device") {
		t.Fatalf("the journal device: err = %v, want a journal-device refusal", err)
	}
}

// syncfs writes back the filesystem that holds dir, and only that one.
func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
