"""PyTorch CPU baseline for the ptq4vit benchmarks.

Runs the same CIFAR-10 checkpoints as the Node.js implementation (../shared/models/NAME.safetensors + NAME.json)
in PyTorch float32 on the CPU, with VisionTransformer and SwinTransformer re-implemented here in plain PyTorch
to match timm exactly (timm is not installed; the weights load with load_state_dict(strict=True)).

Two measurements:

  forward  top-1 / top-5 over the first --images test images (../shared/data/cifar10/test_images.u8;
           preprocessing x/255, normalize with the card's mean/std, NCHW, no resize) and throughput in
           images/s: one untimed warm-up batch, then the whole loop (per-batch preprocessing + forward under
           torch.inference_mode()) is timed; model loading and reading the raw file are excluded.
           On all 10000 images the top-1 must equal the card's test_top1_cpu_fp32 (0.7575 / 0.7238).

  grads    the PTQ4ViT gradient workload: on the first --images (32) calibration images
           (calib32_images.u8), one forward + backward of mean cross-entropy(logits, labels) with autograd,
           retaining dL/d(output) of every quantization point: patch_embed.proj, every qkv / proj / fc1 / fc2,
           Swin downsample.reduction, the head, and both attention products attn.matmul1 (q·kᵀ; for ViT
           before the 1/√d scale, for Swin with q already scaled, as the fixtures define them) and
           attn.matmul2 (softmax·v). Reports the median wall seconds of --repeat runs. Parameters are frozen
           (only activation gradients are computed); --param-grads also computes the weight gradients, as the
           original PTQ4ViT code incidentally does.

  export-onnx  torch.onnx.export of the --export-models (default vit_tiny_c10, swin_micro_c10 and
           vit_small_patch16_224_random; also vit_base_patch16_224_random, swin_tiny_patch4_window7_224_random: the
           ImageNet-sized models with seeded random weights, each also written as safetensors + card so ptq4vit runs
           the same model) to
           --out-dir/NAME.torch.onnx: input `pixel_values` [batch, 3, S, S], output `logits`, dynamic batch,
           opset 17 — what a PyTorch user would deploy (scripts/bench_deploy.ts runs them under onnxruntime).
           torch 1.13's exporter serializes with its own bundled ONNX; the `onnx` Python package is not needed.

For the *_random models, forward times --images seeded random N(0, 1) inputs (no accuracy).
Each run prints a human-readable line and, last, one JSON line.

  /usr/bin/python3 scripts/pytorch_baseline.py forward --model vit_tiny_c10 [--images 10000] [--batch-size 64] [--threads 2]
  /usr/bin/python3 scripts/pytorch_baseline.py grads --model swin_micro_c10 [--images 32] [--threads 2] [--repeat 3]
  /usr/bin/python3 scripts/pytorch_baseline.py forward --model vit_tiny_c10 --split test1k --images 1000
  /usr/bin/python3 scripts/pytorch_baseline.py forward --model vit_small_patch16_224_random --images 256 --batch-size 32
  /usr/bin/python3 scripts/pytorch_baseline.py export-onnx --out-dir results/deploy [--opset 17] [--seed 0]

Use the Debian system python (/usr/bin/python3, PyTorch 1.13 + numpy); --shared defaults to ../shared
relative to the repository. That torch is built with BLAS_INFO=generic and runs its matmuls on whatever
libblas.so.3 resolves to: Debian's default libblas3 is the unoptimized reference BLAS (~7 GFLOP/s here, about
20x slower than OpenBLAS), which is no baseline. Timings need OpenBLAS, as the reference PTQ4ViT numbers in
shared/reference used: `apt-get install libopenblas0-pthread` (switches libblas.so.3), or without touching the
system, LD_LIBRARY_PATH=<dir with OpenBLAS's libblas.so.3>. The JSON's "blas" says which one ran (a warning is
printed on the reference BLAS); OpenBLAS's thread count is set to --threads, and OMP_WAIT_POLICY defaults to
PASSIVE (see below).
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import struct
import sys
import time

# libgomp's default active spin-wait steals one of the two cores from OpenBLAS's own (pthread) worker between
# parallel regions: with it, 2 threads ran 2-4x slower than 1 on the (busy) 2-core machine, with PASSIVE faster
# than 1 thread. libgomp reads it when torch loads it; set it in the environment to override.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SHARED = os.path.join(os.path.dirname(REPO), 'shared')


# ----------------------------------------------------------------------------------------------- safetensors

_ST_DTYPES = {'F16': np.float16, 'F32': np.float32, 'F64': np.float64}


def load_safetensors(path):
    """Reads a safetensors file into {name: float32 torch tensor} (F16 / BF16 / F32 / F64)."""
    with open(path, 'rb') as f:
        data = f.read()
    (header_len,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + header_len].decode('utf-8'))
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        start, end = info['data_offsets']
        raw = data[base + start:base + end]
        dtype = info['dtype']
        if dtype == 'BF16':
            arr = (np.frombuffer(raw, dtype='<u2').astype(np.uint32) << 16).view(np.float32)
        elif dtype in _ST_DTYPES:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_DTYPES[dtype]).newbyteorder('<'))
        else:
            raise ValueError(f'{path}: tensor {name} has unsupported dtype {dtype}')
        arr = arr.astype(np.float32).reshape(info['shape'])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ----------------------------------------------------------------------------------------------- shared pieces

class MatMul(nn.Module):
    """a @ b as a module, so the attention products are quantization points that hooks can see."""

    def forward(self, a, b):
        return a @ b


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as timm
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


# ----------------------------------------------------------------------------------------------- ViT

class VitAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.matmul1 = MatMul()
        self.matmul2 = MatMul()

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # PTQ4ViT's matmul1 is q·kᵀ before the scale; timm scales q first. The head dims here are powers
        # of two (scale 2^-k), for which both orders give bit-identical results.
        attn = self.matmul1(q, k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = self.matmul2(attn, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class VitBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VitAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VitPatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # B, N, C


class VisionTransformer(nn.Module):
    """timm VisionTransformer, default configuration (cls token, class-token pooling, pre-norm blocks)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, **ignored):
        super().__init__()
        _reject_unknown('VisionTransformer', ignored)
        grid = img_size // patch_size
        self.patch_embed = VitPatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.blocks = nn.Sequential(*[VitBlock(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# ----------------------------------------------------------------------------------------------- Swin

def window_partition(x, ws):
    """B, H, W, C → B·nW, wh·ww, C (windows in row-major order over the window grid)."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws[0], ws[0], W // ws[1], ws[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws[0] * ws[1], C)


def window_reverse(windows, ws, H, W):
    C = windows.shape[-1]
    x = windows.view(-1, H // ws[0], W // ws[1], ws[0], ws[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(wh, ww):
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij'))  # 2, wh, ww
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()  # N, N, 2
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    return rel.sum(-1)  # N, N


class WindowAttention(nn.Module):
    def __init__(self, dim, num_heads, window_size, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.window_area = window_size[0] * window_size[1]
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        self.register_buffer('relative_position_index', relative_position_index(*window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.matmul1 = MatMul()
        self.matmul2 = MatMul()

    def rel_pos_bias(self):
        n = self.window_area
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)  # 1, heads, N, N

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = self.matmul1(q, k.transpose(-2, -1))
        attn = attn + self.rel_pos_bias()
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = attn.softmax(dim=-1)
        x = self.matmul2(attn, v)
        x = x.transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)


class SwinBlock(nn.Module):
    def __init__(self, dim, input_resolution, num_heads, window_size, shift_size, mlp_ratio):
        super().__init__()
        self.input_resolution = input_resolution
        # timm's _calc_window_shift: a window larger than the resolution is clamped to it, with no shift.
        ws = tuple(r if r <= w else w for r, w in zip(input_resolution, (window_size, window_size)))
        ss = tuple(0 if r <= w else s for r, w, s in zip(input_resolution, ws, (shift_size, shift_size)))
        self.window_size, self.shift_size = ws, ss
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, ws)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer('attn_mask', self._attn_mask(), persistent=False)

    def _attn_mask(self):
        if not any(self.shift_size):
            return None
        H, W = self.input_resolution
        ws, ss = self.window_size, self.shift_size
        H = math.ceil(H / ws[0]) * ws[0]
        W = math.ceil(W / ws[1]) * ws[1]
        img_mask = torch.zeros((1, H, W, 1))
        cnt = 0
        for h in ((0, -ws[0]), (-ws[0], -ss[0]), (-ss[0], None)):
            for w in ((0, -ws[1]), (-ws[1], -ss[1]), (-ss[1], None)):
                img_mask[:, h[0]:h[1], w[0]:w[1], :] = cnt
                cnt += 1
        mask_windows = window_partition(img_mask, ws).squeeze(-1)  # nW, N
        mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def _attn(self, x):
        B, H, W, C = x.shape
        if any(self.shift_size):
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        windows = window_partition(x, self.window_size)
        windows = self.attn(windows, mask=self.attn_mask)
        x = window_reverse(windows, self.window_size, H, W)
        if any(self.shift_size):
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x

    def forward(self, x):
        B, H, W, C = x.shape
        x = x + self._attn(self.norm1(x))
        x = x.reshape(B, -1, C)
        x = x + self.mlp(self.norm2(x))
        return x.reshape(B, H, W, C)


class PatchMerging(nn.Module):
    def __init__(self, dim, out_dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x):
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim, out_dim, input_resolution, depth, downsample, num_heads, window_size, mlp_ratio):
        super().__init__()
        if downsample:
            self.downsample = PatchMerging(dim, out_dim)
            input_resolution = (input_resolution[0] // 2, input_resolution[1] // 2)
        else:
            assert dim == out_dim
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(out_dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio)
            for i in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class SwinPatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # NHWC


class SwinHead(nn.Module):
    def __init__(self, dim, num_classes):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(1, 2)))


class SwinTransformer(nn.Module):
    """timm ≥ 0.9 SwinTransformer (NHWC, patch merging at the start of stages ≥ 1, head.fc)."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0, **ignored):
        super().__init__()
        _reject_unknown('SwinTransformer', ignored)
        self.patch_embed = SwinPatchEmbed(patch_size, in_chans, embed_dim)
        res = (img_size // patch_size, img_size // patch_size)
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        stages = []
        in_dim = embed_dim
        for i, depth in enumerate(depths):
            stages.append(SwinStage(in_dim, dims[i], res, depth, i > 0, num_heads[i], window_size, mlp_ratio))
            if i > 0:
                res = (res[0] // 2, res[1] // 2)
            in_dim = dims[i]
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = SwinHead(dims[-1], num_classes)

    def forward(self, x):
        return self.head(self.norm(self.layers(self.patch_embed(x))))


def _reject_unknown(cls, kwargs):
    unknown = {k: v for k, v in kwargs.items() if k not in ('drop_path_rate', 'drop_rate', 'attn_drop_rate')}
    if unknown:
        raise ValueError(f'{cls}: unsupported timm_kwargs {unknown}')


ARCHS = {'VisionTransformer': VisionTransformer, 'SwinTransformer': SwinTransformer}


# ImageNet-sized models with seeded random weights: the deployment benchmark's ViT-S/16-224, ViT-B/16-224 and
# Swin-T/224 (timm's architectures and preprocessing for vit_small_patch16_224, vit_base_patch16_224 and
# swin_tiny_patch4_window7_224; no trained weights are needed for speed).
def _vit_card(name, embed_dim, num_heads):
    """timm's vit_*_patch16_224 architecture and preprocessing at one width."""
    return {
        'name': name,
        'timm_class': 'VisionTransformer',
        'timm_kwargs': {'img_size': 224, 'patch_size': 16, 'embed_dim': embed_dim, 'depth': 12, 'num_heads': num_heads,
                        'mlp_ratio': 4.0, 'qkv_bias': True, 'num_classes': 1000},
        'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5], 'crop_pct': 0.9, 'interpolation': 'bicubic',
    }


RANDOM_MODELS = {
    'vit_small_patch16_224_random': _vit_card('vit_small_patch16_224_random', 384, 6),
    'vit_base_patch16_224_random': _vit_card('vit_base_patch16_224_random', 768, 12),
    'swin_tiny_patch4_window7_224_random': {
        'name': 'swin_tiny_patch4_window7_224_random',
        'timm_class': 'SwinTransformer',
        'timm_kwargs': {'img_size': 224, 'patch_size': 4, 'window_size': 7, 'embed_dim': 96, 'depths': [2, 2, 6, 2],
                        'num_heads': [3, 6, 12, 24], 'mlp_ratio': 4.0, 'num_classes': 1000},
        'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225], 'crop_pct': 0.9, 'interpolation': 'bicubic',
    },
}


def random_model(name, seed):
    """Seeded random weights: PyTorch's default Linear/Conv init, timm-like N(0, 0.02) tokens and positions, and
    perturbed LayerNorms so no term is trivially zero or one."""
    card = dict(RANDOM_MODELS[name], seed=seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ARCHS[card['timm_class']](**card['timm_kwargs'])
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(('cls_token', 'pos_embed')):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            elif '.norm' in pname or pname.startswith('norm'):
                p.copy_((1.0 if pname.endswith('weight') else 0.0) + torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval(), card


def load_model(models_dir, name, seed=0):
    if name in RANDOM_MODELS:
        return random_model(name, seed)
    with open(os.path.join(models_dir, name + '.json')) as f:
        card = json.load(f)
    cls = ARCHS.get(card['timm_class'])
    if cls is None:
        raise ValueError(f"{name}: timm_class {card['timm_class']} is not implemented here")
    model = cls(**card['timm_kwargs'])
    model.load_state_dict(load_safetensors(os.path.join(models_dir, name + '.safetensors')), strict=True)
    return model.eval(), card


def quant_points(model):
    """(name, module) of every quantization point, in forward order: linear layers, the patch-embed conv and
    the two attention products."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, MatMul))]


# ----------------------------------------------------------------------------------------------- BLAS

def setup_blas(threads):
    """Which BLAS libtorch is running on (Debian's torch has BLAS_INFO=generic: whatever libblas.so.3 resolves
    to), with OpenBLAS's own thread count set to `threads` (torch.set_num_threads does not reach it here)."""
    paths = []
    with open('/proc/self/maps') as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ''
            if ('blas' in os.path.basename(path) or 'mkl' in os.path.basename(path)) and path not in paths:
                paths.append(path)
    for path in paths:
        if 'openblas' in path:
            lib = ctypes.CDLL(path)
            lib.openblas_set_num_threads(threads)
            lib.openblas_get_config.restype = ctypes.c_char_p
            config = lib.openblas_get_config().decode().split()  # "OpenBLAS 0.3.21 DYNAMIC_ARCH ..."
            return ' '.join(config[:2]) + f' ({path})'
    for path in paths:
        if 'mkl' in path:
            return 'MKL'
    if any(os.path.realpath(p).startswith('/usr/lib/x86_64-linux-gnu/blas/') for p in paths):
        print('WARNING: libtorch is on the reference (netlib) BLAS, ~20x slower than OpenBLAS: timings are not a '
              'fair baseline. Install OpenBLAS (apt-get install libopenblas0-pthread) or point LD_LIBRARY_PATH at '
              'a directory holding its libblas.so.3.', file=sys.stderr)
        return 'reference'
    return os.path.basename(paths[0]) if paths else 'unknown'


# ----------------------------------------------------------------------------------------------- data

def read_split(data_dir, prefix, count):
    images = np.fromfile(os.path.join(data_dir, prefix + '_images.u8'), dtype=np.uint8).reshape(-1, 32, 32, 3)
    labels = np.fromfile(os.path.join(data_dir, prefix + '_labels.u8'), dtype=np.uint8)
    if count > len(images):
        raise ValueError(f'{prefix}: asked for {count} images, only {len(images)} available')
    return images[:count], labels[:count].astype(np.int64)


def preprocess(images_u8, mean, std):
    """uint8 HWC → float32 NCHW: x/255, then (x - mean)/std (torchvision ToTensor + Normalize)."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div_(255)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1)).contiguous()


# ----------------------------------------------------------------------------------------------- tasks

def run_forward(args, model, card, mean, std):
    if args.model in RANDOM_MODELS:
        return run_forward_random(args, model, card)
    images, labels = read_split(args.data, args.split, args.images)
    labels_t = torch.from_numpy(labels)
    bs = args.batch_size
    with torch.inference_mode():
        model(preprocess(images[:min(bs, len(images))], mean, std))  # warm-up, untimed
        top1 = top5 = 0
        logits_all = []
        start = time.perf_counter()
        for s in range(0, len(images), bs):
            logits = model(preprocess(images[s:s + bs], mean, std))
            y = labels_t[s:s + bs]
            top1 += int((logits.argmax(dim=1) == y).sum())
            top5 += int((logits.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum())
            logits_all.append(logits)
        seconds = time.perf_counter() - start
    n = len(images)
    result = {'top1': top1 / n, 'top5': top5 / n, 'seconds': seconds, 'images_per_second': n / seconds}

    # Agreement with the card's GPU (TF32) logits of every 20th test image (expect ~5e-3).
    ref_path = os.path.join(args.models, card.get('logits_file', args.model + '.logits_every20.f32'))
    if os.path.exists(ref_path) and n > 0 and args.split == 'test':
        ref = np.fromfile(ref_path, dtype='<f4').reshape(-1, logits_all[0].shape[1])
        ours = torch.cat(logits_all).numpy()[::20]
        rows = min(len(ours), len(ref))
        result['logits_every20_max_abs_diff'] = float(np.abs(ours[:rows] - ref[:rows]).max())

    expected = card.get('test_top1_cpu_fp32')
    check = ''
    if expected is not None and args.split == 'test' and n == card.get('test_images', 10000):
        result['card_top1'] = expected
        result['matches_card'] = abs(result['top1'] - expected) < 5e-5
        check = f" (card {expected:.4f}: {'match' if result['matches_card'] else 'MISMATCH'})"
    print(f"{args.model} forward: top-1 {result['top1']:.4f}{check}, top-5 {result['top5']:.4f} over {n} images; "
          f"{seconds:.2f} s = {result['images_per_second']:.1f} img/s (batch {bs}, {args.threads} threads)"
          + (f"; max |logits - card logits| {result['logits_every20_max_abs_diff']:.2e}"
             if 'logits_every20_max_abs_diff' in result else ''))
    return result


def random_inputs(count, size, seed):
    """Normalized-image-like inputs for a model without a dataset: seeded N(0, 1), float32 NCHW."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((count, 3, size, size), generator=gen)


def run_forward_random(args, model, card):
    """Throughput only (random weights have no accuracy): the same timing loop as run_forward, on --images
    seeded random normalized tensors made before the clock starts."""
    size = card['timm_kwargs']['img_size']
    x = random_inputs(args.images, size, args.seed + 1)
    bs = args.batch_size
    with torch.inference_mode():
        model(x[:min(bs, len(x))])  # warm-up, untimed
        start = time.perf_counter()
        for s in range(0, len(x), bs):
            model(x[s:s + bs])
        seconds = time.perf_counter() - start
    n = len(x)
    print(f"{args.model} forward: {n} random {size}x{size} inputs, {seconds:.2f} s = {n / seconds:.1f} img/s "
          f"(batch {bs}, {args.threads} threads)")
    return {'seconds': seconds, 'images_per_second': n / seconds}


def write_safetensors(path, tensors, metadata=None):
    """float32 safetensors (names sorted, offsets in that order): what ptq4vit's openModel reads."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header['__metadata__'] = metadata
    for name in sorted(tensors):
        arr = tensors[name].detach().contiguous().numpy().astype('<f4')
        blob = arr.tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(arr.shape), 'data_offsets': [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(',', ':')).encode()
    head += b' ' * ((8 - len(head) % 8) % 8)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def run_export_onnx(args):
    """torch.onnx.export of each --export-models model: what a PyTorch user would deploy. Input `pixel_values`
    float32 [batch, 3, S, S], output `logits` [batch, classes], dynamic batch, opset --opset; traced on a batch
    of 2 (so no size-1 batch gets baked in). A random model also gets its weights (safetensors) and card, so
    ptq4vit runs the very same model."""
    os.makedirs(args.out_dir, exist_ok=True)
    results = []
    for name in args.export_models:
        model, card = load_model(args.models, name, args.seed)
        size = card['timm_kwargs'].get('img_size', 224)
        dummy = random_inputs(2, size, args.seed + 1)
        path = os.path.join(args.out_dir, name + '.torch.onnx')
        tmp = path + '.tmp'
        start = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), tmp, input_names=['pixel_values'], output_names=['logits'],
                              dynamic_axes={'pixel_values': {0: 'batch'}, 'logits': {0: 'batch'}},
                              opset_version=args.opset, do_constant_folding=True)
        os.replace(tmp, path)
        seconds = time.perf_counter() - start
        entry = {'model': name, 'onnx': path, 'bytes': os.path.getsize(path), 'opset': args.opset,
                 'export_seconds': seconds}
        if name in RANDOM_MODELS:
            weights = os.path.join(args.out_dir, name + '.safetensors')
            write_safetensors(weights, model.state_dict(), {'seed': str(args.seed)})
            card_path = os.path.join(args.out_dir, name + '.json')
            with open(card_path + '.tmp', 'w') as f:
                json.dump(card, f, indent=1)
            os.replace(card_path + '.tmp', card_path)
            entry.update({'weights': weights, 'card': card_path})
        print(f"{name}: torch.onnx.export (opset {args.opset}, dynamic batch) -> {path}, "
              f"{entry['bytes'] / 1e6:.1f} MB in {seconds:.1f} s")
        results.append(entry)
    return {'exports': results}


def run_grads(args, model, card, mean, std):
    images, labels = read_split(args.data, 'calib32', args.images)
    x = preprocess(images, mean, std)
    y = torch.from_numpy(labels)
    model.requires_grad_(args.param_grads)
    points = quant_points(model)
    retained = {}

    def make_hook(name):
        def hook(module, inputs, output):
            if output.requires_grad:
                output.retain_grad()
            else:
                # Only the patch-embed conv output with frozen parameters: make it the leaf autograd starts
                # from (its .grad is then kept by default), so no gradient w.r.t. the image is computed.
                output.requires_grad_(True)
            retained[name] = output
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in points]
    times = []
    loss_value = None
    covered = 0
    for _ in range(args.repeat):
        retained.clear()
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        times.append(time.perf_counter() - start)
        loss_value = float(loss)
        covered = sum(1 for t in retained.values() if t.grad is not None)
    for h in handles:
        h.remove()
    if covered != len(points):
        missing = [n for n, t in retained.items() if t.grad is None]
        raise RuntimeError(f'gradients missing at {len(points) - covered} quantization points: {missing[:5]}')
    seconds = statistics.median(times)
    print(f"{args.model} grads: forward+backward over {len(images)} calibration images, dL/dout retained at "
          f"{covered}/{len(points)} quantization points, loss {loss_value:.4f}; median {seconds:.3f} s of "
          f"{args.repeat} ({', '.join(f'{t:.3f}' for t in times)}), {args.threads} threads"
          + (', with parameter gradients' if args.param_grads else ''))
    return {'seconds': seconds, 'runs_seconds': times, 'loss': loss_value, 'quant_points': covered,
            'param_grads': bool(args.param_grads), 'images_per_second': len(images) / seconds}


def main(argv=None):
    p = argparse.ArgumentParser(description='PyTorch CPU baseline (forward accuracy/throughput, PTQ4ViT gradients).')
    p.add_argument('task', choices=['forward', 'grads', 'export-onnx'])
    p.add_argument('--model', help='model name in <shared>/models, e.g. vit_tiny_c10, swin_micro_c10, or '
                   + ', '.join(RANDOM_MODELS) + ' (seeded random weights)')
    p.add_argument('--images', type=int, default=None, help='first N images (forward: 10000, grads: 32)')
    p.add_argument('--split', default='test', choices=['test', 'test1k'], help='forward: which test images')
    p.add_argument('--seed', type=int, default=0, help='random models: weight seed (inputs use seed + 1)')
    p.add_argument('--out-dir', help='export-onnx: where to write NAME.torch.onnx')
    p.add_argument('--export-models', nargs='+', default=['vit_tiny_c10', 'swin_micro_c10', 'vit_small_patch16_224_random'],
                   help='export-onnx: the models to export')
    p.add_argument('--opset', type=int, default=17, help='export-onnx: ONNX opset')
    p.add_argument('--batch-size', type=int, default=64, help='forward batch size')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeat', type=int, default=3, help='grads: runs to take the median of')
    p.add_argument('--param-grads', action='store_true', help='grads: also compute parameter gradients')
    p.add_argument('--shared', default=DEFAULT_SHARED, help='the shared/ directory (default: ../shared)')
    args = p.parse_args(argv)
    if args.images is None:
        args.images = {'forward': 10000, 'grads': 32}.get(args.task, 0)
    args.models = os.path.join(args.shared, 'models')
    args.data = os.path.join(args.shared, 'data', 'cifar10')

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    blas = setup_blas(args.threads)
    if args.task == 'export-onnx':
        if not args.out_dir:
            p.error('export-onnx needs --out-dir')
        record = {'framework': 'pytorch', 'torch': torch.__version__, 'task': args.task, 'seed': args.seed}
        record.update(run_export_onnx(args))
        print(json.dumps(record))
        return 0
    if not args.model:
        p.error(f'{args.task} needs --model')
    model, card = load_model(args.models, args.model, args.seed)
    mean = torch.tensor(card['mean'], dtype=torch.float32)
    std = torch.tensor(card['std'], dtype=torch.float32)
    if args.task == 'forward':
        result = run_forward(args, model, card, mean, std)
    else:
        result = run_grads(args, model, card, mean, std)
    record = {'framework': 'pytorch', 'torch': torch.__version__, 'threads': args.threads, 'blas': blas,
              'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'),
              'model': args.model,
              'task': args.task, 'images': args.images}
    if args.task == 'forward':
        record['batch_size'] = args.batch_size
        record['split'] = args.split if args.model not in RANDOM_MODELS else 'random'
        if args.model in RANDOM_MODELS:
            record['seed'] = args.seed
    record.update(result)
    print(json.dumps(record))


if __name__ == '__main__':
    sys.exit(main())
