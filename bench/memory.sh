#!/usr/bin/env bash
# Memory benchmark: the worst case for a free map, a filesystem whose every
# other block is allocated, at 256 GiB and 4 TiB (sparse files), ext4 and
# NTFS. Reports the time and peak RSS of `prezero map` and `prezero cat`,
# against the baseline commit BASE (the extent-list freemap, before the
# memory bound), in this one run. The baseline is skipped where it would
# need more memory than the machine has (it grows by ~12 MiB per GiB).
# Then the cost of coarsening: borg's stored size of a fragmented image
# whose free blocks hold deleted data, exact map against a tiny
# --max-map-memory that forces coarsening.
# Needs root (ntfs-3g), e2fsprogs, ntfs-3g, borg, /usr/bin/time.
# Usage: bench/memory.sh [WORKDIR]     env: BASE=6c00cd7 SIZES="256G 4T"
# Takes about 15 minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/prezero-mem.XXXXXX)}
mkdir -p "$work"
base=${BASE:-6c00cd7}
sizes=${SIZES-256G 4T}
cleanup() {
	mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
	git -C "$here" worktree remove --force "$work/base-src" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
cd "$here"
go build -o "$work/prezero" ./cmd/prezero
go build -o "$work/fragment" ./bench/fragment
git worktree add -q --detach "$work/base-src" "$base"
(cd "$work/base-src" && go build -o "$work/prezero-base" ./cmd/prezero)
mem_kib=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)

# measure LABEL CMD...: prints "LABEL: S s, RSS MiB".
measure() {
	local label=$1; shift
	/usr/bin/time -f "%e %M" -o "$work/t" "$@" >/dev/null
	read -r s kib < "$work/t"
	printf '  %-28s %8.1f s %8d MiB\n' "$label" "$s" $((kib / 1024))
}

make_ext4() { # IMG SIZE
	truncate -s "$2" "$1"
	mkfs.ext4 -F -q -O ^metadata_csum,^uninit_bg -N 65536 -E nodiscard "$1"
	"$work/fragment" ext4 "$1"
}
make_ntfs() { # IMG SIZE
	truncate -s "$2" "$1"
	mkntfs -F -f -q "$1" >/dev/null 2>&1
	local cs lcn len
	cs=$(ntfsinfo -m "$1" 2>/dev/null | awk '/Cluster Size:/ {print $3; exit}')
	read -r lcn len < <(ntfsinfo -v -i 6 "$1" 2>/dev/null | awk '/Runlist:/ {getline; print $2, $3; exit}')
	"$work/fragment" bytes "$1" $((lcn * cs)) $((len * cs))
}

for size in $sizes; do
	for fs in ext4 ntfs; do
		img=$work/$fs-$size.img
		"make_$fs" "$img" "$size"
		bytes=$(stat -c %s "$img")
		echo "== $fs $size, every other block allocated"
		"$work/prezero" map "$img" | tail -n +2
		measure "map (memory bound)" "$work/prezero" map "$img"
		# The baseline needs ~12 MiB of map per GiB of volume.
		need_kib=$(( bytes / 1024 / 1024 / 1024 * 13 * 1024 * 2 ))
		if (( need_kib < mem_kib / 2 )); then
			measure "map (baseline $base)" "$work/prezero-base" map "$img"
		else
			echo "  map (baseline $base)          not run: would need ~$((need_kib / 2 / 1024 / 1024)) GiB"
		fi
		# cat: the first 8 GiB of the stream (every other 4 KiB block is a
		# separate read, so a whole 256 GiB stream takes most of an hour;
		# the peak RSS is reached when the map is built).
		lim=$(( 8 << 30 ))
		measure "cat $((lim >> 30)) GiB (memory bound)" sh -c "'$work/prezero' cat '$img' | head -c $lim"
		if (( need_kib < mem_kib / 2 )); then
			measure "cat $((lim >> 30)) GiB (baseline)" sh -c "'$work/prezero-base' cat '$img' | head -c $lim"
		fi
		rm -f "$img"
	done
done

echo "== the cost of coarsening (borg stored size)"
# 2 GiB ext4, random data first, then every other block allocated: the free
# blocks hold old data, as a used disk's do.
img=$work/coarse.img
head -c 2G /dev/urandom > "$img"
mkfs.ext4 -F -q -O ^metadata_csum,^uninit_bg -N 4096 -E nodiscard "$img"
"$work/fragment" ext4 "$img"
export BORG_REPO=$work/repo BORG_PASSPHRASE= BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
borg init -e none >/dev/null
for lim in 256MiB 64KiB; do
	"$work/prezero" map --max-map-memory "$lim" "$img" | grep -E 'coarsened' || true
	"$work/prezero" cat --max-map-memory "$lim" "$img" |
		borg create --chunker-params fixed,4194304 --compression lz4 --stats "::m$lim" - 2>&1 |
		awk -v l="$lim" '/This archive:/ {print "  --max-map-memory " l ": stored " $(NF-1), $NF " (deduplicated)"}'
done
