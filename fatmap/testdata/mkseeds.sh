#!/bin/sh
# Regenerates the fuzz seed and example images *.img.gz: small FAT volumes
# made by mkfs.fat 4.2 with a fixed volume id, files written by mtools
# (small text files, an ESP-like tree, one file deleted). Zero-filled, so
# they compress to a few KiB. Run from this directory: sh mkseeds.sh
set -eu
export MTOOLS_SKIP_CHECK=1 LC_ALL=C SOURCE_DATE_EPOCH=1700000000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in 1 2 3 4; do seq 1 $((i * 700)) > "$tmp/f$i.txt"; done
mk() {
	name=$1 size=$2
	shift 2
	img="$tmp/$name.img"
	rm -f "$img"
	truncate -s "$size" "$img"
	mkfs.fat -i 12345678 --invariant "$@" "$img" >/dev/null
	mmd -i "$img" ::/EFI ::/EFI/BOOT ::/data
	mcopy -i "$img" "$tmp/f1.txt" ::/EFI/BOOT/BOOTX64.EFI
	mcopy -i "$img" "$tmp/f2.txt" ::/EFI/BOOT/grub.cfg
	mcopy -i "$img" "$tmp/f3.txt" ::/data/gone.txt
	mcopy -i "$img" "$tmp/f4.txt" ::/readme.txt
	mdel -i "$img" ::/data/gone.txt
	fsck.fat -n "$img" >/dev/null
	gzip -9 -n -c "$img" > "$name.img.gz"
}
mk fat12 1M -F 12 -s 1
mk fat16 3M -F 16 -s 1
mk fat32 34M -F 32 -s 1
