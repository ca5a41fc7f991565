#!/usr/bin/env bash
# mkvmdisk.sh IMG [--live-root]: build a disk image laid out like a Linux VM
# guest's, every byte random before the filesystems are made (a used disk's
# free space is never zero):
#   p1  ESP, FAT32 (mkfs.vfat), a few boot files, some deleted
#   p2  /boot, ext4, kernels and initrds, old ones deleted
#   p3  LVM PV of VG "vmvg": root (ext4), swap, home (XFS), free extents
# Files are written and some deleted, so their data stays in free blocks.
# With --live-root the image is copied while root is still mounted, after
# fsync'd writes: a crash-consistent copy whose root needs journal replay,
# as a hypervisor snapshot without a guest agent makes.
# Prints "NAME USED_BYTES" lines (each filesystem's used bytes as its own
# tools report them) to IMG.used. Needs root, loop devices, e2fsprogs,
# xfsprogs, dosfstools, mtools, lvm2, fdisk. DISK_MB sets the size (1280, at least 1152).
set -euo pipefail
img=$1
live=${2:-}
DISK_MB=${DISK_MB:-1280}
work=$(mktemp -d /var/tmp/prezero-vmdisk.XXXXXX)
loops=()
mnt=$work/mnt
mkdir -p "$mnt"
# ours DEV: is DEV still the loop device this script attached? Loop devices
# are shared with other users of the machine: never detach one that now
# backs something else.
declare -A loop_id
loopid() { losetup -n -O BACK-MAJ:MIN,BACK-INO,OFFSET,SIZELIMIT "$1" 2>/dev/null | tr -s ' '; }
ours() { [ -n "${loop_id[$1]:-}" ] && [ "$(loopid "$1")" = "${loop_id[$1]}" ]; }
unloop() {
	if ours "$1"; then losetup -d "$1" || echo "mkvmdisk: could not detach $1" >&2; fi
	local keep=()
	for l in "${loops[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done
	loops=("${keep[@]}")
}
cleanup() {
	if mountpoint -q "$mnt"; then umount "$mnt" || umount -l "$mnt" || true; fi
	for l in "${loops[@]}"; do unloop "$l"; done
	rm -rf "$work"
}
trap cleanup EXIT
# loop OFFSET SIZE: attach a loop device over bytes of the image; its name
# is in $L (not printed: a $(...) subshell would lose the cleanup list).
loop() {
	L=$(losetup -f --show -o "$1" --sizelimit "$2" "$img")
	loops+=("$L")
	loop_id[$L]=$(loopid "$L")
}
# fresh DEV: drop DEV's block-device cache before a tool reads what the
# kernel filesystem wrote (that bypassed it): otherwise xfs_db or dumpe2fs
# may see the blocks as mkfs left them.
fresh() { blockdev --flushbufs "$1"; }
files() { # DIR COUNT MiB PREFIX: COUNT random files of MiB each
	mkdir -p "$1"
	for i in $(seq "$2"); do head -c "$3M" /dev/urandom >"$1/$4$i"; done
}

head -c "${DISK_MB}M" /dev/urandom >"$img"
sfdisk -q --no-reread --no-tell-kernel "$img" >/dev/null <<SF
label: gpt
size=64M, type=U, name="EFI System Partition"
size=192M, type=L, name="boot"
type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name="lvm"
SF
# start and size (bytes) of partition N
part() { sfdisk -d "$img" | awk -v n="$1" '$1 ~ "[^0-9]"n"$" { gsub(/[,=]/, " "); for (i=1;i<=NF;i++) { if ($i=="start") s=$(i+1); if ($i=="size") z=$(i+1) } print s*512, z*512 }'; }
read -r esp_off esp_size < <(part 1)
read -r boot_off boot_size < <(part 2)
read -r pv_off pv_size < <(part 3)
: >"$img.used"

# ESP: FAT32 with a boot loader and a kernel copy; an old one deleted.
loop "$esp_off" "$esp_size"; l=$L
mkfs.vfat -F 32 -n ESP "$l" >/dev/null 2>&1
files "$work/esp" 2 6 grubx64-
files "$work/esp" 1 12 old-
{
	mmd -i "$l" ::/EFI ::/EFI/debian
	mcopy -i "$l" "$work"/esp/* ::/EFI/debian/
	mdel -i "$l" ::/EFI/debian/old-1
} 2>/dev/null # mtools: "Could not get geometry" on a loop device
fat=$(fsck.fat -n -v "$l" 2>/dev/null)
csize=$(sed -n 's/^ *\([0-9]*\) bytes per cluster.*/\1/p' <<<"$fat")
dstart=$(sed -n 's/^Data area starts at byte \([0-9]*\).*/\1/p' <<<"$fat")
used=$(sed -n 's/.* \([0-9]*\)\/[0-9]* clusters$/\1/p' <<<"$fat")
echo "esp $((dstart + used * csize))" >>"$img.used"
unloop "$l"

# /boot: ext4, three kernels written, the oldest removed.
loop "$boot_off" "$boot_size"; l=$L
mkfs.ext4 -q -F -E nodiscard -L boot "$l"
mount "$l" "$mnt"
files "$mnt" 3 12 vmlinuz-6.1.0-
files "$mnt" 3 30 initrd.img-6.1.0-
rm "$mnt/vmlinuz-6.1.0-1" "$mnt/initrd.img-6.1.0-1"
umount "$mnt"
ext_used() { fresh "$1"; dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Block count/ {c=$2} /^Free blocks/ {f=$2} /^Block size/ {b=$2} END {print (c-f)*b}'; }
echo "boot $(ext_used "$l")" >>"$img.used"
unloop "$l"

# LVM: a VG seen only through this script's own loop device.
loop "$pv_off" "$pv_size"; pv=$L
C="devices{filter=[\"a|^$pv\$|\",\"r|.*|\"] global_filter=[\"a|^$pv\$|\",\"r|.*|\"] use_devicesfile=0 obtain_device_list_from_udev=0} global{activation=0 use_lvmetad=0} activation{udev_sync=0 udev_rules=0 monitoring=0} backup{backup=0 archive=0}"
lvm() { local c=$1; shift; "$c" --config "$C" "$@" 2>/dev/null; }
lvm pvcreate -q -y -ff "$pv" >/dev/null
lvm vgcreate -q -s 4m vmvg "$pv" >/dev/null
# XFS needs 300 MB; what is left of the PV stays free extents.
lvm lvcreate -q -an -Zn -y -L 400m -n root vmvg >/dev/null
lvm lvcreate -q -an -Zn -y -L 128m -n swap_1 vmvg >/dev/null
lvm lvcreate -q -an -Zn -y -L 320m -n home vmvg >/dev/null
# Each LV is one linear segment: note where, then serve it on a loop device.
pe=$(lvm pvs --noheadings --nosuffix --units b -o pe_start "$pv" | tr -d ' ')
ext=$(lvm vgs --noheadings --nosuffix --units b -o vg_extent_size vmvg | tr -d ' ')
declare -A lv_off lv_size
for lv in root swap_1 home; do
	start=$(lvm lvs --noheadings -o seg_pe_ranges "vmvg/$lv" | sed 's/.*:\([0-9]*\)-.*/\1/')
	lv_off[$lv]=$((pv_off + pe + start * ext))
	lv_size[$lv]=$(lvm lvs --noheadings --nosuffix --units b -o lv_size "vmvg/$lv" | tr -d ' ')
done
unloop "$pv"
lv_loop() { loop "${lv_off[$1]}" "${lv_size[$1]}"; }

lv_loop swap_1; l=$L
mkswap -q -L swap "$l"
echo "swap 4096" >>"$img.used"   # with --zero-swap only the header page is kept
unloop "$l"

lv_loop home; l=$L
mkfs.xfs -q -f -K -L home "$l"
mount "$l" "$mnt"
files "$mnt/user/photos" 8 8 img-
files "$mnt/user/tmp" 8 10 cache-
rm -rf "$mnt/user/tmp"
umount "$mnt"
fresh "$l"
xfs_used=$(xfs_db -r -c 'sb 0' -c 'print blocksize dblocks fdblocks' "$l" | awk '{v[$1]=$3} END {print (v["dblocks"]-v["fdblocks"])*v["blocksize"]}')
echo "home $xfs_used" >>"$img.used"
unloop "$l"

lv_loop root; l=$L
mkfs.ext4 -q -F -E nodiscard -L root "$l"
mount "$l" "$mnt"
files "$mnt/usr/lib" 16 8 lib-
files "$mnt/var/cache/apt" 12 10 deb-
rm -rf "$mnt/var/cache/apt"
files "$mnt/var/log" 2 4 log-
if [ "$live" = --live-root ]; then
	# fsync'd writes are in the journal; the bitmaps on disk lag behind.
	sync
	for i in 1 2 3 4; do dd if=/dev/urandom of="$mnt/var/log/journal-$i" bs=1M count=3 conv=fsync status=none; done
	cp --sparse=never "$img" "$img.live"
	umount "$mnt"
	mv "$img.live" "$img"
	# What root uses once its journal is replayed: as unmounted cleanly.
	echo "root $(ext_used "$l")" >>"$img.used"
else
	umount "$mnt"
	echo "root $(ext_used "$l")" >>"$img.used"
fi
unloop "$l"
