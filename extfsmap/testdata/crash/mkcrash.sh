#!/bin/sh
# Regenerates crash-ext4.img.gz and crash-fc.img.gz (with fast_commit):
# crash-consistent copies of a small ext4 (needs_recovery set, fsync'd files
# only in the journal), the seeds of the fuzzers' journal paths and of
# TestCrashSeed. Needs root (loop mount).
# Run from this directory: sh mkcrash.sh
set -eu
export E2FSPROGS_FAKE_TIME=1700000000 LC_ALL=C
tmp=$(mktemp -d)
dev=
cleanup() {
	mountpoint -q "$tmp/m" && umount "$tmp/m"
	[ -n "$dev" ] && losetup -d "$dev" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
# crash NAME SIZE MKFS-OPTIONS...: a copy of a small ext4 taken while
# mounted, after a sync'd base and fsync'd changes.
crash() {
	name=$1 size=$2
	shift 2
	rm -f "$tmp/src.img"
	truncate -s "$size" "$tmp/src.img"
	mkfs.ext4 -F -q -U 6f1c9e43-8a2e-4a53-9b43-1d2e3f405060 \
		-E nodiscard,root_owner=0:0,hash_seed=11111111-2222-3333-4444-555555555555 \
		-t ext4 -b 1024 -g 1024 -N 64 "$@" "$tmp/src.img"
	dev=$(losetup -f --show "$tmp/src.img")
	mkdir -p "$tmp/m"
	mount -o commit=600 "$dev" "$tmp/m"
	seq 1 20000 > "$tmp/m/base.txt"
	sync
	rm "$tmp/m/base.txt"
	mkdir "$tmp/m/d"
	seq 1 5000 | dd of="$tmp/m/d/g.txt" conv=fsync status=none
	for i in 1 2 3 4 5; do
		seq 1 $((i * 3000)) | dd of="$tmp/m/f$i.txt" conv=fsync status=none
	done
	cp "$tmp/src.img" "$tmp/crash.img" # while mounted
	umount "$tmp/m"
	losetup -d "$dev" 2>/dev/null || true
	dev=
	gzip -9 -n -c "$tmp/crash.img" > "$name.img.gz"
}
crash crash-ext4 4M -J size=1
crash crash-fc 6M -J size=2 -O fast_commit
