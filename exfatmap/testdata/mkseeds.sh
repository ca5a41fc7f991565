#!/bin/sh
# Regenerates the fuzz seed and example images *.img.gz: small exFAT
# volumes made by mkfs.exfat (exfatprogs 1.2.0), files
# written through exfat-fuse on a loop device (an ESP-like tree, one file
# deleted, one directory large enough to need a FAT chain). Zero-filled, so
# they compress to a few KiB. Needs root. Run from this directory:
# sh mkseeds.sh
set -eu
export LC_ALL=C
tmp=$(mktemp -d)
lo=
cleanup() {
	mountpoint -q "$tmp/mnt" && fusermount -u "$tmp/mnt"
	sleep 1
	[ -n "$lo" ] && losetup -d "$lo"
	rm -rf "$tmp"
}
trap cleanup EXIT
mkdir "$tmp/mnt"
mk() {
	name=$1 size=$2
	shift 2
	img="$tmp/$name.img"
	truncate -s "$size" "$img"
	mkfs.exfat "$@" "$img" >/dev/null
	lo=$(losetup -f --show "$img")
	mount.exfat-fuse "$lo" "$tmp/mnt"
	mkdir -p "$tmp/mnt/EFI/BOOT" "$tmp/mnt/data"
	seq 1 700 > "$tmp/mnt/EFI/BOOT/BOOTX64.EFI"
	seq 1 1400 > "$tmp/mnt/EFI/BOOT/grub.cfg"
	seq 1 2100 > "$tmp/mnt/data/gone.txt"
	for i in $(seq 1 40); do echo "$i" > "$tmp/mnt/data/file-with-a-long-name-$i.txt"; done
	seq 1 2800 > "$tmp/mnt/readme.txt"
	rm "$tmp/mnt/data/gone.txt"
	fusermount -u "$tmp/mnt"
	sleep 1
	losetup -d "$lo"
	lo=
	fsck.exfat -n "$img" >/dev/null
	gzip -9 -n -c "$img" > "$name.img.gz"
}
mk exfat-c512 2M -c 512 -b 4K
mk exfat-c4k 4M -b 64K
