#!/usr/bin/env bash
# Backup benchmark for prezero mount and prezero backup; every figure comes
# from this one run, so the ratios are comparable on a noisy machine:
#   1. borg's deduplicated size through prezero, against borg on a copy of
#      the image zeroed by the peers (zerofree on ext4, ntfsclone -O on
#      NTFS, xfs_copy -d on XFS). Goal <= 1.00x.
#   2. borg create time through prezero, against borg on that zeroed copy
#      as a plain file (goal <= 1.10x) and against borg on the raw image:
#      borg create run on a prezero mount, and the whole prezero backup
#      (which also asks borg its version, maps the source and mounts it).
#   3. sequential read throughput of each part*.img through the mount
#      (dd bs=1M), against prezero cat of the same partition. Goal >= 0.7x.
# The image: GPT, ext4 1 GiB and NTFS 1 GiB, each mostly free and that free
# space full of old data (random bytes before mkfs, then big random files
# written and deleted), a 256 MiB unrecognised partition of random bytes
# that passes through, and (partition 4) an XFS 1 GiB made like the others. borg runs with prezero's flags
# (--read-special --sparse --chunker-params fixed,4194304) in every case, a
# fresh repository (init -e none) and cache for every run; times are the
# best of 3 runs, with the images in the page cache. The repositories live
# on tmpfs (/dev/shm, or REPO_DIR), so that borg's fsyncs to a busy disk do
# not drown the differences in reading (about 3 GiB of memory).
# Needs root (ntfs-3g, loop mounts), e2fsprogs, ntfs-3g (ntfsclone),
# zerofree, xfsprogs, fdisk, fuse3, borgbackup, python3, bc.
# Usage: bench/backup.sh [WORKDIR]   (about 9 GiB of scratch space, ~3 min;
# KEEP=1 keeps WORKDIR with disk.img and zeroed.img)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/prezero-backup-bench.XXXXXX)}
mkdir -p "$work"
mnt=$work/mnt
ntfs3g_pid=""
xfs_loop=""
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && { "$work/prezero" umount "$mnt" 2>/dev/null || umount -l "$mnt"; }
	[ -n "$xfs_loop" ] && losetup -d "$xfs_loop" 2>/dev/null
	[ -n "$ntfs3g_pid" ] && kill "$ntfs3g_pid" 2>/dev/null
	if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$here" && go build -o "$work/prezero" ./cmd/prezero
pz=$work/prezero
cd "$work"
mkdir -p "$mnt"

EXT_MB=${EXT_MB:-1024}
NTFS_MB=${NTFS_MB:-1024}
RAW_MB=${RAW_MB:-256}
XFS_MB=${XFS_MB:-1024}
GONE_MB=${GONE_MB:-640}  # written, then deleted, in each filesystem
KEEP_MB=${KEEP_MB:-96}   # live files in each filesystem
DISK_MB=$((1 + EXT_MB + NTFS_MB + RAW_MB + XFS_MB + 1))

now() { date +%s.%N; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
fill_files() { # DIR MB: random files of up to 64 MiB totalling MB
	mkdir -p "$1"
	local i=0 left=$2
	while ((left > 0)); do
		local n=$((left < 64 ? left : 64))
		head -c "${n}M" /dev/urandom >"$1/f$i.bin"
		i=$((i + 1)) left=$((left - n))
	done
}

echo "== building a ${DISK_MB} MiB GPT image in $work"
# ext4: random bytes, mkfs, live files and big files that are then deleted.
head -c "${EXT_MB}M" /dev/urandom >ext.img
fill_files tree/keep "$KEEP_MB"
fill_files tree/gone "$GONE_MB"
mkfs.ext4 -F -q -E nodiscard -d tree ext.img
for f in tree/gone/*; do echo "rm /gone/$(basename "$f")"; done >rm.debugfs
echo "rmdir /gone" >>rm.debugfs
debugfs -w -f rm.debugfs ext.img >/dev/null 2>&1
rm -rf tree rm.debugfs

# NTFS: random bytes, quick mkntfs, the same files through ntfs-3g.
head -c "${NTFS_MB}M" /dev/urandom >ntfs.img
mkntfs -F -f -Q -q ntfs.img >/dev/null 2>&1
ntfs-3g -o no_detach ntfs.img "$mnt" >/dev/null 2>&1 &
ntfs3g_pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
fill_files "$mnt/keep" "$KEEP_MB"
fill_files "$mnt/gone" "$GONE_MB"
rm -rf "$mnt/gone"
fusermount -u "$mnt"
wait "$ntfs3g_pid"
ntfs3g_pid=""

# XFS: random bytes, mkfs -K (no discard), the same files through a loop
# mount. (The TEST_* variables let mkfs.xfs go below 300 MB for small runs.)
head -c "${XFS_MB}M" /dev/urandom >xfs.img
TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f -K xfs.img
xfs_loop=$(losetup -f --show xfs.img)
mount "$xfs_loop" "$mnt"
fill_files "$mnt/keep" "$KEEP_MB"
fill_files "$mnt/gone" "$GONE_MB"
rm -rf "$mnt/gone"
umount "$mnt"
losetup -d "$xfs_loop"
xfs_loop=""

truncate -s "${DISK_MB}M" disk.img
printf 'label: gpt\nstart=1MiB,size=%dMiB,type=L\nsize=%dMiB,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nsize=%dMiB,type=0FC63DAF-8483-4772-8E79-3D69D8477DE5\nsize=%dMiB,type=L\n' \
	"$EXT_MB" "$NTFS_MB" "$RAW_MB" "$XFS_MB" | sfdisk -q disk.img
dd if=ext.img of=disk.img bs=1M seek=1 conv=notrunc status=none
dd if=ntfs.img of=disk.img bs=1M seek=$((1 + EXT_MB)) conv=notrunc status=none
head -c "${RAW_MB}M" /dev/urandom | dd of=disk.img bs=1M seek=$((1 + EXT_MB + NTFS_MB)) conv=notrunc iflag=fullblock status=none
dd if=xfs.img of=disk.img bs=1M seek=$((1 + EXT_MB + NTFS_MB + RAW_MB)) conv=notrunc status=none
"$pz" map disk.img

echo "== zeroing a copy with zerofree, ntfsclone -O and xfs_copy -d"
cp --sparse=never disk.img zeroed.img
zerofree ext.img
dd if=ext.img of=zeroed.img bs=1M seek=1 conv=notrunc status=none
ntfsclone -q -O ntfs.raw ntfs.img >/dev/null 2>&1
dd if=ntfs.raw of=zeroed.img bs=1M seek=$((1 + EXT_MB)) conv=notrunc status=none
xfs_copy -d xfs.img xfs.copy >/dev/null
truncate -s "${XFS_MB}M" xfs.copy
dd if=xfs.copy of=zeroed.img bs=1M seek=$((1 + EXT_MB + NTFS_MB + RAW_MB)) conv=notrunc status=none
rm -f ext.img ntfs.img ntfs.raw xfs.img xfs.copy
differ=$("$pz" cat disk.img | cmp -l - zeroed.img | wc -l || true)
echo "prezero cat and the zeroed copy differ in $differ bytes (zerofree stamps the superblock)"

# run_borg NAME CMD: runs CMD (which runs borg create --json into $repo)
# three times with a fresh repository and cache, prints the best time and
# keeps the first run's deduplicated size in dedup_NAME, time in time_NAME.
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
repos=${REPO_DIR:-}
if [ -z "$repos" ]; then
	repos=$work
	[ -d /dev/shm ] && repos=$(mktemp -d /dev/shm/prezero-bench.XXXXXX)
fi
trap 'cleanup; [ "$repos" != "$work" ] && rm -rf "$repos"' EXIT
run_borg() {
	local name=$1 cmd=$2 best=999999 dedup="" t0 t1 d
	for i in 1 2 3; do
		rm -rf "$repos/repo" "$repos/borgbase"
		export BORG_BASE_DIR=$repos/borgbase
		borg init -e none "$repos/repo"
		cat disk.img zeroed.img >/dev/null
		t0=$(now)
		repo=$repos/repo bash -c "$cmd" >create.json
		t1=$(now)
		d=$(echo "$t1 - $t0" | bc -l)
		if (($(echo "$d < $best" | bc -l))); then best=$d; fi
		if [ -z "$dedup" ]; then
			dedup=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["archive"]["stats"]["deduplicated_size"])' <create.json)
		fi
	done
	rm -rf "$repos/repo" "$repos/borgbase" create.json
	printf -v "dedup_$name" %s "$dedup"
	printf -v "time_$name" %s "$best"
	printf '%-8s borg create %6.2f s, deduplicated %6d MiB\n' "$name" "$best" $((dedup >> 20))
}
flags="--json --read-special --sparse --chunker-params fixed,4194304"
echo "== borg create (best of 3, fresh repository each)"
run_borg raw "borg create $flags \$repo::a disk.img"
run_borg zeroed "borg create $flags \$repo::a zeroed.img"
"$pz" mount disk.img "$mnt"
run_borg mount "cd $mnt && borg create $flags \$repo::a disk.img"
run_borg prezero "$pz backup disk.img \$repo::a -- --json"

echo "== sequential reads (best of 3)"
best_of() {
	local best=999999 t0 t1 d
	for _ in 1 2 3; do
		t0=$(now)
		bash -c "$1"
		t1=$(now)
		d=$(echo "$t1 - $t0" | bc -l)
		if (($(echo "$d < $best" | bc -l))); then best=$d; fi
	done
	echo "$best"
}
# Two baselines: prezero cat into /dev/null (zeros are never even copied),
# and prezero cat through a pipe, as borg create - would receive it.
declare -A fuse cat catpipe
for p in 1 2 3 4; do
	fuse[$p]=$(best_of "dd if=$mnt/part$p.img of=/dev/null bs=1M status=none")
	cat[$p]=$(best_of "$pz cat disk.img $p >/dev/null")
	catpipe[$p]=$(best_of "$pz cat disk.img $p | dd of=/dev/null bs=1M status=none")
done
"$pz" umount "$mnt"

mib() { echo "scale=0; $1 / 1048576" | bc; }
mbs() { echo "scale=0; $1 / $2 / 1000000" | bc -l; }
part_bytes=("" $((EXT_MB << 20)) $((NTFS_MB << 20)) $((RAW_MB << 20)) $((XFS_MB << 20)))
part_name=("" "ext4, mostly free" "NTFS, mostly free" "unknown, random" "XFS, mostly free")
echo
echo "== results (${DISK_MB} MiB image; goals from the issue)"
printf '%-58s %10s %10s %8s  %s\n' "measure" "prezero" "baseline" "ratio" "goal"
printf '%-58s %10s %10s %8s  %s\n' "borg dedup size, MiB: vs zerofree+ntfsclone+xfs_copy copy" \
	"$(mib "$dedup_prezero")" "$(mib "$dedup_zeroed")" "$(ratio "$dedup_prezero" "$dedup_zeroed")" "<= 1.00"
printf '%-58s %10s %10s %8s  %s\n' "borg dedup size, MiB: vs raw image" \
	"$(mib "$dedup_prezero")" "$(mib "$dedup_raw")" "$(ratio "$dedup_prezero" "$dedup_raw")" "(info)"
printf '%-58s %10.2f %10.2f %8s  %s\n' "borg create time, s: on a prezero mount vs zeroed copy" \
	"$time_mount" "$time_zeroed" "$(ratio "$time_mount" "$time_zeroed")" "<= 1.10"
printf '%-58s %10.2f %10.2f %8s  %s\n' "  the same, prezero backup (+ borg --version, map, mount)" \
	"$time_prezero" "$time_zeroed" "$(ratio "$time_prezero" "$time_zeroed")" "<= 1.10"
printf '%-58s %10.2f %10.2f %8s  %s\n' "borg create time, s: vs raw image" \
	"$time_prezero" "$time_raw" "$(ratio "$time_prezero" "$time_raw")" "well < 1"
for p in 1 2 3 4; do
	printf '%-58s %10s %10s %8s  %s\n' "read MB/s part$p.img (${part_name[$p]}): FUSE dd vs cat" \
		"$(mbs "${part_bytes[$p]}" "${fuse[$p]}")" "$(mbs "${part_bytes[$p]}" "${cat[$p]}")" \
		"$(ratio "${cat[$p]}" "${fuse[$p]}")" ">= 0.70"
done
for p in 1 2 3 4; do
	printf '%-58s %10s %10s %8s  %s\n' "read MB/s part$p.img: FUSE dd vs cat | dd (a pipe)" \
		"$(mbs "${part_bytes[$p]}" "${fuse[$p]}")" "$(mbs "${part_bytes[$p]}" "${catpipe[$p]}")" \
		"$(ratio "${catpipe[$p]}" "${fuse[$p]}")" "(info)"
done
