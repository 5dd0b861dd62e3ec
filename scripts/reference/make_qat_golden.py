"""Golden data for the QAT emulation ops of the `reference` numerics mode (spec §6), from torch's float8 casts.

Writes tests/golden/qat/{manifest.json, *.f32}. Ops (all along the last dim, rows independent):
  fp8_rt64      FP8 e4m3 round trip in blocks of 64 (raw KV dims 0..447, main compressed rows): 448-d rows
  act_q128      per-128 activation quantisation before FP8/FP4 GEMMs: round-tripped values + the scales
  had_fp4_rt32  Walsh-Hadamard (Sylvester order, x 128^-0.5) then FP4 e2m1 round trip in blocks of 32: 128-d rows
"""

import json
import os

import numpy as np
import torch

from dsv4_quant import E4M3_MAX, fp4_roundtrip, fp8_roundtrip, hadamard, pow2_scale


def _rows(g, n_rows, width, block):
    """Random rows with very different magnitudes per block, plus hand-made edge cases."""
    x = torch.randn(n_rows, width, generator=g, dtype=torch.float64)
    mag = torch.pow(10.0, torch.empty(n_rows, width // block, dtype=torch.float64).uniform_(-4, 4, generator=g))
    x = x * mag.repeat_interleave(block, 1)
    edge = torch.zeros(8, width, dtype=torch.float64)
    edge[1] = 1e-7  # below the amax floor: scale is set by the floor
    edge[2, ::7] = 3.0e4  # sparse outliers: most values fall into e4m3 subnormals / e2m1 zero
    edge[2, 1::7] = 1.0
    # exact midpoints between representable neighbours (ties): with amax 448 the scale is 1
    ties = torch.tensor([448.0, 1.0625, 1.1875, 0.015625 * 1.5, 2.0 ** -9 * 1.5, 2.0 ** -9 * 0.5, 7.5, 240.0 + 8.0])
    edge[3] = ties.double().repeat(width // 8 + 1)[:width]
    edge[4] = -edge[3]
    edge[5] = torch.linspace(-6.0, 6.0, width, dtype=torch.float64)  # FP4 grid and its midpoints (scale 1)
    edge[6] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0]).double().repeat(width // 8 + 1)[:width]
    edge[7] = 447.9 * torch.sign(torch.randn(width, generator=g, dtype=torch.float64))
    return torch.cat([x, edge], 0).float()


def _write(out, name, t):
    np.ascontiguousarray(t.to(torch.float32).numpy()).astype("<f4").tofile(os.path.join(out, name))
    return {"file": name, "dtype": "float32", "byte_order": "little", "shape": list(t.shape)}


def act_scales(x, block):
    xb = x.float().reshape(*x.shape[:-1], x.shape[-1] // block, block)
    amax = xb.abs().amax(-1).clamp_min(1e-4)
    return pow2_scale(amax, E4M3_MAX).float()


def make(out):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(4242)
    ops = {}

    x = _rows(g, 24, 448, 64)
    y = fp8_roundtrip(x, 64)
    ops["fp8_rt64"] = {"input": _write(out, "fp8_rt64.in.f32", x), "output": _write(out, "fp8_rt64.out.f32", y),
                       "block": 64,
                       "rule": "per block of 64: amax = max(max|x|, 1e-4); s = 2^ceil(log2(amax/448)); "
                               "y = e4m3_rne(clamp(x/s, -448, 448)) * s"}

    x = _rows(g, 24, 512, 128)
    y = fp8_roundtrip(x, 128)
    ops["act_q128"] = {"input": _write(out, "act_q128.in.f32", x), "output": _write(out, "act_q128.out.f32", y),
                       "scales": _write(out, "act_q128.scale.f32", act_scales(x, 128)), "block": 128,
                       "rule": "same as fp8_rt64 with blocks of 128; `scales` [rows, 512/128] are the power-of-two "
                               "scales s (the e4m3 codes are output / s)"}

    x = _rows(g, 24, 128, 32)
    h = hadamard(x.double()).float()
    y = fp4_roundtrip(h, 32)
    ops["had_fp4_rt32"] = {"input": _write(out, "had_fp4_rt32.in.f32", x),
                           "hadamard": _write(out, "had_fp4_rt32.had.f32", h),
                           "output": _write(out, "had_fp4_rt32.out.f32", y), "block": 32,
                           "rule": "h = x @ H128^T * 128^-0.5 (Sylvester order: H[i][j] = (-1)^popcount(i&j)), "
                                   "computed in float64 and rounded to float32; per block of 32 of h: "
                                   "amax = max(max|h|, 6*2^-126); s = 2^ceil(log2(amax/6)); "
                                   "y = e2m1_rne(h/s) * s (grid 0,.5,1,1.5,2,3,4,6; ties to the even code)"}
    manifest = {"format_version": 1, "generator": "scripts/reference/make_qat_golden.py (via make_golden.py)",
                "torch": torch.__version__, "ops": ops,
                "note": "rows are independent; the last 8 rows of each input are hand-made edge cases "
                        "(zeros, below the amax floor, outliers, exact ties, the FP4 grid, near-448)"}
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
    print(f"[qat] wrote {out}")


if __name__ == "__main__":
    make(os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden",
                                       "qat")))
