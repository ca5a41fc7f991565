#!/usr/bin/env bash
# VM-disk benchmark: a disk laid out like a Linux guest's (GPT; ESP FAT32;
# /boot ext4; LVM with root ext4, swap, home XFS and free extents; every byte
# random before the filesystems were made, see scripts/mkvmdisk.sh).
# Reports the nonzero bytes of 'prezero cat --zero-swap' against the sum of
# the used bytes each filesystem's own tool reports (dumpe2fs, xfs_db,
# fsck.fat; one page for swap), and against the raw image. Goal: within 2%.
# Volumes prezero cannot map yet pass through whole and show up as excess.
# And per volume, the nonzero bytes of prezero's stream against the same
# volume zeroed by its peer (zerofree, xfs_copy -d, partclone.fat).
# Needs root, zerofree, partclone. Usage: bench/vmdisk.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/prezero-bench-vm.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cd "$here" && go build -o "$work/prezero" ./cmd/prezero
pz=$work/prezero
img=$work/vm.img

echo "== building a VM-like disk in $work"
"$here/scripts/mkvmdisk.sh" "$img"
"$pz" map --zero-swap "$img"

nonzero() { python3 -c '
import sys
n = 0
f = sys.stdin.buffer
while True:
    b = f.read(1 << 20)
    if not b:
        break
    n += len(b) - b.count(0)
print(n)'; }

used=$(awk '{s += $2} END {print s}' "$img.used")
raw=$(nonzero <"$img")
t0=$(date +%s.%N)
pzn=$("$pz" cat --zero-swap "$img" | nonzero)
t1=$(date +%s.%N)
keep=$("$pz" cat "$img" | nonzero)

echo
echo "== used bytes as the filesystems' tools report them"
awk '{printf "  %-5s %12d\n", $1, $2}' "$img.used"
printf "  %-5s %12d\n" total "$used"
echo
echo "== nonzero bytes"
printf "  %-32s %12d  %6.3fx the used bytes\n" "raw image" "$raw" "$(echo "$raw / $used" | bc -l)"
printf "  %-32s %12d  %6.3fx the used bytes\n" "prezero cat --zero-swap" "$pzn" "$(echo "$pzn / $used" | bc -l)"
printf "  %-32s %12d  %6.3fx the used bytes\n" "prezero cat (swap kept)" "$keep" "$(echo "$keep / $used" | bc -l)"
printf "  prezero cat --zero-swap: %.1f s for the whole disk\n" "$(echo "$t1 - $t0" | bc -l)"

# Served from the source (not proven free), per volume, against the tools:
# used blocks also hold zeros (inode tables, journals, logs), so the
# nonzero count falls below the used bytes; served bytes compare exactly.
echo
echo "== bytes prezero serves from the source (not proven free), per volume"
"$pz" map --zero-swap --json "$img" | python3 -c '
import json, sys
m = json.load(sys.stdin)
used = dict(l.split() for l in open(sys.argv[1]))
names = {"esp": "1", "boot": "2", "root": "vmvg/root", "swap": "vmvg/swap_1", "home": "vmvg/home"}
rows = {}
for p in m["partitions"]:
    rows[str(p["number"])] = p
    for v in p.get("volumes", []):
        rows[v["lv"]] = v
tot = 0
for name, key in names.items():
    r = rows[key]
    u = int(used[name])
    tot += u
    ub, st = r["used_bytes"], r["status"][:60]
    print(f"  {name:5} {key:12} served {ub:11d}  tool {u:11d}  {ub / u:7.3f}x  {st}")
served = m["used_bytes"]
print(f"  whole disk: served {served} bytes, {served / tot:.4f}x the used bytes ({100 * (served - tot) / tot:+.2f}%; goal: within 2%)")
inside = sum(rows[k]["used_bytes"] for k in names.values())
print(f"  outside the filesystems: {served - inside} bytes (partition table, LVM label and metadata, gaps)")
' "$img.used"

# The peers' zeroed copy of each volume is the floor: zerofree (ext4),
# xfs_copy -d (XFS: copies only what is used), partclone.fat (FAT), the
# header page alone (swap). Nonzero bytes of prezero's stream against it.
echo
echo "== nonzero bytes per volume: prezero cat --zero-swap against the peers' zeroed copy"
"$pz" map --zero-swap --json "$img" | python3 -c '
import json, sys
m = json.load(sys.stdin)
names = {"1": "esp", "2": "boot", "vmvg/root": "root", "vmvg/swap_1": "swap", "vmvg/home": "home"}
for p in m["partitions"]:
    for v in [p] + p.get("volumes", []):
        key = v.get("lv") or str(v["number"])
        if key in names and (key == v.get("lv") or "lv" not in v):
            print(names[key], key, v["start"], v["size"])
' >"$work/vols"
vol=$work/vol peer=$work/peer
tot_pz=0 tot_peer=0
while read -r name what start size; do
	dd if="$img" of="$vol" bs=1M iflag=skip_bytes,count_bytes skip="$start" count="$size" status=none
	rm -f "$peer"
	case $name in
	esp) truncate -s "$size" "$peer"; partclone.fat -q -b -s "$vol" -O "$peer" -L /dev/null >/dev/null 2>&1 ;;
	boot | root) zerofree "$vol" && mv "$vol" "$peer" ;;
	home) xfs_copy -d "$vol" "$peer" >/dev/null && truncate -s "$size" "$peer" ;;
	swap) head -c 4096 "$vol" >"$peer" && truncate -s "$size" "$peer" ;;
	esac
	a=$("$pz" cat --zero-swap "$img" "$what" | nonzero)
	b=$(nonzero <"$peer")
	tot_pz=$((tot_pz + a)) tot_peer=$((tot_peer + b))
	printf "  %-5s %-12s prezero %11d  peer %11d  %7.4fx\n" "$name" "$what" "$a" "$b" "$(echo "$a / $b" | bc -l)"
done <"$work/vols"
rm -f "$vol" "$peer"
printf "  all volumes        prezero %11d  peer %11d  %7.4fx (%+.2f%%; goal: within 2%%)\n" "$tot_pz" "$tot_peer" \
	"$(echo "$tot_pz / $tot_peer" | bc -l)" "$(echo "100 * ($tot_pz - $tot_peer) / $tot_peer" | bc -l)"
