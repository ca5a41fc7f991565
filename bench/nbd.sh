#!/usr/bin/env bash
# Reading a qcow2 through prezero (qemu-nbd + prezero's NBD client, the
# data clusters read in place where qemu-img map puts them) against qemu's
# own readers, all measured in this one run so the ratios are comparable on
# a noisy machine: best of 3 each, once with the page cache warm, and once
# cold (sync and drop_caches before every run; needs root, else skipped):
#   prezero cat X.qcow2 > /dev/null
#   qemu-img convert -n X.qcow2 --target-image-opts driver=null-co,size=N
#       (qemu-img cannot convert to /dev/null: "Cannot grow device files";
#        the null-co driver discards what is written, so this is pure reading)
#   nbdcopy -- [ qemu-nbd -r -f qcow2 X.qcow2 ] null:
# Targets (issue 13): prezero no slower than qemu-img convert, and at most
# 1.3x nbdcopy. The image is a GPT disk with one ext4 that is 85% used
# (random files), so prezero zeroes little and reads nearly all of it.
# Needs qemu-utils, libnbd-bin (nbdcopy), e2fsprogs, fdisk, bc.
# Usage: bench/nbd.sh [WORKDIR]   (about 3x SIZE_MB of scratch space)
#        PZ_OTHER=/path/to/prezero bench/nbd.sh   also times another build
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/prezero-nbd-bench.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cd "$here" && go build -o "$work/prezero" ./cmd/prezero
pz=$work/prezero
SIZE_MB=${SIZE_MB:-1024}

now() { date +%s.%N; }
cold=false
drop() { # empty the page cache before a cold run
	if $cold; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
}
best_of() { # the best wall time of 3 runs of a shell command, seconds
	local best=999999 t0 t1 d
	for _ in 1 2 3; do
		drop
		t0=$(now); bash -c "$1"; t1=$(now)
		d=$(echo "$t1 - $t0" | bc -l)
		if (( $(echo "$d < $best" | bc -l) )); then best=$d; fi
	done
	echo "$best"
}
mbps() { echo "scale=0; $SIZE_MB / $1" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

echo "== building a ${SIZE_MB} MiB qcow2 in $work"
part_mb=$(( SIZE_MB - 2 ))
mkdir -p "$work/files"
left=$(( part_mb * 85 / 100 )); i=0
while (( left > 0 )); do
	n=$(( left < 64 ? left : 64 ))
	head -c "${n}M" /dev/urandom > "$work/files/f$i"; i=$((i+1)); left=$((left - n))
done
truncate -s "${part_mb}M" "$work/part.img"
mkfs.ext4 -F -q -E nodiscard -d "$work/files" "$work/part.img"
rm -rf "$work/files"
truncate -s "${SIZE_MB}M" "$work/disk.raw"
printf 'label: gpt\nstart=2048,size=%d,type=L\n' $(( part_mb * 2048 )) | sfdisk -q "$work/disk.raw"
dd if="$work/part.img" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$work/part.img"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
rm -f "$work/disk.raw"
img=$work/disk.qcow2
size=$(qemu-img info --output=json "$img" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
cat "$img" > /dev/null # warm the page cache
"$pz" map "$img"

measure() {
	t_pz=$(best_of "'$pz' cat '$img' > /dev/null")
	t_conv=$(best_of "qemu-img convert -n '$img' --target-image-opts driver=null-co,size=$size")
	t_copy=$(best_of "nbdcopy -- [ qemu-nbd -r -f qcow2 '$img' ] null:")

	echo "== reading a ${SIZE_MB} MiB qcow2, page cache $1 (best of 3, seconds, MiB/s)"
	printf '%-40s %8.2f s %6s MiB/s\n' "prezero cat > /dev/null" "$t_pz" "$(mbps "$t_pz")"
	printf '%-40s %8.2f s %6s MiB/s\n' "qemu-img convert -> null-co" "$t_conv" "$(mbps "$t_conv")"
	printf '%-40s %8.2f s %6s MiB/s\n' "nbdcopy [ qemu-nbd ] null:" "$t_copy" "$(mbps "$t_copy")"
	r_conv=$(ratio "$t_pz" "$t_conv"); r_copy=$(ratio "$t_pz" "$t_copy")
	echo "prezero / qemu-img convert: $r_conv (target <= 1.00)"
	echo "prezero / nbdcopy:          $r_copy (target <= 1.30)"
	if [ -n "${PZ_OTHER:-}" ]; then # another prezero build, to compare
		t_other=$(best_of "'$PZ_OTHER' cat '$img' > /dev/null")
		printf '%-40s %8.2f s %6s MiB/s  (%s x qemu-img convert)\n' "$PZ_OTHER cat" "$t_other" "$(mbps "$t_other")" "$(ratio "$t_other" "$t_conv")"
	fi
}
measure warm
if [ "$(id -u)" = 0 ]; then
	cold=true
	measure cold
else
	echo "== cold cache runs skipped: dropping the page cache needs root"
fi
