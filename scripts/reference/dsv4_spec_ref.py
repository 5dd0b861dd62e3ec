"""Independent float64 re-implementation of the DeepSeek-V4 forward pass, written from the spec alone.

It reads the OFFICIAL tensor names (dequantised values) and computes prefill logits with the per-query index sets
of spec §4 (raw window + allowed compressed rows + sink). It shares no code with transformers and is used only to
cross-check the adapted transformers oracle (make_golden.py refuses to write a golden set if they disagree).
It also records the selection margins (indexer top-k, router top-k) so that a golden set whose discrete choices
sit on a near-tie is rejected.

`forward(..., numerics="reference")` adds the in-graph quantisation emulation of spec §6 (class Quant below):
FP8 activation quantisation (blocks of 128 along K) before every FP8/FP4-weight GEMM, the FP8 round trip (blocks of
64) of the non-rotary KV dims of the raw KV and of the main compressed rows, and Hadamard + FP4 round trip (blocks
of 32) of the indexer query and indexer rows, each after norm and RoPE. The default (`plain`) is unchanged.
"""

import math

import torch

EPS = 1e-6


def rms(x, w=None):
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS)
    return y if w is None else y * w


def rope_omegas(cfg, compress):
    r = cfg["qk_rope_head_dim"]
    i = torch.arange(r // 2, dtype=torch.float64)
    if not compress:
        return cfg["rope_theta"] ** (-2.0 * i / r)
    b = float(cfg["compress_rope_theta"])
    ys = cfg["rope_scaling"]
    s, L0 = ys["factor"], ys["original_max_position_embeddings"]

    def corr(beta):
        return r * math.log(L0 / (beta * 2 * math.pi)) / (2 * math.log(b))

    lo = max(0, math.floor(corr(ys["beta_fast"])))
    hi = min(r - 1, math.ceil(corr(ys["beta_slow"])))
    if hi == lo:
        hi += 0.001
    ramp = ((i - lo) / (hi - lo)).clamp(0, 1)
    return b ** (-2.0 * i / r) * (1 - ramp + ramp / s)


def rope(x, pos, om, inverse=False):
    """Interleaved RoPE on the last 2*len(om) dims. x [..., T or broadcast, dim]; pos [T] float64."""
    r = 2 * om.shape[0]
    th = pos.double()[:, None] * om[None, :]  # [T, r/2]
    c, s = torch.cos(th).to(x.dtype), torch.sin(th).to(x.dtype)  # no-op in float64
    if inverse:
        s = -s
    shape = x.shape
    nope, rp = x[..., : shape[-1] - r], x[..., shape[-1] - r:]
    a, b = rp[..., 0::2], rp[..., 1::2]
    # broadcast: th is [T, r/2]; x is [T, ..., r/2] with T first, so insert head axes
    while c.dim() < a.dim():
        c, s = c.unsqueeze(-2), s.unsqueeze(-2)
    out = torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)
    return torch.cat([nope, out], -1)


def hc_pre(X, fn, base, scale, iters):
    T = X.shape[0]
    f = X.reshape(T, -1)
    rho = 1.0 / torch.sqrt((f * f).mean(-1, keepdim=True) + EPS)
    m = rho * (f @ fn.T)
    pre = torch.sigmoid(m[:, 0:4] * scale[0] + base[0:4]) + EPS
    post = 2 * torch.sigmoid(m[:, 4:8] * scale[1] + base[4:8])
    Z = m[:, 8:24].reshape(T, 4, 4) * scale[2] + base[8:24].reshape(4, 4)
    C = torch.softmax(Z, -1) + EPS
    C = C / (C.sum(-2, keepdim=True) + EPS)
    for _ in range(iters - 1):
        C = C / (C.sum(-1, keepdim=True) + EPS)
        C = C / (C.sum(-2, keepdim=True) + EPS)
    u = (pre[:, :, None] * X).sum(1)
    return u, post, C


def hc_post(X, y, post, C):
    # X'_k = post_k y + sum_j C[j][k] X_j
    return post[:, :, None] * y[:, None, :] + torch.einsum("tjk,tjd->tkd", C, X)


def compress_rows(x, wkv, wgate, ape, norm_w, m, h, om):
    """Completed compressed rows [W, h] for the sequence x [T, D] (spec §3.5)."""
    T = x.shape[0]
    W = T // m
    if W == 0:
        return x.new_zeros(0, h)
    a = x[: W * m] @ wkv.T
    s = x[: W * m] @ wgate.T + ape.repeat(W, 1)
    a, s = a.reshape(W, m, -1), s.reshape(W, m, -1)
    if m == 4:
        A_kv, B_kv = a[..., :h], a[..., h:]
        A_s, B_s = s[..., :h], s[..., h:]
        prev_kv = torch.cat([torch.zeros_like(A_kv[:1]), A_kv[:-1]], 0)
        prev_s = torch.cat([torch.full_like(A_s[:1], float("-inf")), A_s[:-1]], 0)
        kv8, s8 = torch.cat([prev_kv, B_kv], 1), torch.cat([prev_s, B_s], 1)
        g = (torch.softmax(s8, 1) * kv8).sum(1)
    else:
        g = (torch.softmax(s, 1) * a).sum(1)
    g = rms(g, norm_w)
    return rope(g, torch.arange(W, dtype=torch.float64) * m, om)


E4M3_MAX, E2M1_MAX = 448.0, 6.0
# e2m1 rounding midpoints between neighbouring grid magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6}, and the code of the
# upper neighbour (a tie goes to the even code: to the upper neighbour when its code is even).
_E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _pow2_ceil(v):
    """Smallest power of two >= v (v > 0), exact."""
    m, e = torch.frexp(v)  # v = m * 2^e, m in [0.5, 1)
    return torch.where(m == 0.5, torch.ldexp(torch.ones_like(v), e - 1), torch.ldexp(torch.ones_like(v), e))


class Quant:
    """The QAT emulation ops of spec §6, written here from the spec (no code shared with dsv4_quant.py), exact in
    the working dtype: x/s and q*s are exact for power-of-two s, and the rounding is done with explicit grids.

    Besides transforming, each op records how close its discrete decisions came to a boundary, as a distance
    relative to the block's amax: `min_margin[kind]` and `near[kind][thr]` (decisions closer than thr). A decision
    closer than an engine's own rounding noise may legitimately go the other way in that engine."""

    THRESHOLDS = (1e-7, 1e-6, 1e-5)

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.min_margin = {}
        self.near = {}
        self.count = {}

    def _note(self, kind, margin_rel):
        m = margin_rel.flatten()
        if m.numel() == 0:
            return
        self.min_margin[kind] = min(self.min_margin.get(kind, math.inf), float(m.min()))
        self.count[kind] = self.count.get(kind, 0) + m.numel()
        nk = self.near.setdefault(kind, {t: 0 for t in self.THRESHOLDS})
        for t in self.THRESHOLDS:
            nk[t] += int((m < t).sum())

    def _fp8_blocks(self, x, block, kind):
        """FP8 round trip per block along the last dim: amax floor 1e-4, scale 2^ceil(log2(amax/448)), e4m3 RNE."""
        shp = x.shape
        xb = x.reshape(*shp[:-1], shp[-1] // block, block)
        amax = xb.abs().amax(-1, keepdim=True).clamp_min(1e-4)
        s = _pow2_ceil(amax / E4M3_MAX)
        y = (xb / s).clamp(-E4M3_MAX, E4M3_MAX)
        # e4m3: 3 mantissa bits, normals from 2^-6, subnormal step 2^-9.
        ay = y.abs()
        _, ex = torch.frexp(ay.clamp_min(2.0 ** -6))  # ay = m 2^ex, m in [0.5, 1): exponent ex - 1
        e = ex - 1
        ulp = torch.ldexp(torch.ones_like(ay), e - 3)
        r = y / ulp
        qv = torch.round(r) * ulp  # torch.round: half to even, and the step is exact (power of two)
        # distance to the nearest midpoint, in x units, relative to amax
        self._note(kind, ((r - torch.floor(r) - 0.5).abs() * ulp * s / amax))
        # the scale decision: amax/448 against the power of two below/above it
        ratio = amax / E4M3_MAX
        self._note(kind + ".scale", torch.minimum((ratio - s / 2).abs(), (s - ratio).abs()) / ratio)
        return (qv * s).reshape(shp)

    def act(self, x):
        """Activation quantisation before an FP8/FP4-weight GEMM: e4m3 per 128 along K (the last dim)."""
        return self._fp8_blocks(x, 128, "act") if self.enabled else x

    def fp8_prefix(self, x, n):
        """FP8 round trip (blocks of 64) of dims 0..n-1 (the non-rotary dims) of KV rows; the rest unchanged."""
        if not self.enabled or x.shape[0] == 0:
            return x
        return torch.cat([self._fp8_blocks(x[..., :n], 64, "kv"), x[..., n:]], -1)

    def had_fp4(self, x):
        """Indexer q / rows: Hadamard (Sylvester order, scaled n^-0.5) then FP4 round trip per 32."""
        if not self.enabled or x.shape[0] == 0:
            return x
        n = x.shape[-1]
        H = torch.ones(1, 1, dtype=x.dtype)
        while H.shape[0] < n:
            H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
        h = (x @ H.T) * (n ** -0.5)
        shp = h.shape
        hb = h.reshape(*shp[:-1], n // 32, 32)
        amax = hb.abs().amax(-1, keepdim=True).clamp_min(E2M1_MAX * 2.0 ** -126)
        s = _pow2_ceil(amax / E2M1_MAX)
        y = (hb / s).clamp(-E2M1_MAX, E2M1_MAX)
        ay = y.abs()
        out = torch.zeros_like(ay)
        dist = torch.full_like(ay, math.inf)
        for i in range(7):
            lo, hi = _E2M1_GRID[i], _E2M1_GRID[i + 1]
            mid = 0.5 * (lo + hi)
            inside = (ay >= lo) & (ay <= hi)
            upper_even = (i + 1) % 2 == 0
            up = (ay > mid) | ((ay == mid) & upper_even)
            out = torch.where(inside, torch.where(up, torch.full_like(ay, hi), torch.full_like(ay, lo)), out)
            dist = torch.where(inside, (ay - mid).abs(), dist)
        self._note("fp4", dist * s / amax)
        ratio = amax / E2M1_MAX
        self._note("fp4.scale", torch.minimum((ratio - s / 2).abs(), (s - ratio).abs()) / ratio)
        return (torch.sign(y) * out * s).reshape(shp)

    def summary(self):
        return {k: {"decisions": self.count[k], "min_margin": self.min_margin[k],
                    "closer_than": {f"{t:g}": self.near[k][t] for t in self.THRESHOLDS}}
                for k in sorted(self.count)}


class Stats:
    def __init__(self):
        self.index_margin = math.inf  # min over (query, CSA layer) of (s_k - s_{k+1}) / max|s|, when selecting
        self.index_selecting_queries = 0
        self.router_margin = math.inf  # min over (token, biased layer) of gap at the top-k boundary / max
        self.clamp_gate_hits = 0
        self.clamp_up_hits = 0


def attention(cfg, dq, p, x, pos, ratio, st, qz=None):
    T = x.shape[0]
    H, d = cfg["num_attention_heads"], cfg["head_dim"]
    G = cfg["o_groups"]
    om = rope_omegas(cfg, ratio != 0)
    qz = qz or Quant(enabled=False)
    nope = d - cfg["qk_rope_head_dim"]
    xq = qz.act(x)  # wq_a and wkv are FP8 linears; weights_proj and the compressors read x unquantised
    cq = rms(xq @ dq[p + "wq_a.weight"].T, dq[p + "q_norm.weight"])
    cqq = qz.act(cq)  # wq_b and indexer wq_b are FP8 linears
    q = rms((cqq @ dq[p + "wq_b.weight"].T).reshape(T, H, d))
    q = rope(q, pos, om)
    kv = qz.fp8_prefix(rope(rms(xq @ dq[p + "wkv.weight"].T, dq[p + "kv_norm.weight"]), pos, om), nope)  # [T, d]
    t_idx = torch.arange(T)
    win = cfg["sliding_window"]
    raw_mask = (t_idx[None, :] <= t_idx[:, None]) & (t_idx[None, :] > t_idx[:, None] - win)  # [T, T]
    keys, mask = kv, raw_mask
    if ratio:
        c = p + "compressor."
        rows = compress_rows(x, dq[c + "wkv.weight"], dq[c + "wgate.weight"], dq[c + "ape"], dq[c + "norm.weight"],
                             ratio, d, om)
        rows = qz.fp8_prefix(rows, nope)
        W = rows.shape[0]
        vis = torch.arange(W)[None, :] < ((t_idx + 1) // ratio)[:, None]  # [T, W]
        if ratio == 4 and W:
            nI, dI, k = cfg["index_n_heads"], cfg["index_head_dim"], cfg["index_topk"]
            ic = p + "indexer.compressor."
            KI = compress_rows(x, dq[ic + "wkv.weight"], dq[ic + "wgate.weight"], dq[ic + "ape"],
                               dq[ic + "norm.weight"], 4, dI, om)
            KI = qz.had_fp4(KI)
            qI = qz.had_fp4(rope((cqq @ dq[p + "indexer.wq_b.weight"].T).reshape(T, nI, dI), pos, om))
            beta = (x @ dq[p + "indexer.weights_proj.weight"].T) * (dI ** -0.5 * nI ** -0.5)
            S = (beta[:, :, None] * torch.relu(torch.einsum("thc,wc->thw", qI, KI))).sum(1)  # [T, W]
            S = S.masked_fill(~vis, float("-inf"))
            sel = torch.zeros_like(vis)
            for t in range(T):
                nv = int((t + 1) // 4)
                if nv <= k:
                    sel[t, :nv] = True
                    continue
                srt = torch.sort(S[t, :nv], descending=True).values
                st.index_margin = min(st.index_margin, float((srt[k - 1] - srt[k]) / srt.abs().max()))
                st.index_selecting_queries += 1
                sel[t, torch.topk(S[t, :nv], k).indices] = True
            vis = sel
        keys = torch.cat([kv, rows], 0)
        mask = torch.cat([raw_mask, vis], 1)
    logits = torch.einsum("thc,jc->thj", q, keys) / math.sqrt(d)
    logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    M = logits.max(-1, keepdim=True).values
    e = torch.exp(logits - M)
    sink = dq[p + "attn_sink"][None, :, None]
    den = e.sum(-1, keepdim=True) + torch.exp(sink - M)
    o = torch.einsum("thj,jc->thc", e / den, keys)
    o = rope(o, pos, om, inverse=True)
    og = o.reshape(T, G, H * d // G)
    wo_a = dq[p + "wo_a.weight"].reshape(G, cfg["o_lora_rank"], H * d // G)
    z = torch.einsum("tgi,gri->tgr", og, wo_a).reshape(T, -1)
    return qz.act(z) @ dq[p + "wo_b.weight"].T  # wo_a stays unquantised (bf16 einsum), wo_b is FP8


def swiglu(x, w1, w3, w2, lim, st, qz=None):
    xq = x if qz is None else qz.act(x)
    g, u = xq @ w1.T, xq @ w3.T
    st.clamp_gate_hits += int((g > lim).sum())
    st.clamp_up_hits += int((u.abs() > lim).sum())
    g, u = g.clamp(max=lim), u.clamp(-lim, lim)
    return g * torch.sigmoid(g) * u, w2


def moe(cfg, dq, p, x, tokens, is_hash, st, qz=None):
    qz = qz or Quant(enabled=False)
    lim = cfg["swiglu_limit"]
    k, E = cfg["num_experts_per_tok"], cfg["n_routed_experts"]
    lam = x @ dq[p + "gate.weight"].T
    sig = torch.sqrt(torch.nn.functional.softplus(lam))
    if is_hash:
        idx = dq[p + "gate.tid2eid"][tokens]
    else:
        biased = sig + dq[p + "gate.bias"]
        srt = torch.sort(biased, -1, descending=True).values
        st.router_margin = min(st.router_margin, float(((srt[:, k - 1] - srt[:, k]) / srt.abs().max(-1).values).min()))
        idx = torch.topk(biased, k, -1).indices
    w = sig.gather(1, idx)
    w = w / w.sum(-1, keepdim=True) * cfg["routed_scaling_factor"]
    y = torch.zeros_like(x)
    for e in range(E):
        tok, slot = torch.where(idx == e)
        if tok.numel() == 0:
            continue
        ep = p + f"experts.{e}."
        inter, w2 = swiglu(x[tok], dq[ep + "w1.weight"], dq[ep + "w3.weight"], dq[ep + "w2.weight"], lim, st, qz)
        # The routing weight scales the intermediate BEFORE W2, so W2's input quantisation sees the scaled values.
        y.index_add_(0, tok, qz.act(inter * w[tok, slot, None]) @ w2.T)
    sp = p + "shared_experts."
    inter, w2 = swiglu(x, dq[sp + "w1.weight"], dq[sp + "w3.weight"], dq[sp + "w2.weight"], lim, st, qz)
    return y + qz.act(inter) @ w2.T


def forward(cfg, dq, tokens, numerics="plain", dtype=torch.float64):
    """Prefill logits [T, V] in `dtype` (float64 unless asked), plus Stats.

    numerics: "plain" (no emulation) or "reference" (spec §6 emulation; st.quant then holds the Quant record with
    the margins of its rounding decisions)."""
    assert numerics in ("plain", "reference"), numerics
    st = Stats()
    qz = Quant(enabled=numerics == "reference")
    st.quant = qz
    dq = {k: (v if v.dtype == torch.int64 else v.to(dtype)) for k, v in dq.items()}
    tokens = torch.as_tensor(tokens)
    T = tokens.shape[0]
    pos = torch.arange(T, dtype=torch.float64)
    X = dq["embed.weight"][tokens][:, None, :].repeat(1, 4, 1)
    iters = cfg["hc_sinkhorn_iters"]
    for l in range(cfg["num_hidden_layers"]):
        p = f"layers.{l}."
        u, post, C = hc_pre(X, dq[p + "hc_attn_fn"], dq[p + "hc_attn_base"], dq[p + "hc_attn_scale"], iters)
        y = attention(cfg, dq, p + "attn.", rms(u, dq[p + "attn_norm.weight"]), pos, cfg["compress_ratios"][l], st,
                      qz)
        X = hc_post(X, y, post, C)
        u, post, C = hc_pre(X, dq[p + "hc_ffn_fn"], dq[p + "hc_ffn_base"], dq[p + "hc_ffn_scale"], iters)
        y = moe(cfg, dq, p + "ffn.", rms(u, dq[p + "ffn_norm.weight"]), tokens, l < cfg["num_hash_layers"], st,
                qz)
        X = hc_post(X, y, post, C)
    f = X.reshape(T, -1)
    rho = 1.0 / torch.sqrt((f * f).mean(-1, keepdim=True) + EPS)
    m = rho * (f @ dq["hc_head_fn"].T)
    pw = torch.sigmoid(m * dq["hc_head_scale"] + dq["hc_head_base"]) + EPS
    h = (pw[:, :, None] * X).sum(1)
    return rms(h, dq["norm.weight"]) @ dq["head.weight"].T, st
