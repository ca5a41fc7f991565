#!/usr/bin/env bash
# Cross-check cost: `prezero map` time with the cross-check (the default on
# ext without metadata_csum and on NTFS) against --no-crosscheck, in this
# one run, on
#   1. a 2 GiB GPT disk: ext4 (^metadata_csum) and NTFS halves, 60% full;
#   2. an ext4 holding a million small files;
# and, for scale, the time `prezero cat` takes to read the same disk from
# the page cache, and the time a whole `prezero backup` of it takes (borg
# 1, fixed 4 MiB chunks, an unencrypted repository on tmpfs): what the
# cross-check must stay far below.
# Needs root (ntfs-3g, loop mount), e2fsprogs, ntfs-3g, sfdisk, /usr/bin/time.
# Usage: bench/crosscheck.sh [WORKDIR]   env: FILES=1000000   (about 10 minutes)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/prezero-cc.XXXXXX)}
mkdir -p "$work/mnt"
files=${FILES:-1000000}
cleanup() {
	mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
	[ -n "${loop:-}" ] && losetup -d "$loop" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
cd "$here" && go build -o "$work/prezero" ./cmd/prezero
pz=$work/prezero

# best3 CMD...: best wall time of three runs, seconds.
best3() {
	local best=999999 d
	for _ in 1 2 3; do
		/usr/bin/time -f %e -o "$work/t" "$@" >/dev/null
		d=$(cat "$work/t")
		if (( $(echo "$d < $best" | bc -l) )); then best=$d; fi
	done
	echo "$best"
}
# backup IMG: wall time of one `prezero backup` into a fresh repository.
backup() {
	local repos
	repos=$(mktemp -d "${REPO_DIR:-/dev/shm}/prezero-cc.XXXXXX")
	BORG_BASE_DIR=$repos/base borg init -e none "$repos/repo" >/dev/null
	BORG_BASE_DIR=$repos/base /usr/bin/time -f %e -o "$work/t" "$pz" backup "$1" "$repos/repo::a" >/dev/null
	rm -rf "$repos"
	cat "$work/t"
}
report() { # LABEL IMG
	local on off cat bk
	on=$(best3 "$pz" map "$2")
	off=$(best3 "$pz" map --no-crosscheck "$2")
	cat=$(best3 sh -c "'$pz' cat '$2' > /dev/null")
	bk=$(backup "$2")
	printf '  %-20s map %6.2f s, --no-crosscheck %6.2f s (x%.2f); cross-check = %.1f%% of cat (%.2f s, cached), %.1f%% of backup (%.2f s)\n' \
		"$1" "$on" "$off" "$(echo "$on / $off" | bc -l)" "$(echo "($on - $off) * 100 / $cat" | bc -l)" "$cat" \
		"$(echo "($on - $off) * 100 / $bk" | bc -l)" "$bk"
	"$pz" map "$2" | grep -i 'cross-check' || true
}

fill() { # DIR MB: random files totalling MB, 1 to 8 MiB each
	mkdir -p "$1"; local i=0 left=$2
	while (( left > 0 )); do
		local n=$(( 1 + RANDOM % 8 )); n=$(( n < left ? n : left ))
		head -c "${n}M" /dev/urandom > "$1/f$i"; i=$((i+1)); left=$((left - n))
	done
}

echo "== 2 GiB GPT disk: ext4 (^metadata_csum) + NTFS, 60% full"
disk=$work/disk.img
truncate -s 2G "$disk"
printf 'label: gpt\n,1G,L\n,,EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n' | sfdisk -q "$disk"
read -r s1 n1 s2 n2 < <(sfdisk -d "$disk" | awk -F'[=,]' '/start=/ {printf "%s %s ", $2, $4} END {print ""}')
loop=$(losetup -f --show -o $((s1 * 512)) --sizelimit $((n1 * 512)) "$disk")
mkfs.ext4 -F -q -O ^metadata_csum "$loop"; mount "$loop" "$work/mnt"; fill "$work/mnt/d" 600; umount "$work/mnt"
losetup -d "$loop"; loop=$(losetup -f --show -o $((s2 * 512)) --sizelimit $((n2 * 512)) "$disk")
mkntfs -F -f -q "$loop" >/dev/null 2>&1; ntfs-3g "$loop" "$work/mnt"; fill "$work/mnt/d" 600; umount "$work/mnt"
losetup -d "$loop"; loop=
report "2 GiB disk" "$disk"

echo "== ext4 (^metadata_csum) with $files small files"
src=$work/tree; mkdir -p "$src"
python3 - "$src" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range((n + 999) // 1000):
    p = os.path.join(root, "d%04d" % d); os.mkdir(p)
    for i in range(min(1000, n - d * 1000)):
        with open(os.path.join(p, "f%03d" % i), "wb") as f: f.write(b"x" * 100)
PY
img=$work/many.img
truncate -s 8G "$img"
mkfs.ext4 -F -q -O ^metadata_csum,^inline_data -N $((files + 100000)) -d "$src" "$img"
rm -rf "$src"
report "$files files" "$img"
