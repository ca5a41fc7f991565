#!/usr/bin/env bash
# prezero demo: build a sample disk image (GPT, ext4 + NTFS, files written
# and deleted, free space full of old data), mount it with prezero, back it
# up with borg into a temporary repository, and compare the sizes.
# Needs root (ntfs-3g writes the sample NTFS files) and the packages of the
# README's set-up: e2fsprogs fdisk ntfs-3g fuse3 borgbackup python3.
# Usage: make demo   (or scripts/demo.sh; PREZERO=path picks the binary)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (sudo make demo): ntfs-3g writes the sample NTFS files" >&2
	exit 2
fi
for tool in sfdisk mkfs.ext4 debugfs mkntfs ntfs-3g fusermount3 borg python3; do
	command -v "$tool" >/dev/null || {
		echo "demo: $tool is missing; apt-get install e2fsprogs fdisk ntfs-3g fuse3 borgbackup python3" >&2
		exit 2
	}
done

work=$(mktemp -d /var/tmp/prezero-demo.XXXXXX)
mnt=$work/mnt
ntfs3g_pid=""
pz=${PREZERO:-}
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && { "$pz" umount "$mnt" 2>/dev/null || umount -l "$mnt"; }
	[ -n "$ntfs3g_pid" ] && kill "$ntfs3g_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
if [ -z "$pz" ]; then
	pz=$work/prezero
	(cd "$here" && go build -o "$pz" ./cmd/prezero)
fi
cd "$work"
mkdir -p "$mnt"

randfiles() { # DIR COUNT MiB: COUNT random files of MiB each
	mkdir -p "$1"
	for i in $(seq "$2"); do head -c "$3M" /dev/urandom >"$1/file$i.bin"; done
}

echo "== 1. a sample disk: GPT, ext4 224 MiB + NTFS 224 MiB, old data in the free space"
# Each filesystem starts from random bytes (a used disk's free space is
# never zero), gets 24 MiB of files to keep and 160 MiB of files that are
# then deleted: their data stays on disk, unallocated.
head -c 224M /dev/urandom >ext.img
randfiles tree/photos 3 8
randfiles tree/old 10 16
mkfs.ext4 -F -q -E nodiscard -L demo-ext -d tree ext.img
{ for i in $(seq 10); do echo "rm /old/file$i.bin"; done; echo "rmdir /old"; } >rm.txt
debugfs -w -f rm.txt ext.img >/dev/null 2>&1
rm -rf tree rm.txt

head -c 224M /dev/urandom >ntfs.img
mkntfs -F -f -Q -q -L demo-ntfs ntfs.img >/dev/null 2>&1
ntfs-3g -o no_detach ntfs.img "$mnt" >/dev/null 2>&1 &
ntfs3g_pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
randfiles "$mnt/Documents" 3 8
randfiles "$mnt/Temp" 10 16
rm -rf "$mnt/Temp"
fusermount3 -u "$mnt"
wait "$ntfs3g_pid"
ntfs3g_pid=""

truncate -s 450M disk.img
printf 'label: gpt\nstart=1MiB,size=224MiB,type=L\nsize=224MiB,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n' | sfdisk -q disk.img
dd if=ext.img of=disk.img bs=1M seek=1 conv=notrunc status=none
dd if=ntfs.img of=disk.img bs=1M seek=225 conv=notrunc status=none
rm ext.img ntfs.img
echo
"$pz" map disk.img

echo
echo "== 2. prezero mount: the zeroed streams as read-only files"
"$pz" mount disk.img "$mnt"
ls -l "$mnt"
echo "SEEK_HOLE sees the free space of part1.img as holes (4 MiB windows):"
python3 - "$mnt/part1.img" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size, off, data = os.fstat(fd).st_size, 0, 0
while off < size:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    data += h - d
    off = h
print(f"  {data >> 20} MiB data, {(size - data) >> 20} MiB holes of {size >> 20} MiB")
EOF
"$pz" umount "$mnt"

echo
echo "== 3. borg: the raw image against prezero backup (each into a new repository)"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR=$work/borg-base
dedup() { python3 -c 'import json,sys; print(json.load(sys.stdin)["archive"]["stats"]["deduplicated_size"])'; }
borg init -e none raw-repo
raw=$(borg create --json --read-special --sparse --chunker-params fixed,4194304 raw-repo::disk disk.img | dedup)
borg init -e none pz-repo
via=$("$pz" backup disk.img pz-repo::disk -- --json | dedup)
echo "prezero backup disk.img pz-repo::disk  (then: borg extract --stdout pz-repo::disk disk.img > disk.img)"

echo
mib() { echo "$(($1 >> 20)) MiB"; }
printf '%-34s %12s\n' "raw image size" "$(mib "$(stat -c %s disk.img)")"
printf '%-34s %12s\n' "borg, raw image (deduplicated)" "$(mib "$raw")"
printf '%-34s %12s\n' "borg through prezero" "$(mib "$via")"
echo "(borg compresses with lz4; the deleted files' random data is what prezero leaves out)"
