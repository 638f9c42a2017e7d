#!/usr/bin/env bash
# Benchmarks a release build on the lent GPU machine (the `device` tool's `run`), see
# docs/PERFORMANCE.md. Prepare, on the dev machine, an ignored folder `.gl/` and pass it in
# `carry`:
#   .gl/*.deb      Vulkan/GL loaders (apt-get download libvulkan1 libegl1 libglvnd0 libopengl0
#                  libgl1 libglx0 libgles2)
#   .gl/gst/*.deb  GStreamer runtime libraries the binary links against (libgstreamer1.0-0
#                  libgstreamer-plugins-base1.0-0 liborc-0.4-0 libunwind8 libdw1 libelf1 and
#                  their glib dependencies), unpacked under /opt/gst, not /
#   .gl/bin/streamdiff.xz   the stripped release binary (xz keeps it under the carry limit)
#   .gl/model/multistyle26.onnx
# Then run: bash scripts/device-bench.sh [bench arguments...]   (default: the style bench)
set -u
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
mkdir -p /opt/gst; for f in .gl/gst/*.deb; do dpkg -x "$f" /opt/gst; done
export LD_LIBRARY_PATH=/opt/gst/usr/lib/x86_64-linux-gnu:/opt/gst/lib/x86_64-linux-gnu
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export WGPU_BACKEND=vulkan XDG_RUNTIME_DIR=/tmp/rt; mkdir -p /tmp/rt; chmod 700 /tmp/rt
export STREAMDIFF_MODEL_DIR=$PWD/.gl/model
out="${OUT:-out}"; mkdir -p "$out"
xz -dc .gl/bin/streamdiff.xz > /tmp/streamdiff; chmod +x /tmp/streamdiff
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$out/gpu.txt"
if [ $# -eq 0 ]; then
  set -- style --size 256,512,1024 --device wgpu --frames 50 --warmup 5
fi
/tmp/streamdiff bench "$@" --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
