#!/usr/bin/env bash
# Journal replay benchmark: prezero map of a 1 TiB sparse ext4 whose 1 GiB
# journal is as full as jbd2 lets it get (a crash-consistent copy taken
# while mounted, after 1600 MiB of fsync'd data=journal writes: the log has
# wrapped, and jbd2 checkpoints to keep about a third of it free), against
# map of the same filesystem clean (after umount), both measured in this
# one run, each the median of 3 runs.
# Replay is in memory and must grow with the journal, not the disk.
# Needs root (loop mount), e2fsprogs, /usr/bin/time, python3.
# Usage: bench/journal.sh [WORKDIR]   (about 2 GiB of scratch space)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/prezero-journal.XXXXXX)}
mkdir -p "$work"
mnt=$work/mnt
dev=
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
	[ -n "$dev" ] && losetup -d "$dev" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
cd "$here" && go build -o "$work/prezero" ./cmd/prezero
pz=$work/prezero
DATA_MB=${DATA_MB:-1600}

echo "== 1 TiB sparse ext4, 1 GiB journal, ${DATA_MB} MiB of fsync'd data=journal writes"
truncate -s 1T "$work/big.img"
mkfs.ext4 -F -q -J size=1024 "$work/big.img"
dev=$(losetup -f --show "$work/big.img")
mkdir -p "$mnt"
# Random data made beforehand, so that the writes, and the copy, take well
# under the 30 s after which writeback would checkpoint the log away.
head -c 128M /dev/urandom > "$work/rand"
mount -o commit=600,data=journal "$dev" "$mnt"
left=$DATA_MB i=0
while (( left > 0 )); do
	n=$(( left < 16 ? left : 16 ))
	dd if="$work/rand" of="$mnt/f$i" bs=4M count=$(( n / 4 )) conv=fsync status=none
	i=$((i+1)); left=$((left - n))
done
cp --sparse=always "$work/big.img" "$work/crash.img" # while mounted
umount "$mnt"
losetup -d "$dev"; dev=

measure() { # IMG NAME: map time and peak RSS, the median of 3 runs
	for r in 1 2 3; do
		/usr/bin/time -f '%e %M' -o "$work/time" "$pz" map --json "$1" > "$work/$2.json"
		cat "$work/time"
	done | sort -n | sed -n 2p
}
read -r csecs ckb < <(measure "$work/big.img" clean)
read -r jsecs jkb < <(measure "$work/crash.img" crash)
python3 - "$work/crash.json" "$csecs" "$ckb" "$jsecs" "$jkb" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
p = m["partitions"][0]
j = p.get("journal") or {}
cs, ckb, js, jkb = float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
print("crash copy: %s" % p["status"])
if j:
    print("journal: %d transactions, %d blocks replayed, %d logged copies (%.0f%% of the %d MiB journal), wrapped %s" % (
        j["transactions"], j["blocks"], j["logged_copies"],
        100.0 * j["logged_copies"] * p["block_size"] / j["journal_bytes"], j["journal_bytes"] >> 20, j["wrapped"]))
print("%-28s %8s %14s" % ("map of", "time s", "peak RSS MiB"))
print("%-28s %8.2f %14d" % ("clean (after umount)", cs, ckb // 1024))
print("%-28s %8.2f %14d" % ("crash copy (replay)", js, jkb // 1024))
print("ratio replay/clean: time %.1fx, peak RSS %.1fx" % (js / max(cs, 0.01), jkb / max(ckb, 1)))
EOF
