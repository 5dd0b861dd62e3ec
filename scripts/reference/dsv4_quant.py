"""Official DeepSeek-V4 weight formats and the QAT emulation ops (spec §6, §7.3).

Everything here is built on torch's own float8 casts (torch.float8_e4m3fn, torch.float8_e8m0fnu), so it is an
independent check of the C++ scalar conversions in runtime/core/float_formats.h.

Formats:
  * FP8 linear: e4m3fn codes [out, in] + E8M0 scale per 128x128 block ([ceil(out/128), ceil(in/128)]).
  * FP4 routed expert: e2m1 codes packed two per byte in an int8 tensor [out, in/2]; the LOW nibble holds the even
    column, the HIGH nibble the odd one; E8M0 scale per 32 inputs ([out, in/32]).
"""

import torch

E4M3_MAX = 448.0
E2M1_MAX = 6.0
# Magnitude of e2m1 code n & 7 (spec §7.3).
E2M1_TABLE = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)


def pow2_scale(amax: torch.Tensor, qmax: float) -> torch.Tensor:
    """Smallest power of two s with amax / s <= qmax ("ue8m0" scale), computed exactly in float64."""
    return torch.pow(2.0, torch.ceil(torch.log2(amax.double() / qmax)))


def scale_to_e8m0(scale: torch.Tensor) -> torch.Tensor:
    """Power-of-two float scale -> torch.float8_e8m0fnu tensor (exact; asserts the input is a power of two)."""
    e = torch.log2(scale.double())
    assert torch.equal(e, torch.round(e)), "E8M0 scales must be powers of two"
    assert bool((e >= -127).all() and (e <= 127).all()), "E8M0 exponent out of range"
    out = scale.float().to(torch.float8_e8m0fnu)
    assert torch.equal(out.double(), scale.double())
    return out


def e8m0_to_float(s: torch.Tensor) -> torch.Tensor:
    """Decode by reinterpreting the byte (spec §7.3 / §10.9): 2^(byte-127), byte 0 -> 2^-127."""
    b = s.view(torch.uint8).to(torch.int64)
    return torch.pow(2.0, (b - 127).double())


# ----------------------------------------------------------------------------------------------------------------
# FP8 128x128 block weights
# ----------------------------------------------------------------------------------------------------------------
def quantize_fp8_block(w: torch.Tensor, block: int = 128):
    """w [out, in] float -> (e4m3 codes [out, in], E8M0 scales [ceil(out/b), ceil(in/b)])."""
    out_f, in_f = w.shape
    assert out_f % block == 0 and in_f % block == 0, f"FP8 weight {tuple(w.shape)} not a multiple of {block}"
    wb = w.double().reshape(out_f // block, block, in_f // block, block)
    amax = wb.abs().amax(dim=(1, 3)).clamp_min(1e-30)
    scale = pow2_scale(amax, E4M3_MAX)  # [out/b, in/b]
    q = (wb / scale[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).float().to(torch.float8_e4m3fn)
    return q.reshape(out_f, in_f), scale_to_e8m0(scale)


def dequantize_fp8_block(q: torch.Tensor, s: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Exact float64 value of an FP8 block weight: W[r,c] = e4m3(Q[r,c]) * S[r/128, c/128]."""
    scale = e8m0_to_float(s)
    full = scale.repeat_interleave(block, 0)[: q.shape[0]].repeat_interleave(block, 1)[:, : q.shape[1]]
    return q.double() * full


# ----------------------------------------------------------------------------------------------------------------
# FP4 (e2m1) routed-expert weights
# ----------------------------------------------------------------------------------------------------------------
def e2m1_round(x: torch.Tensor) -> torch.Tensor:
    """Round float64 values (already divided by the scale) to the e2m1 grid values, ties to the even CODE.

    Grid magnitudes by code: 0:0 1:.5 2:1 3:1.5 4:2 5:3 6:4 7:6. A tie between two neighbours goes to the even code
    (e.g. 0.25 -> 0, 0.75 -> 1.0, 1.25 -> 1.0, 1.75 -> 2.0, 2.5 -> 2.0, 3.5 -> 4.0, 5.0 -> 4.0); |x| > 6 saturates.
    """
    return e2m1_decode(e2m1_encode(x))


def e2m1_encode(x: torch.Tensor) -> torch.Tensor:
    """float64 -> 4-bit codes (int64 0..15), round to nearest, ties to even code, saturating at 6."""
    mag = x.abs().clamp(max=E2M1_MAX)
    table = E2M1_TABLE.to(mag.device)
    # Distance to every grid point; pick the nearest, on a tie the even code (the lower index is not always even:
    # 1.75 lies between codes 3 and 4 -> code 4).
    d = (mag[..., None] - table).abs()
    best = d.min(dim=-1, keepdim=True).values
    cand = d == best
    idx = torch.arange(8, device=mag.device)
    even_pref = torch.where(cand & (idx % 2 == 0), idx, torch.full_like(idx, 99)).min(dim=-1).values
    any_pref = torch.where(cand, idx, torch.full_like(idx, 99)).min(dim=-1).values
    code = torch.where(even_pref < 99, even_pref, any_pref)
    sign = ((x < 0) & (code > 0)).to(torch.int64)
    return code + 8 * sign


def e2m1_decode(code: torch.Tensor) -> torch.Tensor:
    table = E2M1_TABLE.to(code.device)
    mag = table[code & 7]
    return torch.where((code >> 3) & 1 == 1, -mag, mag)


def quantize_fp4_experts(w: torch.Tensor, block: int = 32):
    """w [out, in] -> (packed int8 [out, in/2], E8M0 scales [out, in/32]). Low nibble = even column."""
    out_f, in_f = w.shape
    assert in_f % block == 0 and in_f % 2 == 0
    wb = w.double().reshape(out_f, in_f // block, block)
    amax = wb.abs().amax(dim=-1).clamp_min(1e-30)
    scale = pow2_scale(amax, E2M1_MAX)
    codes = e2m1_encode(wb / scale[..., None]).reshape(out_f, in_f)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8).view(torch.int8)
    return packed, scale_to_e8m0(scale)


def dequantize_fp4_experts(packed: torch.Tensor, s: torch.Tensor, block: int = 32) -> torch.Tensor:
    b = packed.view(torch.uint8).to(torch.int64)
    lo, hi = b & 0xF, (b >> 4) & 0xF
    codes = torch.stack([lo, hi], dim=-1).reshape(b.shape[0], b.shape[1] * 2)
    vals = e2m1_decode(codes)
    return vals * e8m0_to_float(s).repeat_interleave(block, 1)


# ----------------------------------------------------------------------------------------------------------------
# QAT emulation ops used by the `reference` numerics mode (spec §6), all from torch casts.
# ----------------------------------------------------------------------------------------------------------------
def fp8_roundtrip(x: torch.Tensor, block: int) -> torch.Tensor:
    """Per-block FP8 round trip along the last dim: amax floor 1e-4, pow2 scale, e4m3 RNE, x * scale."""
    shp = x.shape
    xb = x.float().reshape(*shp[:-1], shp[-1] // block, block)
    amax = xb.abs().amax(dim=-1, keepdim=True).clamp_min(1e-4)
    scale = pow2_scale(amax, E4M3_MAX).float()
    q = (xb / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float()
    return (q * scale).reshape(shp)


def fp4_roundtrip(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """Per-block FP4 (e2m1) round trip: amax floor 6*2^-126, pow2 scale, RNE to the e2m1 grid (ties to even code)."""
    shp = x.shape
    xb = x.float().reshape(*shp[:-1], shp[-1] // block, block)
    amax = xb.abs().amax(dim=-1, keepdim=True).clamp_min(6.0 * 2.0**-126)
    scale = pow2_scale(amax, E2M1_MAX)
    q = e2m1_round(xb.double() / scale)
    return (q * scale).float().reshape(shp)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Walsh-Hadamard transform (Sylvester order) along the last dim, scaled by n^-0.5."""
    n = x.shape[-1]
    assert n & (n - 1) == 0
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (x.double() @ h.T * (n ** -0.5)).to(x.dtype)
