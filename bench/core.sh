#!/usr/bin/env bash
# Core benchmark for prezero map/cat (ext4 and NTFS), every figure measured
# in this one run so ratios are comparable on a noisy machine:
#   1. cat throughput on a mostly-used image, prezero cat vs plain cat;
#   2. the same on a mostly-free image whose free space holds deleted data;
#   3. map build time and peak RSS on a 4 TiB sparse ext4 and a 2 TiB sparse NTFS.
# Needs root (ntfs-3g mount), e2fsprogs, ntfs-3g, /usr/bin/time.
# Usage: bench/core.sh [WORKDIR]   (about 4 GiB of scratch space)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/prezero-bench.XXXXXX)}
mkdir -p "$work"
mnt=$work/mnt
cleanup() { mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"; rm -rf "$work"; }
trap cleanup EXIT
cd "$here" && go build -o "$work/prezero" ./cmd/prezero
pz=$work/prezero
SIZE_MB=${SIZE_MB:-1024}

now() { date +%s.%N; }
# best_of CMD...: the best wall time of 3 runs of a shell command, seconds.
best_of() {
	local best=999999 t0 t1 d
	for _ in 1 2 3; do
		t0=$(now); bash -c "$1"; t1=$(now)
		d=$(echo "$t1 - $t0" | bc -l)
		if (( $(echo "$d < $best" | bc -l) )); then best=$d; fi
	done
	echo "$best"
}
mbps() { echo "scale=0; $SIZE_MB / $1" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

fill_files() { # DIR MB: random files totalling MB
	mkdir -p "$1"
	local i=0 left=$2
	while (( left > 0 )); do
		local n=$(( left < 64 ? left : 64 ))
		head -c "${n}M" /dev/urandom > "$1/f$i"; i=$((i+1)); left=$((left - n))
	done
}

echo "== building images (${SIZE_MB} MiB each) in $work"
# Mostly used: 85% of the filesystem holds live files.
fill_files "$work/used" $(( SIZE_MB * 85 / 100 ))
truncate -s "${SIZE_MB}M" "$work/used.img"
mkfs.ext4 -F -q -E nodiscard -d "$work/used" "$work/used.img"
rm -rf "$work/used"
# Mostly free: big files written, then deleted; their data stays behind.
head -c "${SIZE_MB}M" /dev/urandom > "$work/free.img"
mkfs.ext4 -F -q -E nodiscard "$work/free.img"
mkdir -p "$mnt" && mount -o loop "$work/free.img" "$mnt"
fill_files "$mnt/junk" $(( SIZE_MB * 80 / 100 )); sync; rm -rf "$mnt/junk"
fill_files "$mnt/keep" $(( SIZE_MB * 5 / 100 )); umount "$mnt"
# NTFS, mostly used.
head -c "${SIZE_MB}M" /dev/urandom > "$work/ntfs.img"
mkntfs -F -f -q "$work/ntfs.img" >/dev/null 2>&1
ntfs-3g "$work/ntfs.img" "$mnt"; fill_files "$mnt/keep" $(( SIZE_MB * 80 / 100 )); umount "$mnt"

for img in used free ntfs; do cat "$work/$img.img" > /dev/null; done # warm the page cache

echo "== throughput (best of 3, page cache warm)"
printf '%-22s %10s %10s %8s\n' image "cat MB/s" "prezero" ratio
for img in used free ntfs; do
	raw=$(best_of "cat '$work/$img.img' > /dev/null")
	pzt=$(best_of "'$pz' cat '$work/$img.img' > /dev/null")
	printf '%-22s %10s %10s %7sx\n' "$img ($("$pz" map --json "$work/$img.img" | python3 -c 'import json,sys; m=json.load(sys.stdin); print("%d%% used" % (100*m["used_bytes"]//m["size"]))'))" \
		"$(mbps "$raw")" "$(mbps "$pzt")" "$(ratio "$raw" "$pzt")"
done
rm -f "$work"/{used,free,ntfs}.img

echo "== map of huge sparse volumes"
truncate -s 4T "$work/big-ext4.img"
mkfs.ext4 -F -q "$work/big-ext4.img"
truncate -s 2T "$work/big-ntfs.img"
mkntfs -F -f -Q -q "$work/big-ntfs.img" >/dev/null 2>&1
printf '%-22s %10s %12s %10s\n' volume "time s" "peak RSS MiB" free
for v in big-ext4 big-ntfs; do
	/usr/bin/time -f '%e %M' -o "$work/time" "$pz" map --json "$work/$v.img" > "$work/map.json"
	read -r secs kb < "$work/time"
	printf '%-22s %10s %12s %10s\n' "$v ($(du -h --apparent-size "$work/$v.img" | cut -f1))" "$secs" "$((kb / 1024))" \
		"$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["zeroable_bytes"]*100//m["size"], "% free")' "$work/map.json")"
done
