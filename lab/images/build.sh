#!/usr/bin/env bash
# Build a lab base image: a Debian rootfs by debootstrap, imported into the local Docker engine,
# systemd as PID 1, python3 (+apt bindings) and sudo, the build host's CA bundle trusted.
# The tag carries a hash of the recipe (this script, the suite, the CA bundle), so a warm run
# that finds the tag does nothing.  Usage: build.sh SUITE  (bookworm, trixie)
set -euo pipefail
suite=${1:?usage: build.sh SUITE}
mirror=${CLUSTERHUB_LAB_MIRROR:-http://deb.debian.org/debian}
ca_bundle=${CLUSTERHUB_LAB_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
cache=${CLUSTERHUB_LAB_CACHE:-/var/cache/clusterhub-lab}
packages=python3,python3-apt,systemd,systemd-sysv,dbus,sudo,iproute2,ca-certificates,procps,less

here=$(cd "$(dirname "$0")" && pwd)
hash=$( { cat "$here/build.sh"; echo "$suite $mirror $packages"; cat "$ca_bundle" 2>/dev/null; } \
        | sha256sum | cut -c1-12)
repo=clusterhub-lab/debian
tag="$repo:$suite-$hash"

if docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" "$repo:$suite"
  echo "lab image $tag is current"
  exit 0
fi

echo "lab image $tag: building (debootstrap $suite)"
rootfs=$(mktemp -d "/var/tmp/clusterhub-rootfs-$suite.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$cache/debootstrap/$suite"
debootstrap --variant=minbase --cache-dir="$cache/debootstrap/$suite" \
  --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# Trust the build host's CAs (TLS-inspecting proxies); update-ca-certificates appends the bundle.
if [ -f "$ca_bundle" ]; then
  install -m 0644 "$ca_bundle" "$rootfs/usr/local/share/ca-certificates/clusterhub-build-host.crt"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
# Containers get their own machine-id at boot; no consoles or hardware services in a container.
: >"$rootfs/etc/machine-id"
for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
            systemd-modules-load.service systemd-remount-fs.service sys-kernel-debug.mount \
            sys-kernel-tracing.mount systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# Devices as udev leaves them on a real node. A container gets the devices the lab passes in with the
# build host's modes, and a host without udev (a fresh CI machine) has /dev/fuse at 0600 root: every
# unprivileged SIF mount would then fail ("squashfuse_ll: failed to open /dev/fuse: Permission denied").
# udev's default rules make /dev/fuse 0666 and the loop devices 0660 root:disk; this unit applies the
# same at each boot of the container (a restart recreates /dev), before any service or job runs.
cat >"$rootfs/etc/systemd/system/clusterhub-lab-devices.service" <<'UNIT'
[Unit]
Description=clusterhub lab: device modes as udev's default rules set them on a real node
DefaultDependencies=no
After=systemd-tmpfiles-setup-dev.service
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'if [ -c /dev/fuse ]; then chmod 0666 /dev/fuse; fi; for d in /dev/loop-control /dev/loop[0-9]*; do if [ -b "$d" ] || [ -c "$d" ]; then chgrp disk "$d" && chmod 0660 "$d"; fi; done'

[Install]
WantedBy=sysinit.target
UNIT
mkdir -p "$rootfs/etc/systemd/system/sysinit.target.wants"
ln -sf ../clusterhub-lab-devices.service "$rootfs/etc/systemd/system/sysinit.target.wants/clusterhub-lab-devices.service"
cat >"$rootfs/etc/apt/apt.conf.d/90clusterhub-lab" <<'APT'
Acquire::Retries "3";
APT::Install-Recommends "false";
Binary::apt::APT::Keep-Downloaded-Packages "true";
APT
echo "$suite" >"$rootfs/etc/clusterhub-lab-release"
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
# An old lists/ mtime makes the first apt task with cache_valid_time refresh the lists.
touch -d @0 "$rootfs/var/lib/apt/lists"

tar -C "$rootfs" -c . | docker import \
  -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' \
  -m "clusterhub lab base $suite" - "$tag" >/dev/null
docker tag "$tag" "$repo:$suite"
echo "lab image $tag built"
