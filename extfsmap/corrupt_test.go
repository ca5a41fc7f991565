package extfsmap

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// patched reads r with the byte at off replaced by val.
type patched struct {
	r   io.ReaderAt
	off int64
	val byte
}

func (p *patched) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.r.ReadAt(b, off)
	if p.off >= off && p.off < off+int64(n) {
		b[p.off-off] = p.val
	}
	return n, err
}

// corruption is a one-byte change: the byte at off is XORed with xor.
type corruption struct {
	name   string
	off    int64
	xor    byte
	expect string // "error", "fallback" or "" (either, or a smaller map)
}

// corruptions lists one-byte changes of the superblock, of group
// descriptors and of a block bitmap of the image f (its true superblock s).
func corruptions(t *testing.T, f io.ReaderAt, s *superblock) []corruption {
	sb := func(name string, field int64, xor byte, expect string) corruption {
		return corruption{"sb/" + name, sbOffset + field, xor, expect}
	}
	cs := []corruption{
		sb("magic", sbMagicOff, 0x01, "error"),
		sb("magic_hi", sbMagicOff+1, 0x80, "error"),
		sb("log_block_size=+1", sbLogBlockSize, 0x01, "error"),
		sb("log_block_size=+4", sbLogBlockSize, 0x04, "error"),
		sb("log_block_size_hi", sbLogBlockSize+3, 0x80, "error"),
		sb("log_cluster_size", sbLogClusterSize, 0x01, "error"),
		sb("blocks_per_group_lo", sbBlocksPerGroup, 0x08, "error"),
		sb("blocks_per_group_mid", sbBlocksPerGroup+1, 0x01, "error"),
		sb("blocks_per_group_hi", sbBlocksPerGroup+3, 0x01, "error"),
		sb("clusters_per_group", sbClustersPerGroup+1, 0x02, "error"),
		sb("inodes_per_group", sbInodesPerGroup+1, 0x01, ""),
		sb("inodes_count", sbInodesCount+1, 0x01, ""),
		sb("blocks_count_lo", sbBlocksCountLo, 0x01, ""),
		sb("blocks_count_lo2", sbBlocksCountLo, 0x80, ""),
		sb("blocks_count_mid", sbBlocksCountLo+2, 0x01, ""),
		sb("blocks_count_hi", sbBlocksCountLo+3, 0x40, "error"),
		sb("blocks_count_hi64", sbBlocksCountHi, 0x01, ""),
		sb("free_blocks", sbFreeBlocksLo, 0x10, ""),
		sb("first_data_block", sbFirstDataBlock, 0x01, "error"),
		sb("state_valid", sbState, stateValid, "error"),
		sb("state_errors", sbState, stateErrors, ""),
		sb("rev_level", sbRevLevel, 0x02, "error"),
		sb("inode_size", sbInodeSize, 0x40, ""),
		sb("reserved_gdt", sbReservedGDT, 0x01, ""),
		sb("reserved_gdt_hi", sbReservedGDT+1, 0x10, ""),
		sb("desc_size", sbDescSize, 0x40, ""),
		sb("desc_size_hi", sbDescSize+1, 0x01, ""),
		sb("first_meta_bg", sbFirstMetaBG, 0x01, ""),
		sb("uuid", sbUUID+3, 0x01, ""),
		sb("checksum_type", sbChecksumType, 0x01, ""),
		sb("checksum", sbChecksum, 0x01, ""),
		sb("checksum_seed", sbChecksumSeed, 0x01, ""),
		sb("backup_bgs", sbBackupBGs, 0x01, ""),
		sb("mmp_block", sbMMPBlock, 0x01, ""),
	}
	for _, w := range []struct {
		name  string
		field int64
	}{{"compat", sbFeatureCompat}, {"incompat", sbFeatureIncompat}, {"ro_compat", sbFeatureROCompat}} {
		for bit := range 24 {
			cs = append(cs, sb(fmt.Sprintf("%s_bit%d", w.name, bit), w.field+int64(bit/8), 1<<(bit%8), ""))
		}
	}

	// Group descriptors: the first, second and last group, and the first
	// BLOCK_UNINIT and the first initialised group after group 0.
	d := newDescReader(f, s)
	groups := []uint64{0, 1, s.groups - 1}
	var uninit, inited uint64
	for g := uint64(1); g < s.groups; g++ {
		gd, err := d.desc(g)
		if err != nil {
			t.Fatal(err)
		}
		if gd.flags&bgBlockUninit != 0 && s.gdtCsum && uninit == 0 {
			uninit = g
			groups = append(groups, g)
		}
		if gd.flags&bgBlockUninit == 0 && inited == 0 {
			inited = g
			groups = append(groups, g)
		}
	}
	for _, g := range groups {
		base := s.descOffset(g)
		gdname := func(n string) string { return fmt.Sprintf("gd%d/%s", g, n) }
		fb := ""
		if s.gdtCsum {
			fb = "fallback" // the descriptor checksum catches it
		}
		cs = append(cs,
			corruption{gdname("block_bitmap_lo"), base + bgBlockBitmapLo, 0x01, fb},
			corruption{gdname("block_bitmap_b1"), base + bgBlockBitmapLo + 1, 0x04, fb},
			corruption{gdname("block_bitmap_hi"), base + bgBlockBitmapLo + 3, 0x80, fb},
			corruption{gdname("inode_bitmap"), base + bgInodeBitmapLo, 0x01, fb},
			corruption{gdname("inode_table"), base + bgInodeTableLo + 1, 0x01, fb},
			corruption{gdname("free_count"), base + bgFreeBlocksLo, 0x01, fb},
			corruption{gdname("flags_block_uninit"), base + bgFlags, bgBlockUninit, fb},
			corruption{gdname("flags_inode_uninit"), base + bgFlags, bgInodeUninit, fb},
			corruption{gdname("bitmap_csum"), base + bgBlockBitmapCsumLo, 0x01, ""},
			corruption{gdname("checksum"), base + bgChecksum, 0x01, fb},
		)
		if s.descSize >= descSize64 {
			cs = append(cs, corruption{gdname("block_bitmap_hi32"), base + bgBlockBitmapHi, 0x01, fb})
		}
	}

	// A bitmap byte of an initialised group, in its used part and in its
	// free part. With metadata_csum the bitmap checksum catches both; without
	// it a byte turning used into free is caught by the descriptor's count.
	gd, err := newDescReader(f, s).desc(0)
	if err != nil {
		t.Fatal(err)
	}
	bm := make([]byte, s.blockSize)
	bmOff := int64(gd.blockBitmap) * s.blockSize
	if _, err := f.ReadAt(bm, bmOff); err != nil {
		t.Fatal(err)
	}
	expect := ""
	if s.metadataCsum {
		expect = "fallback"
	}
	for i := range int64(s.clustersPerGroup / 8) {
		if bm[i] == 0xFF {
			cs = append(cs, corruption{"bitmap/used_byte", bmOff + i, 0xFF, "fallback"})
			break
		}
	}
	for i := int64(s.clustersPerGroup/8) - 1; i >= 0; i-- {
		if bm[i] == 0x00 {
			cs = append(cs, corruption{"bitmap/free_byte", bmOff + i, 0xFF, expect})
			break
		}
	}
	cs = append(cs, corruption{"bitmap/padding", bmOff + s.blockSize - 1, 0xFF, ""})
	return cs
}

// TestCorruptions applies one-byte corruptions to real images. Each must
// give an error, a fallback, or a map whose free extents all lie inside the
// true map's: a byte the uncorrupted image uses is never zeroed. (The
// zeroed stream reads the source everywhere outside its free extents, so
// this is the same as comparing the streams byte for byte.)
func TestCorruptions(t *testing.T) {
	for _, name := range []string{"ext4-4k", "gdt_csum", "ext3", "meta_bg", "bigalloc"} {
		t.Run(name, func(t *testing.T) {
			var v variant
			for _, x := range variants {
				if x.name == name {
					v = x
				}
			}
			b := buildImage(t, v)
			f, err := os.Open(b.img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			truth, err := Read(f, b.size)
			if err != nil {
				t.Fatal(err)
			}
			raw := make([]byte, sbSize)
			if _, err := f.ReadAt(raw, sbOffset); err != nil {
				t.Fatal(err)
			}
			s, err := parseSuperblock(raw, b.size)
			if err != nil {
				t.Fatal(err)
			}
			var errs, fallbacks, smaller, same int
			for _, c := range corruptions(t, f, s) {
				var orig [1]byte
				if _, err := f.ReadAt(orig[:], c.off); err != nil {
					t.Fatal(err)
				}
				r := &patched{r: f, off: c.off, val: orig[0] ^ c.xor}
				vol, err := Read(r, b.size)
				switch {
				case err != nil:
					errs++
					if !errors.Is(err, freemap.ErrFormat) && !errors.Is(err, freemap.ErrUnsupported) && !errors.Is(err, freemap.ErrUnsafe) {
						t.Errorf("%s: error %v is not ErrFormat, ErrUnsupported or ErrUnsafe", c.name, err)
					}
					if c.expect == "fallback" {
						t.Errorf("%s: error %v, want a fallback", c.name, err)
					}
					continue
				case c.expect == "error":
					t.Errorf("%s: no error (%v, %d fallbacks), want one", c.name, vol.Free, vol.Fallbacks)
				case c.expect == "fallback" && vol.Fallbacks == 0:
					t.Errorf("%s: no fallback (%v), want one", c.name, vol.Free)
				}
				checkInvariants(t, vol, b.size)
				if e, ok := imgtest.FreeOutside(vol.Free, truth.Free); ok {
					t.Errorf("%s: free extent [%d,%d) is not free in the uncorrupted image: used data would be zeroed (notes %q)", c.name, e.Off, e.End(), vol.Notes)
				}
				switch {
				case vol.Fallbacks > 0:
					fallbacks++
				case vol.Free.FreeBytes() < truth.Free.FreeBytes():
					smaller++
				default:
					same++
				}
			}
			t.Logf("%d errors, %d with fallbacks, %d smaller maps, %d unchanged", errs, fallbacks, smaller, same)
		})
	}
}
