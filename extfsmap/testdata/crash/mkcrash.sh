#!/bin/sh
# Regenerates crash-ext4.img.gz: a crash-consistent copy of a small ext4
# (needs_recovery set, fsync'd files only in the journal), the seed of the
# fuzzers' journal paths and of TestCrashSeed. Needs root (loop mount).
# Run from this directory: sh mkcrash.sh
set -eu
export E2FSPROGS_FAKE_TIME=1700000000 LC_ALL=C
tmp=$(mktemp -d)
dev=
cleanup() {
	mountpoint -q "$tmp/m" && umount "$tmp/m"
	[ -n "$dev" ] && losetup -d "$dev"
	rm -rf "$tmp"
}
trap cleanup EXIT
truncate -s 3M "$tmp/src.img"
mkfs.ext4 -F -q -U 6f1c9e43-8a2e-4a53-9b43-1d2e3f405060 \
	-E nodiscard,root_owner=0:0,hash_seed=11111111-2222-3333-4444-555555555555 \
	-t ext4 -b 1024 -g 1024 -N 64 -J size=1 "$tmp/src.img"
dev=$(losetup -f --show "$tmp/src.img")
mkdir "$tmp/m"
mount -o commit=600 "$dev" "$tmp/m"
seq 1 20000 > "$tmp/m/base.txt"
sync
for i in 1 2 3 4 5; do
	seq 1 $((i * 3000)) | dd of="$tmp/m/f$i.txt" conv=fsync status=none
done
rm "$tmp/m/base.txt"
mkdir "$tmp/m/d"
seq 1 5000 | dd of="$tmp/m/d/g.txt" conv=fsync status=none
cp "$tmp/src.img" "$tmp/crash.img" # while mounted
gzip -9 -n -c "$tmp/crash.img" > crash-ext4.img.gz
