#!/usr/bin/env python3
"""Writes tests/golden/quant/e4m3_bf16.bin: fp32 inputs with torch's float8_e4m3fn and bfloat16 casts.

The C++ conversions in runtime/core/float_formats.h must match torch bit for bit (quant_test.cc reads this file).
Inputs mix random magnitudes, exact round-to-nearest-even ties of both formats, e4m3 subnormals, fp32
subnormals, and values beyond e4m3's range. The e4m3 column is cast from the input clamped to [-448, 448]
(what the reference does before casting; torch maps overflow to NaN instead of saturating); the bf16
column is cast from the raw input.

Layout (little-endian): b"DSV4QG01", uint32 count, then count fp32 inputs, count e4m3 bytes, count bf16 uint16.
Usage: python3 scripts/reference/quant_golden.py [out_path]
"""
import struct
import sys
from pathlib import Path

import numpy as np
import torch

COUNT = 4096


def e4m3_values():
    """All finite non-negative e4m3fn values, ascending."""
    codes = torch.arange(0, 0x7F, dtype=torch.uint8)
    return codes.view(torch.float8_e4m3fn).to(torch.float32).numpy()


def make_inputs(rng):
    vals = []
    grid = e4m3_values()
    mids = (grid[:-1] + grid[1:]) / 2  # exact in fp32: every e4m3 value has <= 4 significant bits
    vals += list(mids) + list(-mids)
    vals += list(grid) + list(-grid)
    # bf16 ties: low 16 bits exactly 0x8000, with odd and even kept bits.
    hi = rng.integers(0x0080, 0x7F00, size=256, dtype=np.uint32)
    vals += list(((hi << 16) | 0x8000).view(np.float32))
    # e4m3 subnormal range and just around its bottom (2^-10 is the tie between 0 and 2^-9).
    vals += list(rng.uniform(-2.0**-6, 2.0**-6, size=256).astype(np.float32))
    vals += [2.0**-10, -2.0**-10, 2.0**-10 * 1.0001, 3 * 2.0**-10, 5 * 2.0**-10, 2.0**-6, 15 * 2.0**-10]
    # fp32 subnormals and zero.
    vals += list((rng.integers(1, 1 << 23, size=32, dtype=np.uint32)).view(np.float32))
    vals += [0.0, -0.0]
    # Out of e4m3 range (clamped for the e4m3 column), up to fp32 max.
    vals += list(rng.choice([-1, 1], size=128) * 10.0 ** rng.uniform(2.66, 38.5, size=128))
    vals += [448.0, -448.0, 464.0, 479.9, 480.0, 1e30, np.inf, -np.inf]
    n_rand = COUNT - len(vals)
    assert n_rand > 0
    mag = 2.0 ** rng.uniform(-12, 9, size=n_rand)
    vals += list(rng.choice([-1, 1], size=n_rand) * mag)
    out = np.array(vals, dtype=np.float32)
    rng.shuffle(out)
    return out


def main():
    root = Path(__file__).resolve().parents[2]
    out_path = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests/golden/quant/e4m3_bf16.bin"
    rng = np.random.default_rng(20260422)
    x = make_inputs(rng)
    t = torch.from_numpy(x)
    e4m3 = t.clamp(-448.0, 448.0).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    bf16 = t.to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "wb") as f:
        f.write(b"DSV4QG01")
        f.write(struct.pack("<I", len(x)))
        f.write(x.astype("<f4").tobytes())
        f.write(e4m3.tobytes())
        f.write(bf16.astype("<u2").tobytes())
    print(f"wrote {len(x)} values to {out_path} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
