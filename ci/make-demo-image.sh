#!/usr/bin/env bash
# Build a tiny OCI image layout holding Debian's static busybox.
#
# Usage: ci/make-demo-image.sh OUTDIR [WWWDIR]
#
# OUTDIR becomes an OCI image layout (oci-layout, index.json, blobs/) with one
# image whose ref name annotation is `busybox:latest`, so that
# `berth image import OUTDIR` stores it as `busybox:latest` without --name.
# The image holds /bin/busybox with a symlink for every applet, /www/index.html
# (the contents of WWWDIR when given; a default index.html when it has none),
# /tmp (1777), /etc/passwd and /etc/group with root and nobody. Its config runs
# /bin/sh with PATH=/bin.
#
# Needs: umoci, jq, busybox-static (/bin/busybox). Run as root (umoci keeps
# file ownership only when it runs as root). OUTDIR is removed first, so the
# script is idempotent.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 OUTDIR [WWWDIR]" >&2
    exit 2
fi

out=$1
www=${2:-}
busybox=${BUSYBOX:-/bin/busybox}

for tool in umoci jq; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is required (apt-get install $tool)" >&2; exit 1; }
done
if ! "$busybox" --list >/dev/null 2>&1; then
    echo "$0: $busybox is not a working busybox (apt-get install busybox-static)" >&2
    exit 1
fi
if [[ -n $www && ! -d $www ]]; then
    echo "$0: WWWDIR $www is not a directory" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-demo-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

rm -rf "$out"
mkdir -p "$(dirname "$out")"

umoci init --layout "$out"
umoci new --image "$out:latest"
umoci config --image "$out:latest" \
    --config.cmd=/bin/sh \
    --config.env=PATH=/bin \
    --config.workingdir=/ \
    --history.created_by="ci/make-demo-image.sh (config)"
umoci unpack --image "$out:latest" "$work/bundle"

root=$work/bundle/rootfs
install -d -m 0755 "$root/bin" "$root/etc" "$root/www" "$root/root"
install -d -m 1777 "$root/tmp"
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] && continue
    ln -sf busybox "$root/bin/$applet"
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"

if [[ -n $www ]]; then
    cp -R "$www/." "$root/www/"
fi
if [[ ! -f $root/www/index.html ]]; then
    cat >"$root/www/index.html" <<'EOF'
<!doctype html>
<html><head><title>Berth demo</title></head>
<body><h1>Hello from Berth</h1><p>Served by busybox httpd.</p></body></html>
EOF
fi
chmod -R a+rX "$root/www"

umoci repack --image "$out:latest" \
    --history.created_by="ci/make-demo-image.sh (busybox rootfs)" \
    "$work/bundle"
umoci gc --layout "$out"

# umoci names the image by its tag alone ("latest"); give it a full
# repo:tag name so an import without --name knows what to call it.
jq '(.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "latest")
     | .annotations["org.opencontainers.image.ref.name"]) = "busybox:latest"' \
    "$out/index.json" >"$work/index.json"
install -m 0644 "$work/index.json" "$out/index.json"

echo "demo image busybox:latest written to $out"
