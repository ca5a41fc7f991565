#!/usr/bin/env bash
# deps.sh [PACKAGE...]: make sure the Debian packages prezero's tests and
# demo use are installed. The list is .ci/run's apt-get line (the one source
# of truth), unless packages are named. As root, missing packages are
# installed with apt-get; otherwise the exact command is printed and the
# script exits with 2. On a system without dpkg it only warns.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -gt 0 ]; then
	pkgs=("$@")
else
	# The words of .ci/run's "apt-get install" command, minus options.
	mapfile -t pkgs < <(awk '/apt-get install/ {on=1} on {for (i=1;i<=NF;i++) print $i; if ($0 !~ /\\$/) on=0}' "$here/.ci/run" |
		grep -Ev '^(\$SUDO|sudo|apt-get|install|-.*|\\|>.*|2>.*)$')
fi
if ! command -v dpkg-query >/dev/null; then
	echo "deps: no dpkg here; make sure these are installed: ${pkgs[*]}" >&2
	exit 0
fi
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing Debian packages; install them with:" >&2
	echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 2
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
