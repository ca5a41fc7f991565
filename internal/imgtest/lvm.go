package imgtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// LVM runs the real lvm2 tools in metadata-only mode (no device-mapper:
// activation is off and new LVs are not zeroed) on loop devices over
// byte ranges of image files. Each LVM has a VG name unique to this test
// process, sees only its own loop devices, and removes its VG, labels and
// loop devices in t.Cleanup, so that tests running lvm at the same time do
// not see each other.
type LVM struct {
	t    testing.TB
	VG   string
	devs []string // loop devices, in the order added
	imgs []string // image:offset of each, for messages
	back []string // backing file of each
}

var lvmSerial atomic.Int64

// NewLVM returns an LVM for a new VG; add PVs with AddPV, then Create.
func NewLVM(t testing.TB) *LVM {
	t.Helper()
	NeedRoot(t)
	Need(t, "pvcreate", "vgcreate", "lvcreate", "losetup")
	l := &LVM{t: t, VG: fmt.Sprintf("pzt%dx%d", os.Getpid(), lvmSerial.Add(1))}
	t.Cleanup(l.cleanup)
	return l
}

// config restricts lvm to this LVM's devices and turns activation off.
func (l *LVM) config() string {
	var accept []string
	for _, d := range l.devs {
		accept = append(accept, fmt.Sprintf(`"a|^%s$|"`, d))
	}
	accept = append(accept, `"r|.*|"`)
	return "devices{filter=[" + strings.Join(accept, ",") + "] global_filter=[" + strings.Join(accept, ",") +
		"] use_devicesfile=0 obtain_device_list_from_udev=0} global{activation=0 use_lvmetad=0} " +
		"activation{udev_sync=0 udev_rules=0 monitoring=0} backup{backup=0 archive=0}"
}

// Run runs an lvm command (pvcreate, lvs, ...) with the restricting
// configuration and returns its stdout.
func (l *LVM) Run(cmd string, args ...string) string {
	l.t.Helper()
	return Run(l.t, cmd, append([]string{"--config", l.config()}, args...)...)
}

// Try is Run that returns the error instead of failing the test.
func (l *LVM) Try(cmd string, args ...string) (string, error) {
	return Output(cmd, append([]string{"--config", l.config()}, args...)...)
}

// AddPV attaches bytes [off, off+size) of img to a loop device and
// returns the device; pvcreateArgs go to pvcreate (nil: no pvcreate).
func (l *LVM) AddPV(img string, off, size int64, pvcreateArgs ...string) string {
	l.t.Helper()
	dev := strings.TrimSpace(Run(l.t, "losetup", "-f", "--show", "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(size), img))
	l.devs = append(l.devs, dev)
	l.back = append(l.back, img)
	l.imgs = append(l.imgs, fmt.Sprintf("%s:%d", img, off))
	l.Run("pvcreate", append(append([]string{"-y", "-ff"}, pvcreateArgs...), dev)...)
	return dev
}

// Create makes the VG over every PV added so far (extent size in MiB).
func (l *LVM) Create(extentMiB int) {
	l.t.Helper()
	l.Run("vgcreate", append([]string{"-s", fmt.Sprintf("%dm", extentMiB), l.VG}, l.devs...)...)
}

// LV makes an LV of sizeMiB without touching its bytes; extra arguments
// (-i2 -I64k, a PV to allocate from) go to lvcreate.
func (l *LVM) LV(name string, sizeMiB int, extra ...string) {
	l.t.Helper()
	l.Run("lvcreate", append([]string{"-an", "-Zn", "-y", "-L", fmt.Sprintf("%dm", sizeMiB), "-n", name, l.VG}, extra...)...)
}

// Segment is one stripe area of an LV, as lvs reports it.
type Segment struct {
	LVStart     int64 // byte offset of the segment in the LV
	Dev         string
	DevOff      int64 // byte offset of the area on Dev (pe_start + extent)
	Len         int64 // bytes of the area
	Stripes     int
	StripeSize  int64
	StripeIndex int
}

// Segments returns the stripe areas of an LV from lvs and pvs: the
// mapping as lvm itself reports it.
func (l *LVM) Segments(lv string) []Segment {
	l.t.Helper()
	peStart := map[string]int64{}
	var ext int64
	for _, line := range strings.Split(strings.TrimSpace(l.Run("pvs", "--noheadings", "--nosuffix", "--units", "b", "--separator", ";",
		"-o", "pv_name,pe_start,vg_extent_size", l.devs[0])), "\n") {
		f := strings.Split(strings.TrimSpace(line), ";")
		if len(f) != 3 {
			continue
		}
		peStart[f[0]] = mustInt(l.t, f[1])
		ext = mustInt(l.t, f[2])
	}
	for _, d := range l.devs[1:] {
		out := strings.TrimSpace(l.Run("pvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "pe_start", d))
		peStart[d] = mustInt(l.t, out)
	}
	var segs []Segment
	out := l.Run("lvs", "-a", "--noheadings", "--nosuffix", "--units", "b", "--separator", ";",
		"-o", "seg_start_pe,seg_pe_ranges,stripes,stripe_size", l.VG+"/"+lv)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), ";")
		if len(f) != 4 {
			l.t.Fatalf("lvs line %q", line)
		}
		start := mustInt(l.t, f[0]) * ext
		stripes := int(mustInt(l.t, f[2]))
		ss := mustInt(l.t, f[3])
		for i, r := range strings.Fields(f[1]) {
			dev, rng, _ := strings.Cut(r, ":")
			a, b, _ := strings.Cut(rng, "-")
			pa, pb := mustInt(l.t, a), mustInt(l.t, b)
			segs = append(segs, Segment{LVStart: start, Dev: dev, DevOff: peStart[dev] + pa*ext, Len: (pb - pa + 1) * ext,
				Stripes: stripes, StripeSize: ss, StripeIndex: i})
		}
	}
	return segs
}

func mustInt(t testing.TB, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatalf("lvm reported %q, not a number", s)
	}
	return n
}

// Dev returns the loop device of the i-th PV added.
func (l *LVM) Dev(i int) string { return l.devs[i] }

func (l *LVM) cleanup() {
	if len(l.devs) > 0 {
		Output("vgremove", "--config", l.config(), "-f", "-y", l.VG)
		Output("pvremove", append([]string{"--config", l.config(), "-ff", "-y"}, l.devs...)...)
	}
	for i, d := range l.devs {
		Detach(l.t, d, l.back[i])
	}
}

// Detach removes the VG's loop devices now, keeping the images as they
// are (labels and metadata included); the cleanup then has nothing to do.
func (l *LVM) Detach() {
	l.t.Helper()
	for i, d := range l.devs {
		Detach(l.t, d, l.back[i])
	}
	l.devs, l.back = nil, nil
}

// WriteLV writes the file src into LV lv through lvm's own segment list
// (striped areas chunk by chunk), via the loop devices.
func (l *LVM) WriteLV(lv, src string) {
	l.t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		l.t.Fatal(err)
	}
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, p := range LVPieces(l.Segments(lv)) {
		f := files[p.Dev]
		if f == nil {
			if f, err = os.OpenFile(p.Dev, os.O_WRONLY, 0); err != nil {
				l.t.Fatal(err)
			}
			files[p.Dev] = f
		}
		if p.LVOff+p.Len > int64(len(data)) {
			l.t.Fatalf("%s is %d bytes, LV %s is larger", src, len(data), lv)
		}
		if _, err := f.WriteAt(data[p.LVOff:p.LVOff+p.Len], p.DevOff); err != nil {
			l.t.Fatal(err)
		}
	}
}

// Piece is a contiguous run of an LV on one device.
type Piece struct {
	LVOff  int64
	Dev    string
	DevOff int64
	Len    int64
}

// LVPieces splits stripe areas into the LV's runs: a linear area is one
// piece, a striped one a piece per chunk (chunk k of area i holds LV chunk
// k*stripes+i of its segment).
func LVPieces(segs []Segment) []Piece {
	var out []Piece
	for _, s := range segs {
		chunk := s.StripeSize
		if s.Stripes <= 1 || chunk == 0 {
			out = append(out, Piece{s.LVStart, s.Dev, s.DevOff, s.Len})
			continue
		}
		for k := int64(0); k*chunk < s.Len; k++ {
			lvOff := s.LVStart + (k*int64(s.Stripes)+int64(s.StripeIndex))*chunk
			out = append(out, Piece{lvOff, s.Dev, s.DevOff + k*chunk, chunk})
		}
	}
	return out
}

// FreeSegments returns the free extents of device dev as byte ranges
// (offset, length) on it, as pvs --segments reports them.
func (l *LVM) FreeSegments(dev string) [][2]int64 {
	l.t.Helper()
	ps := mustInt(l.t, l.Run("pvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "pe_start", dev))
	ext := mustInt(l.t, l.Run("pvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "vg_extent_size", dev))
	var out [][2]int64
	for _, line := range strings.Split(strings.TrimSpace(l.Run("pvs", "--segments", "--noheadings", "--separator", ";",
		"-o", "pvseg_start,pvseg_size,lv_name", dev)), "\n") {
		f := strings.Split(strings.TrimSpace(line), ";")
		if len(f) != 3 {
			l.t.Fatalf("pvs --segments line %q", line)
		}
		if f[2] == "" {
			out = append(out, [2]int64{ps + mustInt(l.t, f[0])*ext, mustInt(l.t, f[1]) * ext})
		}
	}
	return out
}

// Swap makes a swap area of size bytes in a new file over random bytes,
// with a label and a fixed UUID.
func Swap(t testing.TB, path string, size int64, label, uuid string) {
	t.Helper()
	Need(t, "mkswap")
	RandomFile(t, path, size)
	Run(t, "mkswap", "-L", label, "-U", uuid, path)
}
