#!/usr/bin/env python3
"""Reference fixtures for the stream-batch engine: StreamDiffusion itself (PyPI streamdiffusion==0.1.1).

The script drives the unmodified `streamdiffusion.StreamDiffusion` class (pipeline.py) and its
`SimilarImageFilter` (image_filter.py) on CPU in float32, with the tiny random SD-Turbo-style
components of `models/tests/fixtures/sd` (unet_sd21, text_encoder_sd21, taesd) and a tiny
character-level CLIP tokenizer, and records every call: the input frames, the noise StreamDiffusion
drew, the latents it encoded, the stream-batch buffer, the RCFG stock noise, the x0 it emitted and the
decoded output frames. The Rust engine (pipeline/src/stage/engine) must reproduce the outputs.

    /tmp/sd024/bin/python tools/reference/make_stream_fixtures.py

Versions: see tools/reference/requirements-stream.txt (streamdiffusion 0.1.1 pins diffusers==0.24.0).
Two things around the package are adapted, neither touches its arithmetic:
  * `StreamDiffusion.__call__` times itself with `torch.cuda.Event`, which needs a CUDA device; a
    CPU stand-in with the same methods replaces `torch.cuda.Event` and `torch.cuda.synchronize`.
  * `SimilarImageFilter` draws `random.uniform(0, 1)`; the draws are taken from a recorded list so
    the Rust side can replay them (the decisions are the package's own code).
See models/tests/fixtures/sd/stream/README.md for the cases and the tolerance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
import streamdiffusion
import streamdiffusion.image_filter as sd_filter
import transformers
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from streamdiffusion import StreamDiffusion

REPO_ROOT = Path(__file__).resolve().parents[2]
SD_FIXTURES = REPO_ROOT / "models/tests/fixtures/sd"
WIDTH_PX = 48  # non-square on purpose: a swapped height/width shows up
HEIGHT_PX = 32
FRAMES = 6
PROMPT = "a watercolor painting of an astronaut"
NEGATIVE_PROMPT = "blurry, low quality"


class CpuEvent:
    """Stand-in for torch.cuda.Event on a machine without CUDA (timing only)."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "CpuEvent") -> float:
        return (end.t - self.t) * 1000.0


torch.cuda.Event = CpuEvent  # type: ignore[assignment]
torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_tiny_pipeline(root: Path) -> None:
    """A diffusers StableDiffusionPipeline folder over the existing tiny SD 2.1 components.

    unet/, text_encoder/ and vae/ are relative symlinks to the model-family fixtures (no copy of
    their weights); tokenizer/ is a character-level CLIP BPE (the 512 byte symbols, no merges,
    BOS/EOS), which keeps every id below the tiny text encoder's 1000-entry vocabulary.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name, target in [("unet", "unet_sd21"), ("text_encoder", "text_encoder_sd21"), ("vae", "taesd")]:
        link = root / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path("..") / target)
    tok = root / "tokenizer"
    tok.mkdir(exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (tok / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    write_json(tok / "special_tokens_map.json", {
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"})
    write_json(tok / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"})
    sched = root / "scheduler"
    sched.mkdir(exist_ok=True)
    # SD-Turbo's scheduler config; StreamDiffusion only takes its betas into an LCMScheduler.
    write_json(sched / "scheduler_config.json", {
        "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.24.0",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
        "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": None,
        "use_karras_sigmas": False})
    write_json(root / "model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.24.0",
        "feature_extractor": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderTiny"]})


def data_dir() -> Path:
    env = os.environ.get("STREAMDIFF_TEST_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def make_frames() -> np.ndarray:
    """A short 'camera pan' over the astronaut photo: [FRAMES+4, H, W, 3] u8.

    Frames 0..FRAMES-1 pan; the extra four are for the SSF case (see ssf_sequence).
    """
    img = Image.open(data_dir() / "images" / "astronaut.png").convert("RGB")
    img = np.asarray(img.resize((WIDTH_PX + 3 * FRAMES, HEIGHT_PX + FRAMES), Image.BICUBIC))
    frames = [img[i: i + HEIGHT_PX, 3 * i: 3 * i + WIDTH_PX] for i in range(FRAMES)]
    rng = np.random.default_rng(7)
    base = frames[0].astype(np.int32)
    # Near-copies of frame 0 with growing noise: cosine similarities spread across the SSF ramp.
    for amplitude in (2, 6, 12, 24):
        noisy = np.clip(base + rng.integers(-amplitude, amplitude + 1, base.shape), 0, 255)
        frames.append(noisy.astype(np.uint8))
    return np.stack(frames).astype(np.uint8)


def to_input(frames_u8: np.ndarray) -> torch.Tensor:
    """HWC u8 frames to the [0, 1] NCHW float tensor given to StreamDiffusion.__call__."""
    return torch.from_numpy(frames_u8).permute(0, 3, 1, 2).float() / 255.0


CASES = [
    # name, t_index_list, cfg_type, guidance, delta, frame_buffer_size, mode
    dict(name="steps1", t_index_list=[32], cfg_type="none", guidance=1.0, delta=1.0, fbs=1, mode="img2img"),
    dict(name="steps1_self", t_index_list=[35], cfg_type="self", guidance=1.3, delta=0.9, fbs=1, mode="img2img"),
    dict(name="steps2", t_index_list=[32, 45], cfg_type="none", guidance=1.0, delta=1.0, fbs=1, mode="img2img"),
    dict(name="cfg_none", t_index_list=[32, 45], cfg_type="none", guidance=1.4, delta=0.8, fbs=1, mode="img2img"),
    dict(name="cfg_full", t_index_list=[32, 45], cfg_type="full", guidance=1.4, delta=0.8, fbs=1, mode="img2img"),
    dict(name="cfg_self", t_index_list=[32, 45], cfg_type="self", guidance=1.4, delta=0.8, fbs=1, mode="img2img"),
    dict(name="cfg_initialize", t_index_list=[32, 45], cfg_type="initialize", guidance=1.4, delta=0.8, fbs=1, mode="img2img"),
    dict(name="steps4_self", t_index_list=[16, 24, 32, 45], cfg_type="self", guidance=1.2, delta=1.0, fbs=1, mode="img2img"),
    dict(name="fbs2", t_index_list=[35], cfg_type="full", guidance=1.3, delta=1.0, fbs=2, mode="img2img"),
    dict(name="txt2img", t_index_list=[0, 16, 32], cfg_type="none", guidance=1.0, delta=1.0, fbs=1, mode="txt2img"),
    dict(name="ssf", t_index_list=[32, 45], cfg_type="self", guidance=1.2, delta=1.0, fbs=1, mode="ssf"),
]

# SSF case: the frame indices fed, call by call, and the filter's settings.
SSF_SEQUENCE = [0, 0, 0, 0, 0, 1, 1, 6, 7, 8, 9, 2]
SSF_THRESHOLD = 0.98
SSF_MAX_SKIP = 2


def run_case(pipe, case: dict, frames_u8: np.ndarray, seed: int) -> tuple[dict, dict]:
    stream = StreamDiffusion(
        pipe,
        t_index_list=case["t_index_list"],
        torch_dtype=torch.float32,
        width=WIDTH_PX,
        height=HEIGHT_PX,
        do_add_noise=True,
        use_denoising_batch=True,
        frame_buffer_size=case["fbs"],
        cfg_type=case["cfg_type"],
    )
    stream.prepare(
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        num_inference_steps=50,
        guidance_scale=case["guidance"],
        delta=case["delta"],
        generator=torch.Generator(),
        seed=seed,
    )
    tensors: dict[str, torch.Tensor] = {
        "init_noise": stream.init_noise.clone(),
        "prompt_embeds": stream.prompt_embeds.clone(),
        "alpha_prod_t_sqrt": stream.alpha_prod_t_sqrt.flatten().clone(),
        "beta_prod_t_sqrt": stream.beta_prod_t_sqrt.flatten().clone(),
        "c_skip": stream.c_skip.flatten().clone(),
        "c_out": stream.c_out.flatten().clone(),
        "sub_timesteps": stream.sub_timesteps_tensor.clone(),
    }
    # Record what each call does without changing it: wrap the instance's methods.
    record: dict[str, torch.Tensor] = {}
    encode, predict, decode = stream.encode_image, stream.predict_x0_batch, stream.decode_image

    def encode_image(x):
        out = encode(x)
        record["x_t_latent"] = out.clone()
        return out

    def predict_x0_batch(x):
        out = predict(x)
        record["x0"] = out.clone()
        return out

    def decode_image(x):
        out = decode(x)
        record["decoded"] = out.clone()
        return out

    stream.encode_image, stream.predict_x0_batch, stream.decode_image = encode_image, predict_x0_batch, decode_image

    meta = {k: v for k, v in case.items()}
    calls = []
    if case["mode"] == "ssf":
        stream.enable_similar_image_filter(SSF_THRESHOLD, SSF_MAX_SKIP)
        rng = random.Random(seed)
        draws = [rng.uniform(0, 1) for _ in SSF_SEQUENCE]
        # Put some draws where they decide: low ones make the near-copies go through.
        draws[3], draws[4] = 0.999, 0.001
        queue = list(draws)
        sd_filter.random.uniform = lambda a, b: queue.pop(0)
        inputs = SSF_SEQUENCE
        tensors["ssf_draws"] = torch.tensor(draws, dtype=torch.float64)
        meta.update(ssf_sequence=SSF_SEQUENCE, ssf_threshold=SSF_THRESHOLD, ssf_max_skip=SSF_MAX_SKIP)
    elif case["fbs"] > 1:
        inputs = [list(range(i, i + case["fbs"])) for i in range(0, FRAMES, case["fbs"])]
    else:
        inputs = list(range(FRAMES))
    meta["inputs"] = inputs
    for call, frame in enumerate(inputs):
        record.clear()
        if case["mode"] == "txt2img":
            torch.manual_seed(1000 + call)
            noise = torch.randn((1, 4, HEIGHT_PX // 8, WIDTH_PX // 8))
            torch.manual_seed(1000 + call)
            out = stream(None)
            tensors[f"txt2img_noise_{call}"] = noise
        else:
            idx = frame if isinstance(frame, list) else [frame]
            out = stream(to_input(frames_u8[idx]))
        skipped = "decoded" not in record
        calls.append({"call": call, "skipped": skipped})
        tensors[f"output_{call}"] = out.clone()
        if not skipped:
            if "x_t_latent" in record:
                tensors[f"x_t_latent_{call}"] = record["x_t_latent"]
            tensors[f"x0_{call}"] = record["x0"]
        if stream.x_t_latent_buffer is not None:
            tensors[f"buffer_{call}"] = stream.x_t_latent_buffer.clone()
        tensors[f"stock_noise_{call}"] = stream.stock_noise.clone()
        if case["mode"] == "ssf" and stream.similar_filter.prev_tensor is not None:
            calls[-1]["skip_count"] = stream.similar_filter.skip_count
    if case["mode"] == "ssf":
        sd_filter.random.uniform = random.uniform
    meta["calls"] = calls
    meta["seed"] = seed
    meta["batch_size"] = stream.batch_size
    meta["unet_batch_rows"] = stream.trt_unet_batch_size
    return meta, {k: v.contiguous() for k, v in tensors.items()}


def check_fbs2_multistep_fails(pipe) -> str:
    """streamdiffusion 0.1.1 shifts its buffers by one row, not by frame_buffer_size rows."""
    stream = StreamDiffusion(pipe, t_index_list=[32, 45], torch_dtype=torch.float32, width=WIDTH_PX,
                             height=HEIGHT_PX, frame_buffer_size=2, cfg_type="none")
    stream.prepare(prompt=PROMPT, num_inference_steps=50, guidance_scale=1.0, seed=1)
    x = to_input(make_frames()[:2])
    try:
        for _ in range(3):
            stream(x)
    except Exception as err:  # noqa: BLE001 (the message is what we record)
        return f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return "no error"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=SD_FIXTURES / "stream")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    write_tiny_pipeline(SD_FIXTURES / "stream_tiny")
    pipe = StableDiffusionPipeline.from_pretrained(
        SD_FIXTURES / "stream_tiny", torch_dtype=torch.float32, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.to("cpu")
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)

    args.out.mkdir(parents=True, exist_ok=True)
    frames = make_frames()
    save_file({"frames_u8": torch.from_numpy(frames).contiguous()}, str(args.out / "frames.safetensors"))
    index = {
        "versions": {
            "streamdiffusion": getattr(streamdiffusion, "__version__", "0.1.1"),
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__, "numpy": np.__version__,
        },
        "model": "models/tests/fixtures/sd/stream_tiny",
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "num_inference_steps": 50,
        "width_px": WIDTH_PX, "height_px": HEIGHT_PX,
        "fbs2_multistep_in_0_1_1": check_fbs2_multistep_fails(pipe),
        "cases": [],
    }
    for seed, case in enumerate(CASES, start=11):
        meta, tensors = run_case(pipe, case, frames, seed)
        save_file(tensors, str(args.out / f"{case['name']}.safetensors"))
        index["cases"].append(meta)
        skipped = sum(c["skipped"] for c in meta["calls"])
        print(f"{case['name']:>15}: {len(meta['calls'])} calls, {skipped} skipped, unet rows {meta['unet_batch_rows']}")
    write_json(args.out / "cases.json", index)
    sums = []
    for path in sorted(args.out.iterdir()):
        if path.is_file() and path.name not in ("SHA256SUMS", "README.md"):
            sums.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}")
    (args.out / "SHA256SUMS").write_text("\n".join(sums) + "\n")


if __name__ == "__main__":
    main()
