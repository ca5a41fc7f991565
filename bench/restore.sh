#!/usr/bin/env bash
# Restore benchmark: a 1 GiB stream that is 70% zeros (runs of 4 KiB to
# 16 MiB, fully allocated on disk, as borg extract --stdout would deliver
# it), every figure measured in this one run so ratios are comparable:
#   1. onto a loop device pre-filled with random bytes: prezero restore
#      (--input, and from a pipe) vs dd bs=1M, dd bs=1M conv=sparse (fast
#      but leaves the old bytes in place: shown as DIFFERS), dd bs=1M
#      oflag=direct and cat | dd, all ending with fsync; each result is
#      compared with the stream;
#   2. onto a new file: prezero restore vs cp --sparse=always (+ sync FILE).
# Each timing is the median of RUNS (5) runs, with min and max; before each
# device run the device is refilled with random bytes and re-attached, so
# every run starts alike.
# Needs root (losetup), coreutils, python3, bc.
# Usage: [RUNS=5] [SIZE_MB=1024] [ZERO_PCT=70] bench/restore.sh [WORKDIR]
#        (about 4 GiB of scratch space)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/prezero-restore-bench.XXXXXX)}
mkdir -p "$work"
dev=""
cleanup() { [ -n "$dev" ] && losetup -d "$dev" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$here" && go build -o "$work/prezero" ./cmd/prezero
pz=$work/prezero
SIZE_MB=${SIZE_MB:-1024}
ZERO_PCT=${ZERO_PCT:-70}

now() { date +%s.%N; }
RUNS=${RUNS:-5}
# median_of SETUP CMD: runs CMD $RUNS times, each after SETUP, and prints
# "MEDIAN MIN MAX" wall seconds. The median, not the best: on a shared VM a
# write-back cache below the loop device makes single runs very uneven.
median_of() {
	local t0 t1 ts=()
	for _ in $(seq "$RUNS"); do
		bash -c "$1"
		t0=$(now); bash -c "$2"; t1=$(now)
		ts+=("$(echo "$t1 - $t0" | bc -l)")
	done
	printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%s %s %s\n", a[int((NR+1)/2)], a[1], a[NR]}'
}
mbps() { echo "scale=0; $SIZE_MB / $1" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

echo "== building a ${SIZE_MB} MiB stream, ${ZERO_PCT}% zeros, in $work"
python3 - "$work/stream.img" "$SIZE_MB" "$ZERO_PCT" <<'EOF'
import math, os, random, sys
path, size, pct = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3]) / 100
rnd = random.Random(42)
blk, zeros, left = 4096, 0, size
with open(path, "wb") as f:
    while left > 0:
        # log-uniform run lengths, 4 KiB .. 16 MiB, whole blocks
        n = min(left, blk * int(math.exp(rnd.uniform(0, math.log(4096)))))
        if rnd.random() < pct:
            f.write(bytes(n)); zeros += n
        else:
            f.write(os.urandom(n))
        left -= n
print("stream: %d bytes, %.1f%% zeros" % (size, 100 * zeros / size))
EOF
size=$(stat -c %s "$work/stream.img")
head -c "$size" /dev/urandom > "$work/random.img"          # the device's old contents
cp "$work/random.img" "$work/backing.img"
cat "$work/stream.img" "$work/random.img" > /dev/null       # warm the page cache

# fresh_device: refill the backing file with random bytes and re-attach it.
cat > "$work/fresh.sh" <<EOF
set -e
[ -e "$work/dev" ] && losetup -d "\$(cat $work/dev)" 2>/dev/null || true
cp --sparse=never "$work/random.img" "$work/backing.img"
sync "$work/backing.img"
losetup -f --show "$work/backing.img" > "$work/dev"
EOF
check_device() { # NAME: compare the device (through its backing file) with the stream
	losetup -d "$(cat "$work/dev")"; rm -f "$work/dev"
	if cmp -s -n "$size" "$work/stream.img" "$work/backing.img"; then echo "identical"
	else echo "DIFFERS ($(cmp -l -n "$size" "$work/stream.img" "$work/backing.img" | wc -l) bytes stale)"; fi
}
D='$(cat '"$work"'/dev)'

echo "== onto a loop device pre-filled with random bytes (median of $RUNS, with fsync)"
printf '%-34s %6s %13s %6s  %s\n' method seconds "(min-max)" "MB/s" result
declare -A T
run_dev() { # NAME CMD
	local t lo hi; read -r t lo hi < <(median_of "bash $work/fresh.sh" "$2"); T["dev:$1"]=$t
	printf '%-34s %6.2f (%5.2f-%5.2f) %6s  %s\n' "$1" "$t" "$lo" "$hi" "$(mbps "$t")" "$(check_device)"
}
run_dev "dd bs=1M" "dd if=$work/stream.img of=$D bs=1M conv=fsync status=none"
run_dev "dd bs=1M conv=sparse" "dd if=$work/stream.img of=$D bs=1M conv=sparse,fsync status=none"
run_dev "dd bs=1M oflag=direct" "dd if=$work/stream.img of=$D bs=1M oflag=direct conv=fsync status=none"
run_dev "cat | dd bs=1M (pipe)" "cat $work/stream.img | dd of=$D bs=1M iflag=fullblock conv=fsync status=none"
run_dev "prezero restore --input" "$pz restore --input $work/stream.img $D 2>/dev/null"
run_dev "cat | prezero restore (pipe)" "cat $work/stream.img | $pz restore --expect-size $size $D 2>/dev/null"
bash "$work/fresh.sh"; "$pz" restore --input "$work/stream.img" "$(cat "$work/dev")" 2>&1 | sed 's/^/    /'; losetup -d "$(cat "$work/dev")"; rm -f "$work/dev"

echo "== onto a new file (median of $RUNS; cp followed by 'sync FILE' to match prezero's fsync)"
printf '%-34s %6s %13s %6s  %s\n' method seconds "(min-max)" "MB/s" "allocated MiB"
run_file() { # NAME CMD
	local t lo hi; read -r t lo hi < <(median_of "rm -f $work/out.img; sync" "$2"); T["file:$1"]=$t
	local ok="identical"; cmp -s "$work/stream.img" "$work/out.img" || ok="DIFFERS"
	printf '%-34s %6.2f (%5.2f-%5.2f) %6s  %s, %s\n' "$1" "$t" "$lo" "$hi" "$(mbps "$t")" "$(( $(stat -c %b "$work/out.img") * 512 >> 20 ))" "$ok"
}
run_file "cp --sparse=always" "cp --sparse=always $work/stream.img $work/out.img"
run_file "cp --sparse=always + sync FILE" "cp --sparse=always $work/stream.img $work/out.img && sync $work/out.img"
run_file "prezero restore --input" "$pz restore --input $work/stream.img $work/out.img 2>/dev/null"
run_file "cat | prezero restore (pipe)" "cat $work/stream.img | $pz restore $work/out.img 2>/dev/null"

echo "== ratios from this run"
echo "device (dd time / prezero time; goal >= 3):"
printf '%-48s %6sx\n' "  dd bs=1M / prezero --input" "$(ratio "${T[dev:dd bs=1M]}" "${T[dev:prezero restore --input]}")"
printf '%-48s %6sx\n' "  cat | dd bs=1M / cat | prezero (both piped)" "$(ratio "${T[dev:cat | dd bs=1M (pipe)]}" "${T[dev:cat | prezero restore (pipe)]}")"
printf '%-48s %6sx\n' "  dd bs=1M oflag=direct / prezero --input" "$(ratio "${T[dev:dd bs=1M oflag=direct]}" "${T[dev:prezero restore --input]}")"
printf '%-48s %6sx\n' "  dd bs=1M conv=sparse (stale bytes!) / prezero" "$(ratio "${T[dev:dd bs=1M conv=sparse]}" "${T[dev:prezero restore --input]}")"
echo "file (prezero time / cp time; goal <= 1.0):"
printf '%-48s %6s\n' "  prezero --input / cp --sparse=always" "$(ratio "${T[file:prezero restore --input]}" "${T[file:cp --sparse=always]}")"
printf '%-48s %6s\n' "  prezero --input / (cp + sync FILE)" "$(ratio "${T[file:prezero restore --input]}" "${T[file:cp --sparse=always + sync FILE]}")"
printf '%-48s %6s\n' "  prezero from a pipe / (cp + sync FILE)" "$(ratio "${T[file:cat | prezero restore (pipe)]}" "${T[file:cp --sparse=always + sync FILE]}")"
