#!/usr/bin/env bash
# Makes the seed PVs of lvm's tests with the real lvm2 tools (root, loop
# devices, no device-mapper needed). Only each PV's first MiB (label and
# metadata area) is kept; lvs.txt is lvm's own report of the segments.
#   pv0.img.gz, pv1.img.gz  two PVs of VG "seedvg": linear "root" in two
#                           segments, striped "data" over both, "my-swap"
#   wrapped.img.gz          one PV whose metadata has wrapped around its
#                           circular buffer (VG "wrapvg", LV "w")
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
loops=()
trap 'for l in "${loops[@]}"; do losetup -d "$l"; done; rm -rf "$tmp"' EXIT
newloop() { truncate -s 32M "$tmp/$1"; l=$(losetup -f --show "$tmp/$1"); loops+=("$l"); echo "$l"; }
a=$(newloop a); b=$(newloop b); w=$(newloop w)
C="devices{filter=[\"a|^$a\$|\",\"a|^$b\$|\",\"a|^$w\$|\",\"r|.*|\"] use_devicesfile=0} global{activation=0} activation{udev_sync=0 udev_rules=0} backup{backup=0 archive=0}"
lvm() { "$@" --config "$C" 2>/dev/null >/dev/null; }
lvm pvcreate -y "$a" "$b"
lvm vgcreate -s 1m seedvg "$a" "$b"
lvm lvcreate -an -Zn -y -L 8m -n root seedvg "$a"
lvm lvcreate -an -Zn -y -L 2m -n gap seedvg "$a"
lvm lvextend -y -L +4m seedvg/root "$a"
lvm lvcreate -an -Zn -y -i2 -I64k -L 8m -n data seedvg "$a" "$b"
lvm lvcreate -an -Zn -y -L 4m -n my-swap seedvg "$b"
lvs --config "$C" -a --noheadings --separator ';' -o lv_name,seg_start_pe,seg_pe_ranges,stripes,stripe_size --units b --nosuffix seedvg 2>/dev/null |
	sed "s|$a|pv0|g; s|$b|pv1|g; s/^ *//" >lvs.txt
lvm pvcreate -y --metadatasize 32k --dataalignment 64k "$w"
lvm vgcreate -s 1m wrapvg "$w"
lvm lvcreate -an -Zn -y -L 4m -n w wrapvg
wraps() { # does the committed metadata run past the end of the mda?
	python3 -c 'import struct,sys; h=open(sys.argv[1],"rb").read(4096+64)[4096:]; s=struct.unpack_from("<Q",h,32)[0]; o,n=struct.unpack_from("<QQ",h,40); sys.exit(0 if o+n>s else 1)' "$w"
}
for i in $(seq 200); do
	lvm lvchange --addtag "a_long_tag_to_make_the_metadata_grow_$i" wrapvg/w
	wraps && break
done
wraps
for x in a:pv0 b:pv1 w:wrapped; do
	dd if="$tmp/${x%%:*}" bs=1M count=1 status=none | gzip -9 >"${x#*:}.img.gz"
done
lvm vgremove -f seedvg wrapvg
