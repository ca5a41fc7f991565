#!/bin/sh
# Makes the fuzz seed images. Run as root from this directory:  sh mkseed.sh
# Needs mkntfs and ntfs-3g (Debian: ntfs-3g). Free space is zero, not
# random, so that the images compress well.
set -eu
make() { # name size mkntfs-args...
	name=$1 size=$2
	shift 2
	rm -f "$name.img" "$name.img.gz"
	truncate -s "$size" "$name.img"
	mkntfs -F -f -q "$@" "$name.img" >/dev/null 2>&1
	mkdir -p mnt
	ntfs-3g -o no_detach "$name.img" mnt >/dev/null 2>&1 & pid=$!
	until mountpoint -q mnt; do sleep 0.1; done
	mkdir mnt/dir
	yes hello | head -c 20000 >mnt/dir/a.txt
	echo tiny >mnt/tiny.txt
	yes abc | head -c 9000 >mnt/gone.txt
	rm mnt/gone.txt
	for n in $(seq 1 40); do echo "$n" >"mnt/file-$n.txt"; done
	fusermount -u mnt
	wait "$pid"
	rmdir mnt
	gzip -9n "$name.img"
}
make ntfs-c512 2M -c 512
make ntfs-s4096 4M -c 4096 -s 4096
