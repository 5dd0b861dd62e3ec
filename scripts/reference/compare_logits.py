#!/usr/bin/env python3
"""Compare an engine's logits file with a golden set (debugging aid; the C++ tests do their own comparison).

  dsv4 forward --checkpoint tests/golden/model/golden-a --tokens <manifest tokens> --numerics plain \
      --logits-out /tmp/l.f32
  python3 scripts/reference/compare_logits.py --golden tests/golden/model/golden-a --logits /tmp/l.f32

Prints max|diff| / max|ref| (acceptance: <= 1e-4), argmax agreement, and the first positions that fail, which
usually points at the mechanism (3: first CSA row, window: ring wrap, 4k+3: indexer selection, 127: HCA row...).
Exit status 0 when the file passes the acceptance rule, 1 otherwise.
"""

import argparse
import json
import os
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", required=True, help="tests/golden/model/<name>")
    ap.add_argument("--logits", required=True, help="float32 little-endian [T, vocab] file to check")
    ap.add_argument("--which", choices=["prefill", "decode"], default="prefill")
    args = ap.parse_args()
    with open(os.path.join(args.golden, "manifest.json")) as fh:
        man = json.load(fh)
    spec = man[f"{args.which}_logits"]
    ref = np.fromfile(os.path.join(args.golden, spec["file"]), "<f4").reshape(spec["shape"]).astype(np.float64)
    got = np.fromfile(args.logits, "<f4").astype(np.float64)
    if got.size != ref.size:
        print(f"size mismatch: got {got.size} floats, golden has {ref.size} {spec['shape']}")
        return 1
    got = got.reshape(ref.shape)
    positions = spec.get("positions", list(range(ref.shape[0])))
    scale = np.abs(ref).max()
    per_row = np.abs(got - ref).max(1) / scale
    am = got.argmax(1) == ref.argmax(1)
    tol = man["tolerance"]["max_abs_diff_over_max_abs_ref"]
    print(f"{man['name']} {args.which}: max rel diff {per_row.max():.3e} (tolerance {tol:g}), "
          f"argmax equal at {int(am.sum())}/{len(am)} positions")
    bad = [(positions[i], per_row[i], bool(am[i])) for i in range(len(per_row)) if per_row[i] > tol or not am[i]]
    for p, e, a in bad[:10]:
        print(f"  position {p}: rel diff {e:.3e}, argmax {'equal' if a else 'DIFFERENT'}")
    if bad:
        print(f"  ... {len(bad)} failing positions in all; events: {json.dumps(man.get('events', {}))}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
