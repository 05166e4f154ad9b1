#!/bin/sh
# Lays out the files of the medic-server image under OUT, for the runtime stage of the
# Dockerfile (which copies them into an empty `FROM scratch` image):
#
#   OUT/rootfs/  owned by root, read-only for the server: the static binary, the CA bundle,
#                /etc/passwd and /etc/group naming the unprivileged user, an empty /tmp
#   OUT/data/    the data directory, copied with the ownership of that user (uid/gid 1000)
#
# The Dockerfile's builder stage runs it on the binary it compiles; .ci/check-image runs it on a
# binary built outside Docker. Both then build the same runtime stage.
#
# usage: docker/rootfs.sh OUT BINARY CA_BUNDLE
set -eu

if [ $# -ne 3 ]; then
  echo "usage: $0 OUT BINARY CA_BUNDLE" >&2
  exit 64
fi
out=$1 binary=$2 ca_bundle=$3

rm -rf "$out/rootfs" "$out/data"
install -D -m 0755 "$binary" "$out/rootfs/usr/local/bin/medic-server"
install -D -m 0644 "$ca_bundle" "$out/rootfs/etc/ssl/certs/ca-certificates.crt"
# No shell and no login: the entries only give the uid/gid a name (for ps, logs, tools).
printf '%s\n' \
  'root:x:0:0:root:/root:/sbin/nologin' \
  'medic:x:1000:1000:Medic server:/data:/sbin/nologin' >"$out/rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'medic:x:1000:' >"$out/rootfs/etc/group"
chmod 0644 "$out/rootfs/etc/passwd" "$out/rootfs/etc/group"
# Mount point for a tmpfs (Kubernetes mounts an emptyDir there; the root stays read-only).
install -d -m 1777 "$out/rootfs/tmp"
install -d -m 0750 "$out/data"
