#!/bin/sh
# Regenerates the fuzz seed images *.img.gz (small real filesystems made by
# mke2fs 1.47). Run from this directory: sh mkseeds.sh
set -eu
export E2FSPROGS_FAKE_TIME=1700000000 LC_ALL=C
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tree/sub"
for i in 1 2 3 4 5 6; do seq 1 $((i * 900)) > "$tmp/tree/f$i.txt"; done
seq 1 3000 > "$tmp/tree/sub/g.txt"
mk() {
	name=$1 size=$2
	shift 2
	rm -f "$tmp/$name.img"
	truncate -s "$size" "$tmp/$name.img"
	mkfs.ext4 -F -q -U 6f1c9e43-8a2e-4a53-9b43-1d2e3f405060 \
		-E nodiscard,root_owner=0:0,hash_seed=11111111-2222-3333-4444-555555555555 \
		"$@" -d "$tmp/tree" "$tmp/$name.img"
	e2fsck -fn "$tmp/$name.img" >/dev/null
	gzip -9 -n -c "$tmp/$name.img" > "$name.img.gz"
}
mk ext4 1M -t ext4 -b 1024 -g 256 -N 64 -O ^has_journal
mk gdtcsum 1M -t ext4 -b 1024 -g 256 -N 64 -O ^has_journal,^metadata_csum,^64bit,uninit_bg
mk metabg 1M -t ext4 -b 1024 -g 256 -N 64 -O ^has_journal,meta_bg,^resize_inode
mk ext2 512K -t ext2 -b 1024 -g 256 -N 64
mk bigalloc 2M -t ext4 -b 1024 -g 256 -N 64 -O ^has_journal,bigalloc -C 4096
mk ext4k 2M -t ext4 -b 4096 -g 256 -N 64 -O ^has_journal
