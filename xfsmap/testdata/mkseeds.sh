#!/bin/sh
# Makes the fuzz and example seed images in this directory (run as root,
# xfsprogs 6.1 and a kernel that mounts v4 and v5 XFS). Free space is zero
# so they compress well; file contents are text for the same reason.
#   v5.img.gz      36 MiB, 1 KiB blocks, 2 AGs, rmapbt; files written, some deleted; clean log
#   v4.img.gz      36 MiB, 4 KiB blocks, -m crc=0, populated by mkfs -p (a proto
#                  file): this kernel (CONFIG_XFS_SUPPORT_V4=n) cannot mount v4
#   frozen.img.gz  the v5 recipe, copied while frozen (fsfreeze): a covered log
#   crash.img.gz   the v5 recipe, copied while mounted right after a write
#                  with conv=fsync: a log that needs recovery
set -eu
cd "$(dirname "$0")"
export TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1   # let mkfs.xfs go below 300 MB
work=$(mktemp -d)
trap 'umount "$work/m" 2>/dev/null || true; [ -n "${dev:-}" ] && losetup -d "$dev" 2>/dev/null; rm -rf "$work"' EXIT
mkdir "$work/m"

populate() {
	for i in $(seq 1 40); do
		yes "file $i line" | head -c $((i * 997)) > "$work/m/f$i"
	done
	mkdir "$work/m/d"
	for i in $(seq 1 30); do echo "small $i" > "$work/m/d/s$i"; done
	for i in $(seq 1 40 2); do rm "$work/m/f$i"; done
	sync
}

make_img() { # name mkfs-args...
	name=$1; shift
	img="$work/$name.img"
	truncate -s 36M "$img"
	mkfs.xfs -q -f -b size=1024 -d agcount=2 "$@" "$img"
	dev=$(losetup -f --show "$img")
	mount "$dev" "$work/m"
	populate
	case $name in
	frozen)
		fsfreeze -f "$work/m"
		cp --sparse=always "$img" "$work/copy"
		fsfreeze -u "$work/m";;
	crash)
		yes crash | dd of="$work/m/late" bs=64k count=16 iflag=fullblock conv=fsync status=none
		cp --sparse=always "$img" "$work/copy";;
	esac
	umount "$work/m"
	losetup -d "$dev"; dev=
	if [ -e "$work/copy" ]; then mv "$work/copy" "$img"; fi
	gzip -9n < "$img" > "$name.img.gz"
}

make_img v5 -m rmapbt=1,reflink=1
# v4: populated by mkfs.xfs -p, as the kernel cannot mount it.
mkdir "$work/src"
for i in $(seq 1 20); do yes "file $i line" | head -c $((i * 1999)) > "$work/src/f$i"; done
{ echo /dev/null; echo 0 0; echo d--755 0 0
  for i in $(seq 1 20); do echo "f$i ---644 0 0 $work/src/f$i"; done
  echo '$'; } > "$work/proto"
truncate -s 36M "$work/v4.img"
mkfs.xfs -q -f -m crc=0 -p "$work/proto" "$work/v4.img" 2>/dev/null
gzip -9n < "$work/v4.img" > v4.img.gz
make_img frozen -m rmapbt=1,reflink=1
make_img crash -m rmapbt=1,reflink=1
ls -l ./*.img.gz
