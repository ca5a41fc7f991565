#!/usr/bin/env bash
# prezero demo: build a disk image that looks like a Linux VM's (GPT; an EFI
# System Partition, FAT32; /boot, ext4; LVM with root ext4, swap and home
# XFS, plus free extents; old data everywhere in the free space), copied
# while root was still mounted, as a hypervisor snapshot without a guest
# agent is (root's journal needs replay). Show what prezero maps, mount it,
# back it up with borg through prezero and compare the sizes with a backup
# of the raw image.
# Needs root (loop devices, mounts). As root, missing Debian packages are
# installed first (scripts/deps.sh); otherwise the apt-get line is printed.
# Usage: make demo   (or scripts/demo.sh; PREZERO=path picks the binary)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/deps.sh" e2fsprogs fdisk fuse3 borgbackup python3 lvm2 dosfstools mtools xfsprogs
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (sudo make demo): it builds the sample disk with loop devices and mounts" >&2
	exit 2
fi

work=$(mktemp -d /var/tmp/prezero-demo.XXXXXX)
mnt=$work/mnt
pz=${PREZERO:-}
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && { "$pz" umount "$mnt" 2>/dev/null || umount -l "$mnt"; }
	rm -rf "$work"
}
trap cleanup EXIT
if [ -z "$pz" ]; then
	pz=$work/prezero
	(cd "$here" && go build -o "$pz" ./cmd/prezero)
fi
cd "$work"
mkdir -p "$mnt"

echo "== 1. a sample VM disk: ESP, /boot, LVM (root, swap, home), copied while root was mounted"
"$here/scripts/mkvmdisk.sh" disk.img --live-root
echo
"$pz" map --zero-swap disk.img
echo "(--zero-swap: this copy is not paired with a saved RAM state, so swap holds nothing to keep)"

echo
echo "== 2. prezero mount: the zeroed streams as read-only files, one per partition and LV"
"$pz" mount --zero-swap disk.img "$mnt"
ls -l "$mnt" "$mnt/lv"
"$pz" umount "$mnt"

echo
echo "== 3. borg: the raw image against prezero backup (each into a new repository)"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR=$work/borg-base
dedup() { python3 -c 'import json,sys; print(json.load(sys.stdin)["archive"]["stats"]["deduplicated_size"])'; }
borg init -e none raw-repo
raw=$(borg create --json --read-special --sparse --chunker-params fixed,4194304 raw-repo::disk disk.img | dedup)
borg init -e none pz-repo
via=$("$pz" backup --zero-swap disk.img pz-repo::disk -- --json | dedup)
echo "prezero backup --zero-swap disk.img pz-repo::disk"
echo "  restore: prezero restore --from pz-repo::disk /dev/sdX"
echo "  one LV:  prezero cat disk.img vmvg/root > root.img   (restore it onto /dev/vmvg/root)"

echo
mib() { echo "$(($1 >> 20)) MiB"; }
printf '%-34s %12s\n' "raw image size" "$(mib "$(stat -c %s disk.img)")"
printf '%-34s %12s\n' "used, as the filesystems report" "$(mib "$(awk '{s += $2} END {print s}' disk.img.used)")"
printf '%-34s %12s\n' "borg, raw image (deduplicated)" "$(mib "$raw")"
printf '%-34s %12s\n' "borg through prezero" "$(mib "$via")"
awk -v r="$raw" -v v="$via" 'BEGIN {printf "%-34s %11.1fx (%.0f%% less)\n", "prezero against the raw image", r / v, 100 * (r - v) / r}'
echo "(borg compresses with lz4; the deleted files' random data is what prezero leaves out;"
echo " root needs journal replay, and anything prezero cannot prove free passes through)"
