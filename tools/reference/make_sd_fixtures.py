#!/usr/bin/env python3
"""Reference fixtures for the Stable Diffusion model family (SD 1.5 / SD 2.1 / SD-Turbo style).

No machine of the project can reach a model hub, so this script builds *tiny random-weight* models
of the real architectures with diffusers / transformers, saves them in the real diffusers folder
layout, and records inputs and reference outputs that the Rust (burn) implementation is compared
against.  See tools/reference/README.md for what each fixture holds.

    python tools/reference/make_sd_fixtures.py --out models/tests/fixtures/sd

The run is deterministic: fixed seeds, one CPU thread, no timestamps in any file.  Re-running it
with the versions pinned in tools/reference/requirements.txt gives byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import json
import os
import shutil
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import AutoencoderTiny, LCMScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPTokenizerFast
from transformers.models.bert.tokenization_bert import BasicTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_LEN = 77  # CLIP context length (tokenizer model_max_length, text encoder max_position_embeddings)
BOS_ID = 49406  # <|startoftext|>
EOS_ID = 49407  # <|endoftext|>
TINY_VOCAB = 1000  # vocab_size of the tiny text encoders (the real one is 49408)
IMAGE_SIZE = 64  # pixels; 8x8 latents after the x8 TAESD encoder

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def setup_determinism() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    np.random.seed(0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float32) * scale


@torch.no_grad()
def perturb_vectors(model: nn.Module, seed: int, scale: float = 0.1) -> None:
    """Add noise to every 1-D parameter (norm gains/offsets, biases).

    Default init leaves GroupNorm/LayerNorm at weight=1, bias=0, which would hide a swapped or
    missing gamma/beta on the Rust side.
    """
    g = gen(seed)
    for _, p in model.named_parameters():
        if p.ndim == 1:
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def stats(name: str, t: torch.Tensor) -> None:
    t = t.float()
    print(f"    {name:28s} {tuple(t.shape)!s:20s} mean {t.mean():+.4f} std {t.std():.4f} "
          f"min {t.min():+.4f} max {t.max():+.4f}")


def data_dir() -> Path:
    env = os.environ.get("STREAMDIFF_TEST_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def load_test_image(size: int = IMAGE_SIZE) -> np.ndarray:
    """The shared astronaut photo, resized with PIL bicubic to size x size, HWC uint8."""
    img = Image.open(data_dir() / "images" / "astronaut.png").convert("RGB")
    img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8).copy()


def image_to_nchw_pm1(img_u8: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> NCHW f32 in [-1, 1]  (what diffusers' VaeImageProcessor.preprocess does)."""
    x = torch.from_numpy(img_u8).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return x * 2.0 - 1.0


# --------------------------------------------------------------------------------------------
# UNets
# --------------------------------------------------------------------------------------------

# SD 1.5 (runwayml/stable-diffusion-v1-5 unet/config.json) shrunk: 2 resolution levels instead
# of 4, channels (16, 32) instead of (320, 640, 1280, 1280).  attention_head_dim is an int and,
# as in SD 1.5, really means *number of heads* (diffusers: num_attention_heads = attention_head_dim).
UNET_SD15 = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    only_cross_attention=False,
    block_out_channels=(16, 32),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=8,
    norm_eps=1e-5,
    cross_attention_dim=32,
    transformer_layers_per_block=1,
    attention_head_dim=2,
    dual_cross_attention=False,
    use_linear_projection=False,
    upcast_attention=False,
    resnet_time_scale_shift="default",
)

# SD 2.1 / SD-Turbo (stabilityai/stable-diffusion-2-1, sd-turbo unet/config.json) shrunk:
# attention_head_dim is a per-block list (real: [5, 10, 20, 20]) -> heads per block, reversed for
# the up blocks, last entry for the mid block; linear proj_in/proj_out; upcast_attention.
# layers_per_block=1 (real: 2) so the Rust side cannot hard-code 2; cross_attention_dim 48
# (real: 1024) so it differs from the SD 1.5 fixture.
UNET_SD21 = dict(
    UNET_SD15,
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=16,
    cross_attention_dim=48,
    attention_head_dim=[2, 4],
    use_linear_projection=True,
    upcast_attention=True,
)

UNET_CASES = [  # (timesteps for the batch of 2, seed)
    ([999, 500], 100),
    ([1, 250], 101),
]


def make_unet(config: dict, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config).eval()
    perturb_vectors(unet, seed + 1)
    return unet


@torch.no_grad()
def write_unet(out: Path, name: str, config: dict, seed: int) -> UNet2DConditionModel:
    print(f"[{name}]")
    d = fresh_dir(out / name)
    unet = make_unet(config, seed)
    unet.save_pretrained(d, safe_serialization=True)
    io = {}
    hw = config["sample_size"]
    for i, (ts, case_seed) in enumerate(UNET_CASES):
        sample = randn((2, config["in_channels"], hw, hw), case_seed)
        timestep = torch.tensor(ts, dtype=torch.int64)
        ehs = randn((2, MAX_LEN, config["cross_attention_dim"]), case_seed + 1000)
        out_t = unet(sample, timestep, encoder_hidden_states=ehs).sample
        io[f"sample_{i}"] = sample
        io[f"timestep_{i}"] = timestep
        io[f"encoder_hidden_states_{i}"] = ehs
        io[f"out_{i}"] = out_t
        stats(f"out_{i} t={ts}", out_t)
    save_tensors(d / "io.safetensors", io)
    # reload check: the saved folder is what the Rust side loads
    reloaded = UNet2DConditionModel.from_pretrained(d, low_cpu_mem_usage=False).eval()
    again = reloaded(io["sample_0"], io["timestep_0"], encoder_hidden_states=io["encoder_hidden_states_0"]).sample
    assert torch.equal(again, io["out_0"]), "UNet reload mismatch"
    return unet


# --------------------------------------------------------------------------------------------
# Text encoders
# --------------------------------------------------------------------------------------------

# openai/clip-vit-large-patch14 (SD 1.5 text_encoder/config.json) shrunk.  The legacy
# bos/eos/pad ids 0/2/1 are what the real SD configs carry (only used by pooler_output).
TEXT_SD15 = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=MAX_LEN,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=32,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

# OpenCLIP ViT-H/14 text tower as converted for SD 2.1 (text_encoder/config.json: hidden 1024,
# 16 heads, intermediate 4096, hidden_act "gelu" (erf), num_hidden_layers 23 = OpenCLIP's 24 minus
# the last).  Shrunk; hidden 48 matches UNET_SD21.cross_attention_dim.
TEXT_SD21 = dict(
    TEXT_SD15,
    hidden_size=48,
    intermediate_size=53,
    num_attention_heads=4,
    hidden_act="gelu",
    projection_dim=48,
)


def make_text_encoder(config: dict, seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(**config)
    model = CLIPTextModel(cfg).eval()
    perturb_vectors(model, seed + 1)
    return model


def to_tiny_vocab(ids: torch.Tensor) -> torch.Tensor:
    """Real CLIP ids (< 49408) -> ids of the tiny text encoders (< TINY_VOCAB): id % TINY_VOCAB."""
    return ids % TINY_VOCAB


@torch.no_grad()
def encode_prompt_like_diffusers(te: CLIPTextModel, ids: torch.Tensor) -> torch.Tensor:
    """StableDiffusionPipeline.encode_prompt with clip_skip=None: text_encoder(ids, attention_mask=None)[0]."""
    return te(ids, attention_mask=None)[0]


@torch.no_grad()
def write_text_encoder(out: Path, name: str, config: dict, seed: int, prompt_ids: torch.Tensor) -> CLIPTextModel:
    print(f"[{name}]")
    d = fresh_dir(out / name)
    te = make_text_encoder(config, seed)
    te.save_pretrained(d, safe_serialization=True)
    random_ids = torch.randint(0, TINY_VOCAB, (1, MAX_LEN), generator=gen(seed + 7), dtype=torch.int64)
    input_ids = torch.cat([to_tiny_vocab(prompt_ids), random_ids], dim=0)
    res = te(input_ids, attention_mask=None, output_hidden_states=True)
    io = {
        "input_ids": input_ids,
        "last_hidden_state": res.last_hidden_state,
    }
    for i, h in enumerate(res.hidden_states):
        io[f"hidden_states_{i}"] = h
    prompt_embeds = encode_prompt_like_diffusers(te, input_ids)
    assert torch.equal(prompt_embeds, res.last_hidden_state)
    ln = te.text_model.final_layer_norm(res.hidden_states[-1])
    assert torch.allclose(ln, res.last_hidden_state, atol=1e-6)
    stats("last_hidden_state", res.last_hidden_state)
    save_tensors(d / "io.safetensors", io)
    reloaded = CLIPTextModel.from_pretrained(d).eval()
    assert torch.equal(reloaded(input_ids)[0], res.last_hidden_state), "text encoder reload mismatch"
    return te


# --------------------------------------------------------------------------------------------
# TAESD
# --------------------------------------------------------------------------------------------

TAESD_CHANNELS = 12  # real TAESD: 64 (12: small, and not a power of two)
TAESD_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    encoder_block_out_channels=(TAESD_CHANNELS,) * 4,
    decoder_block_out_channels=(TAESD_CHANNELS,) * 4,
    act_fn="relu",
    upsample_fn="nearest",
    latent_channels=4,
    upsampling_scaling_factor=2,
    num_encoder_blocks=(1, 3, 3, 3),
    num_decoder_blocks=(3, 3, 3, 1),
    latent_magnitude=3,
    latent_shift=0.5,
    force_upcast=False,
    scaling_factor=1.0,
)


# --- plain re-implementation of madebyollin/taesd taesd.py (MIT), channel count as a parameter ---
def _conv(n_in, n_out, **kwargs):
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


def taesd_encoder(latent_channels=4, c=64):
    return nn.Sequential(
        _conv(3, c), _Block(c, c),
        _conv(c, c, stride=2, bias=False), _Block(c, c), _Block(c, c), _Block(c, c),
        _conv(c, c, stride=2, bias=False), _Block(c, c), _Block(c, c), _Block(c, c),
        _conv(c, c, stride=2, bias=False), _Block(c, c), _Block(c, c), _Block(c, c),
        _conv(c, latent_channels),
    )


def taesd_decoder(latent_channels=4, c=64):
    return nn.Sequential(
        _Clamp(), _conv(latent_channels, c), nn.ReLU(),
        _Block(c, c), _Block(c, c), _Block(c, c), nn.Upsample(scale_factor=2), _conv(c, c, bias=False),
        _Block(c, c), _Block(c, c), _Block(c, c), nn.Upsample(scale_factor=2), _conv(c, c, bias=False),
        _Block(c, c), _Block(c, c), _Block(c, c), nn.Upsample(scale_factor=2), _conv(c, c, bias=False),
        _Block(c, c), _conv(c, 3),
    )


def diffusers_to_taesd(state: dict[str, torch.Tensor]) -> tuple[OrderedDict, OrderedDict]:
    """diffusers AutoencoderTiny keys -> original TAESD Sequential keys.

    encoder.layers.{i}.X -> {i}.X        (same indices)
    decoder.layers.{i}.X -> {i+1}.X      (the original Decoder has Clamp() at index 0; diffusers
                                          applies the clamp in DecoderTiny.forward instead)
    """
    enc, dec = OrderedDict(), OrderedDict()
    for k, v in state.items():
        parts = k.split(".")
        assert parts[1] == "layers", k
        idx = int(parts[2])
        rest = ".".join(parts[3:])
        if parts[0] == "encoder":
            enc[f"{idx}.{rest}"] = v
        elif parts[0] == "decoder":
            dec[f"{idx + 1}.{rest}"] = v
        else:
            raise KeyError(k)
    return enc, dec


@torch.no_grad()
def make_taesd(seed: int, image: torch.Tensor) -> AutoencoderTiny:
    """Random AutoencoderTiny whose activations stay O(1).

    With PyTorch's default init the random TAESD maps every image to an almost constant output, which
    would make a weak test.  So: He-normal conv weights with gain 0.6, noisy biases, then the encoder's
    last conv is rescaled so the test image's latents have std 1, and the decoder's last conv so its
    raw ([0,1]-convention) output has mean 0.5 and std 0.25.  Deterministic (fixed seeds, fixed image).
    """
    torch.manual_seed(seed)
    vae = AutoencoderTiny(**TAESD_CONFIG).eval()
    g = gen(seed + 1)
    for _, p in vae.named_parameters():
        if p.ndim == 4:
            fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            p.copy_(torch.randn(p.shape, generator=g) * 0.6 * (2.0 / fan_in) ** 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def calibrate(conv: nn.Conv2d, out: torch.Tensor, mean: float, std: float) -> None:
        # per output channel: out_c -> (out_c - mean_c) / std_c * std + mean  (conv is linear)
        m, sd = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3))
        conv.weight.mul_((std / sd).view(-1, 1, 1, 1))
        conv.bias.copy_((conv.bias - m) * (std / sd) + mean)

    calibrate(vae.encoder.layers[-1], vae.encode(image).latents, 0.0, 1.0)
    lat = vae.encode(image).latents
    calibrate(vae.decoder.layers[-1], vae.decode(lat).sample.add(1).div(2), 0.5, 0.25)
    return vae


@torch.no_grad()
def write_taesd(out: Path, seed: int, image_u8: np.ndarray) -> AutoencoderTiny:
    print("[taesd]")
    d = fresh_dir(out / "taesd")
    image = image_to_nchw_pm1(image_u8)  # [1,3,64,64] in [-1,1]
    vae = make_taesd(seed, image)
    vae.save_pretrained(d, safe_serialization=True)

    latents = vae.encode(image).latents  # [1,4,8,8]
    decoded = vae.decode(latents).sample  # [1,3,64,64], ~[-1,1], NOT clamped
    latents_random = randn((1, 4, IMAGE_SIZE // 8, IMAGE_SIZE // 8), seed + 2, scale=3.0)
    decoded_random = vae.decode(latents_random).sample
    for n, t in [("latents", latents), ("decoded", decoded), ("decoded_random", decoded_random)]:
        stats(n, t)
    save_tensors(d / "io.safetensors", {
        "image": image,
        "latents": latents,
        "decoded": decoded,
        "latents_random": latents_random,
        "decoded_random": decoded_random,
    })

    reloaded = AutoencoderTiny.from_pretrained(d, low_cpu_mem_usage=False).eval()
    assert torch.equal(reloaded.decode(reloaded.encode(image).latents).sample, decoded), "TAESD reload mismatch"

    # Original TAESD .pth layout, from the same weights.
    enc_sd, dec_sd = diffusers_to_taesd(vae.state_dict())
    enc = taesd_encoder(4, TAESD_CHANNELS).eval()
    dec = taesd_decoder(4, TAESD_CHANNELS).eval()
    enc.load_state_dict(enc_sd, strict=True)
    dec.load_state_dict(dec_sd, strict=True)
    torch.save(enc.state_dict(), d / "taesd_encoder.pth")
    torch.save(dec.state_dict(), d / "taesd_decoder.pth")

    # Check: a plain TAESD built from the .pth files gives the same outputs.  The raw network
    # works on [0,1] images; diffusers maps [-1,1] -> [0,1] before the encoder and [0,1] -> [-1,1]
    # after the decoder.
    enc2 = taesd_encoder(4, TAESD_CHANNELS).eval()
    dec2 = taesd_decoder(4, TAESD_CHANNELS).eval()
    enc2.load_state_dict(torch.load(d / "taesd_encoder.pth", map_location="cpu", weights_only=True))
    dec2.load_state_dict(torch.load(d / "taesd_decoder.pth", map_location="cpu", weights_only=True))
    raw_lat = enc2(image.add(1).div(2))
    raw_dec = dec2(latents)
    raw_dec_rand = dec2(latents_random)
    assert torch.allclose(raw_lat, latents, atol=1e-6, rtol=0), (raw_lat - latents).abs().max()
    assert torch.allclose(raw_dec.mul(2).sub(1), decoded, atol=1e-6, rtol=0), (raw_dec.mul(2).sub(1) - decoded).abs().max()
    assert torch.allclose(raw_dec_rand.mul(2).sub(1), decoded_random, atol=1e-6, rtol=0)
    print(f"    .pth re-implementation matches diffusers (max |d| enc {(raw_lat - latents).abs().max():.2e}, "
          f"dec {(raw_dec.mul(2).sub(1) - decoded).abs().max():.2e})")
    return vae


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """openai/CLIP simple_tokenizer.bytes_to_unicode (identical in transformers)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_clip_bpe(gz_path: Path) -> tuple[list[str], list[str]]:
    """The CLIP vocabulary and merges exactly as openai/CLIP SimpleTokenizer builds them.

    merges = lines[1 : 49152 - 256 - 2 + 1] of the gz file (line 0 is a version header) -> 48894
    vocab  = 256 byte symbols (bytes_to_unicode order) + the same 256 with '</w>'
             + one entry per merge (the two parts concatenated) + <|startoftext|> + <|endoftext|>
           = 49408 entries, id = position.
    """
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    assert len(merges) == 48894
    byte_syms = list(bytes_to_unicode().values())
    vocab = byte_syms + [s + "</w>" for s in byte_syms]
    vocab += ["".join(m.split(" ")) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    return vocab, merges


def write_clip_tokenizer_files(d: Path, vocab: list[str], merges: list[str]) -> dict[str, dict]:
    """vocab.json + merges.txt in the Hugging Face CLIPTokenizer format.

    vocab.json: one JSON object {token: id} in id order, json.dumps(ensure_ascii=False) defaults
                (", " and ": " separators), no trailing newline.
    merges.txt: "#version: 0.2\n" then the 48894 merges, one "a b" per line, each ending in "\n".
    """
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    return {f: {"sha256": sha256_file(d / f), "bytes": (d / f).stat().st_size} for f in ("vocab.json", "merges.txt")}


PROMPTS = [
    # plain
    "a photo of a cat",
    "a painting of a fox in the style of van gogh",
    "portrait of an astronaut, oil on canvas, highly detailed",
    "cyberpunk city at night, neon lights, rain",
    "watercolor landscape",
    "anime",
    "a",
    # mixed case
    "A Photo Of A CAT",
    "VanGogh StarryNight",
    "iPhone MacBook PlayStation",
    # punctuation
    "hello, world!",
    "what?! no... yes!!!",
    "(masterpiece:1.2), [best quality], {ultra-detailed}",
    "a/b\\c|d_e-f+g=h",
    "snake_case_words and kebab-case-words",
    "#hashtag @mention $100 50% ~tilde^caret*",
    '"quoted" text',
    # digits
    "1234567890",
    "4k 8k uhd 1080p 3d",
    "3.14159 and 2,718",
    "year 2024",
    # apostrophes / contractions
    "it's the cat's toy",
    "don't won't can't",
    "they're we've i'm you'll he'd",
    "IT'S DON'T THEY'RE",
    "rock 'n' roll o'clock",
    # unicode
    "café crème brûlée",
    "naïve résumé façade",
    "Ünïcödé ÀÉÎÕÜ",
    "a cat 🐱 with a hat 🎩",
    "🔥🔥🔥",
    "東京タワー の 写真",
    "水墨画 山水",
    "مرحبا بالعالم",
    "Привет мир",
    "Γειά σου κόσμε",
    "\u201ccurly quotes\u201d and \u2018single\u2019",
    "ﬁne ligature ﬂow",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３",
    "e\u0301 combining accent",
    "tom &amp; jerry &lt;3",
    "zero\u200bwidth space",
    # whitespace
    "  leading and trailing  ",
    "multiple    spaces   between",
    "tabs\tand\nnewlines\r\nmixed",
    "\u00a0non-breaking\u00a0spaces\u3000ideographic",
    # empty / special
    "",
    "   ",
    "<|endoftext|> inside a prompt",
    # long (> 77 tokens): truncation keeps BOS + 75 tokens + EOS
    ", ".join(["a highly detailed matte painting of a castle on a hill"] * 10),
    " ".join(str(i) for i in range(100)),
]

TOKENIZER_VARIANTS = {
    # SD 1.5 (runwayml/stable-diffusion-v1-5 tokenizer/): pad_token <|endoftext|> (id 49407)
    "sd15": {"pad_token": "<|endoftext|>"},
    # SD 2.1 / SD-Turbo (stabilityai/stable-diffusion-2-1 tokenizer/): pad_token "!" (id 0)
    "sd21": {"pad_token": "!"},
}


def sd_tokenize(tok, prompt: str) -> list[int]:
    """What StableDiffusionPipeline.encode_prompt does: padding=max_length, max_length=77, truncation."""
    return tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids


def slow_without_ftfy(tok: CLIPTokenizer) -> CLIPTokenizer:
    """The same slow tokenizer as in an environment without ftfy (transformers falls back to BERT's BasicTokenizer)."""
    tok.fix_text = None
    tok.nlp = BasicTokenizer(strip_accents=False, do_split_on_punc=False)
    return tok


def openai_clean(text: str) -> str:
    """openai/CLIP SimpleTokenizer.basic_clean (ftfy + html.unescape twice + strip); the rest is shared."""
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def write_tokenizer(out: Path, tokenizer_files_dir: Path | None) -> dict[str, CLIPTokenizer]:
    print("[tokenizer]")
    d = fresh_dir(out / "tokenizer")
    gz = data_dir() / "tokenizers" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
    vocab, merges = build_clip_bpe(gz)
    toks: dict[str, CLIPTokenizer] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_clip_tokenizer_files(tmp, vocab, merges)
        if tokenizer_files_dir is not None:
            write_clip_tokenizer_files(tokenizer_files_dir, vocab, merges)
        variants = {}
        for name, kw in TOKENIZER_VARIANTS.items():
            slow = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=MAX_LEN, **kw)
            fast = CLIPTokenizerFast(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=MAX_LEN, **kw)
            noftfy = slow_without_ftfy(
                CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=MAX_LEN, **kw))
            assert slow.fix_text is not None, "ftfy must be installed (see requirements.txt)"
            assert slow.pad_token_id == fast.pad_token_id
            variants[name] = (slow, fast, noftfy)
            toks[name] = slow
        assert toks["sd15"].pad_token_id == EOS_ID and toks["sd21"].pad_token_id == 0

        entries = []
        disagreements = {"fast": 0, "slow_no_ftfy": 0, "openai": 0}
        for prompt in PROMPTS:
            e = {"prompt": prompt}
            slow15, fast15, noftfy15 = variants["sd15"]
            tokens = slow15.tokenize(prompt)
            raw = slow15.convert_tokens_to_ids(tokens)
            e["tokens"] = tokens
            e["num_tokens"] = len(raw)  # BPE tokens between BOS and EOS, before truncation
            e["truncated"] = len(raw) > MAX_LEN - 2
            for name, (slow, fast, noftfy) in variants.items():
                ids = sd_tokenize(slow, prompt)
                assert len(ids) == MAX_LEN and ids[0] == BOS_ID
                e[f"input_ids_{name}"] = ids
                for other_name, other in (("fast", fast), ("slow_no_ftfy", noftfy)):
                    other_ids = sd_tokenize(other, prompt)
                    if other_ids != ids:
                        e[f"input_ids_{name}_{other_name}"] = other_ids
                        if name == "sd15":
                            disagreements[other_name] += 1
                oa_ids = sd_tokenize(slow, openai_clean(prompt))
                if oa_ids != ids:
                    e[f"input_ids_{name}_openai"] = oa_ids
                    if name == "sd15":
                        disagreements["openai"] += 1
            # Layout checks.  sd15: BOS, min(n, 75) tokens, EOS, EOS padding.  sd21: pads with 0 after the
            # final EOS -- and since its pad token "!" is a *special* token, every literal "!" in the
            # prompt is split out before BPE and becomes id 0 too (sd15 gives "!</w>" = 256 etc.).
            a, b = e["input_ids_sd15"], e["input_ids_sd21"]
            end = min(len(raw), MAX_LEN - 2) + 1
            assert a[end] == EOS_ID and all(x == EOS_ID for x in a[end + 1 :])
            end21 = MAX_LEN - 1 - b[::-1].index(EOS_ID)
            assert all(x == 0 for x in b[end21 + 1 :])
            e["sd21_differs_before_padding"] = a[: end + 1] != b[: end21 + 1]
            entries.append(e)
        print(f"    {len(entries)} prompts; differing from the slow+ftfy ids: {disagreements}")

    meta = {
        "generator": "tools/reference/make_sd_fixtures.py",
        "versions": {"transformers": transformers.__version__, "tokenizers": __import__("tokenizers").__version__,
                     "ftfy": __import__("ftfy").__version__},
        "source": "../shared/data/tokenizers/clip/bpe_simple_vocab_16e6.txt.gz (openai/CLIP)",
        "reference": "transformers CLIPTokenizer (slow, with ftfy installed): tok(prompt, padding='max_length', "
                     "max_length=77, truncation=True).input_ids -- what StableDiffusionPipeline.encode_prompt calls",
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "model_max_length": MAX_LEN,
        "variants": {
            "sd15": {"pad_token": "<|endoftext|>", "pad_token_id": EOS_ID, "unk_token": "<|endoftext|>"},
            "sd21": {"pad_token": "!", "pad_token_id": 0, "unk_token": "<|endoftext|>"},
        },
        "vocab_size": len(vocab),
        "num_merges": len(merges),
        "generated_files": files,
        "keys": {
            "input_ids_{sd15,sd21}": "reference ids (77), slow CLIPTokenizer + ftfy",
            "input_ids_{v}_fast": "present only where CLIPTokenizerFast differs",
            "input_ids_{v}_slow_no_ftfy": "present only where the slow tokenizer without ftfy (BasicTokenizer "
                                          "fallback, the default in a plain diffusers install) differs",
            "input_ids_{v}_openai": "present only where openai/CLIP SimpleTokenizer (ftfy + html.unescape) differs",
            "tokens": "BPE token strings of the slow tokenizer (no BOS/EOS)",
            "num_tokens": "number of BPE tokens before truncation",
            "truncated": "num_tokens > 75",
        },
        "disagreement_counts_sd15": disagreements,
    }
    # one prompt per line keeps the file small and diffable; ASCII-only so every code point is explicit
    text = ('{\n"meta": ' + json.dumps(meta, indent=2) + ',\n"prompts": [\n'
            + ",\n".join(json.dumps(e) for e in entries) + "\n]\n}\n")
    assert json.loads(text) == {"meta": meta, "prompts": entries}
    (d / "expected_ids.json").write_text(text, encoding="ascii")
    return toks


# --------------------------------------------------------------------------------------------
# img2img step (StreamDiffusion-style, LCM scheduler, no CFG)
# --------------------------------------------------------------------------------------------

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (PNDMScheduler).  StreamDiffusion
# does LCMScheduler.from_config(pipe.scheduler.config).
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    skip_prk_steps=True,
    set_alpha_to_one=False,
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="leading",
)
NUM_INFERENCE_STEPS = 50  # StreamDiffusion default
T_INDEX = 32  # StreamDiffusion's img2img examples use t_index_list=[32, 45]; this is the first entry
IMG2IMG_PROMPT = "a watercolor painting of an astronaut"


@torch.no_grad()
def write_img2img(out: Path, tok: CLIPTokenizer, te: CLIPTextModel, vae: AutoencoderTiny,
                  unet: UNet2DConditionModel, image_u8: np.ndarray, seed: int) -> None:
    print("[img2img_step]")
    d = fresh_dir(out / "img2img_step")

    # 1. prompt -> ids -> embeddings
    input_ids = torch.tensor([sd_tokenize(tok, IMG2IMG_PROMPT)], dtype=torch.int64)
    te_ids = to_tiny_vocab(input_ids)
    prompt_embeds = encode_prompt_like_diffusers(te, te_ids)  # [1,77,32]

    # 2. image -> [-1,1] -> TAESD latents (* scaling_factor, 1.0 for AutoencoderTiny)
    image = image_to_nchw_pm1(image_u8)
    processed = VaeImageProcessor(vae_scale_factor=8).preprocess(Image.fromarray(image_u8), IMAGE_SIZE, IMAGE_SIZE)
    assert torch.allclose(processed, image, atol=1e-6), "image preprocessing mismatch"
    latents = vae.encode(image).latents * vae.config.scaling_factor

    # 3. scheduler
    pndm = PNDMScheduler(**SD15_SCHEDULER)
    sched = LCMScheduler.from_config(pndm.config)
    sched.set_timesteps(NUM_INFERENCE_STEPS)
    timesteps = sched.timesteps.clone()
    t = timesteps[T_INDEX]
    t_int = int(t)
    alpha_prod_t = sched.alphas_cumprod[t_int]  # f32
    alpha_prod_t_sqrt = alpha_prod_t.sqrt()
    beta_prod_t_sqrt = (1 - alpha_prod_t).sqrt()
    c_skip, c_out = sched.get_scalings_for_boundary_condition_discrete(t)

    # 4. add noise (StreamDiffusion.add_noise == LCMScheduler.add_noise)
    noise = randn(tuple(latents.shape), seed)
    noisy = alpha_prod_t_sqrt * latents + beta_prod_t_sqrt * noise
    noisy_sched = sched.add_noise(latents, noise, t.view(1))
    assert torch.allclose(noisy, noisy_sched, atol=1e-6)

    # 5. UNet (epsilon prediction)
    timestep = t.view(1).to(torch.int64)
    model_pred = unet(noisy, timestep, encoder_hidden_states=prompt_embeds).sample

    # 6. LCM boundary-condition step (StreamDiffusion.scheduler_step_batch)
    pred_x0 = (noisy - beta_prod_t_sqrt * model_pred) / alpha_prod_t_sqrt
    denoised = c_out * pred_x0 + c_skip * noisy
    sched._step_index = T_INDEX  # step() looks up the index of t; set it explicitly
    step = sched.step(model_pred, t, noisy, generator=gen(seed + 1))
    assert torch.allclose(step.denoised, denoised, atol=1e-6), (step.denoised - denoised).abs().max()

    # 7. decode (/ scaling_factor) and postprocess to [0,1]
    decoded = vae.decode(denoised / vae.config.scaling_factor).sample
    # (VaeImageProcessor.postprocess would then give (decoded / 2 + 0.5).clamp(0, 1); not stored)

    tensors = {
        "input_ids": input_ids,
        "text_encoder_input_ids": te_ids,
        "prompt_embeds": prompt_embeds,
        "image_u8": torch.from_numpy(image_u8),
        "image": image,
        "latents": latents,
        "noise": noise,
        "timestep": timestep,
        "noisy_latents": noisy,
        "model_pred": model_pred,
        "pred_original_sample": pred_x0,
        "denoised": denoised,
        "decoded": decoded,
    }
    for k in ("prompt_embeds", "latents", "noisy_latents", "model_pred", "denoised", "decoded"):
        stats(k, tensors[k])
    save_tensors(d / "io.safetensors", tensors)
    sched_dir = d / "scheduler"
    sched.save_pretrained(sched_dir)  # scheduler_config.json, diffusers layout
    params = {
        "prompt": IMG2IMG_PROMPT,
        "tokenizer_variant": "sd15 (pad <|endoftext|>)",
        "text_encoder_ids": "input_ids % 1000 (tiny vocab)",
        "components": {"text_encoder": "text_encoder_sd15", "unet": "unet_sd15", "vae": "taesd"},
        "scheduler_class": "LCMScheduler (from_config of the SD 1.5 PNDMScheduler config)",
        "num_train_timesteps": sched.config.num_train_timesteps,
        "beta_schedule": sched.config.beta_schedule,
        "beta_start": sched.config.beta_start,
        "beta_end": sched.config.beta_end,
        "prediction_type": sched.config.prediction_type,
        "original_inference_steps": sched.config.original_inference_steps,
        "num_inference_steps": NUM_INFERENCE_STEPS,
        "timesteps": [int(x) for x in timesteps],
        "t_index": T_INDEX,
        "timestep": t_int,
        "alphas_cumprod_t": float(alpha_prod_t),
        "alpha_prod_t_sqrt": float(alpha_prod_t_sqrt),
        "beta_prod_t_sqrt": float(beta_prod_t_sqrt),
        "timestep_scaling": sched.config.timestep_scaling,
        "sigma_data": 0.5,
        "c_skip": float(c_skip),
        "c_out": float(c_out),
        "c_skip_c_out_per_timestep": {str(int(x)): [float(v) for v in sched.get_scalings_for_boundary_condition_discrete(x)]
                                      for x in timesteps},
        "c_skip_formula": "sigma_data^2 / ((t*timestep_scaling)^2 + sigma_data^2)",
        "c_out_formula": "(t*timestep_scaling) / sqrt((t*timestep_scaling)^2 + sigma_data^2)",
        "vae_scaling_factor": vae.config.scaling_factor,
        "image_size": IMAGE_SIZE,
        "image_source": "../shared/data/images/astronaut.png, PIL bicubic resize to 64x64",
    }
    write_json(d / "params.json", params)
    print(f"    t={t_int} alphas_cumprod={float(alpha_prod_t):.6f} c_skip={float(c_skip):.3e} c_out={float(c_out):.6f}")


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "models" / "tests" / "fixtures" / "sd")
    ap.add_argument("--tokenizer-files", type=Path, default=None,
                    help="also write the full CLIP vocab.json + merges.txt (1.4 MB, not committed) into this folder")
    args = ap.parse_args()
    setup_determinism()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}")

    image_u8 = load_test_image()
    toks = write_tokenizer(out, args.tokenizer_files)
    prompt = "a photo of a cat"
    ids15 = torch.tensor([sd_tokenize(toks["sd15"], prompt)], dtype=torch.int64)
    ids21 = torch.tensor([sd_tokenize(toks["sd21"], prompt)], dtype=torch.int64)
    te15 = write_text_encoder(out, "text_encoder_sd15", TEXT_SD15, 10, ids15)
    write_text_encoder(out, "text_encoder_sd21", TEXT_SD21, 20, ids21)
    unet15 = write_unet(out, "unet_sd15", UNET_SD15, 30)
    write_unet(out, "unet_sd21", UNET_SD21, 40)
    vae = write_taesd(out, 50, image_u8)
    write_img2img(out, toks["sd15"], te15, vae, unet15, image_u8, 60)

    manifest = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "SHA256SUMS":
            manifest[p.relative_to(out).as_posix()] = sha256_file(p)
    (out / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in manifest.items()))
    total = sum((out / n).stat().st_size for n in manifest)
    print(f"wrote {len(manifest)} files, {total / 1e6:.2f} MB, under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
