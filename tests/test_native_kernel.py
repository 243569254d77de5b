"""Eyas's CPU kernels (completion/engine/lean/native.py, kernels/*.c). The few-row product, on
both engines (AMX tiles where the CPU has them, AVX-512 BF16 everywhere the kernels run): within
float32 rounding of an exact one, bias and odd sizes included, int8 and int4 weights too, and a row's bits
independent of the rows beside it and of the thread count (what lossless verification needs). The
row-wise kernels: RMSNorm and SiLU * up with the bits of the torch expressions Hugging Face
computes, on values with the outliers real activations have. On a CPU without AVX-512 BF16 the
kernels are not used and these tests skip, saying why (fail, in CI, on a CPU that has them)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from completion.engine.lean import native
from conftest import need_native_kernels



@pytest.fixture(autouse=True)
def kernels():
    need_native_kernels()   # CI (EYAS_REQUIRE_NATIVE=1) fails where the CPU could run them


@pytest.fixture(params=["avx512", "amx"])
def engine(request):
    """The products computed by each engine this CPU has (the same packed weights)."""
    was = native.has_amx()
    if native.select_amx(request.param == "amx") != (request.param == "amx"):
        native.select_amx(was)
        pytest.skip("this CPU (or Linux) gives no AMX")
    yield request.param
    native.select_amx(was)


@pytest.mark.parametrize("n,k", [(1000, 896), (37, 64), (130, 4864)])
def test_product_is_exact_up_to_float32_rounding(n, k, engine):
    torch.manual_seed(n)
    w = torch.randn(n, k).bfloat16()
    bias = torch.randn(n)
    x = torch.randn(35, k).bfloat16()     # more rows than one tile holds
    exact = x.double() @ w.double().T + bias.double()
    got = native.rows_mm(x, native.pack_rows(w), n, bias, out_dtype=torch.float32).double()
    assert ((got - exact).abs().max() / exact.abs().max()).item() < 1e-5
    rounded = native.rows_mm(x, native.pack_rows(w), n, bias)
    assert rounded.dtype == torch.bfloat16 and torch.equal(rounded, got.float().bfloat16())


def test_a_rows_bits_do_not_depend_on_its_neighbours_or_threads(engine):
    torch.manual_seed(0)
    n, k = 300, 256
    packed, x, bias = native.pack_rows(torch.randn(n, k).bfloat16()), torch.randn(19, k).bfloat16(), torch.randn(n)
    full = native.rows_mm(x, packed, n, bias)
    for i in range(19):
        assert torch.equal(native.rows_mm(x[i:i + 1], packed, n, bias), full[i:i + 1])
    assert torch.equal(native.rows_mm(x[3:10], packed, n, bias), full[3:10])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(native.rows_mm(x, packed, n, bias), full)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("n,k", [(1000, 896), (37, 64)])
def test_int8_product_is_the_scaled_exact_one_and_rows_stay_independent(n, k, engine):
    """An int8 weight streams as int8 and is widened to bf16 exactly, so the product is that of
    the dequantised weight up to float32 rounding, and rows keep their bits as in bf16."""
    from completion.engine.lean.weights import Int8Weight

    torch.manual_seed(n)
    w = Int8Weight.of(torch.randn(n, k).bfloat16())
    assert w.tiles is not None and w.tiles.dtype == torch.int8
    x, bias = torch.randn(19, k).bfloat16(), torch.randn(n)
    exact = x.double() @ (w.q.double() * w.scale.double()[:, None]).T + bias.double()
    got = native.rows_mm(x, w.tiles, n, bias, out_dtype=torch.float32, scale=w.tile_scale).double()
    assert ((got - exact).abs().max() / exact.abs().max()).item() < 1e-5
    full = w.mm(x, bias.bfloat16())
    assert full.dtype == torch.bfloat16
    for i in (0, 7, 18):
        assert torch.equal(w.mm(x[i:i + 1], bias.bfloat16()), full[i:i + 1])
    with pytest.raises(ValueError, match="scale"):
        native.rows_mm(x, w.tiles, n)


@pytest.mark.parametrize("n,k", [(1000, 896), (37, 64), (130, 4864)])
def test_int4_product_is_the_grouped_exact_one_and_rows_stay_independent(n, k):
    """An int4 weight w = q * scale + lo per group of 32 columns: within float32 rounding of the
    exact product, each row's bits those of the row alone, at any thread count (AVX-512 on every
    CPU, so no engine fixture)."""
    torch.manual_seed(n)
    q = torch.randint(0, 16, (n, k))
    scale = (torch.rand(n, k // 32) * 0.01).bfloat16().float()
    lo = (torch.randn(n, k // 32) * 0.05).bfloat16().float()
    x, bias = torch.randn(19, k).bfloat16(), torch.randn(n)
    w = q.double() * scale.double().repeat_interleave(32, 1) + lo.double().repeat_interleave(32, 1)
    exact = x.double() @ w.T + bias.double()
    nibbles, sl = native.pack_int4(q, scale, lo)
    got = native.int4_mm(x, nibbles, sl, n, bias, out_dtype=torch.float32).double()
    assert ((got - exact).abs().max() / exact.abs().max()).item() < 1e-5
    full = native.int4_mm(x, nibbles, sl, n, bias)
    for i in range(19):
        assert torch.equal(native.int4_mm(x[i:i + 1], nibbles, sl, n, bias), full[i:i + 1])
    assert torch.equal(native.int4_mm(x[3:10], nibbles, sl, n, bias), full[3:10])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(native.int4_mm(x, nibbles, sl, n, bias), full)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="multiple of 32"):
        native.pack_int4(q[:, :48], scale[:, :1], lo[:, :1])


def test_shapes_it_cannot_take_are_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        native.pack_rows(torch.zeros(64, 48, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="bf16 or int8"):
        native.pack_rows(torch.zeros(64, 64))


def mapping_flags(address: int) -> list[str]:
    """The VmFlags of the mapping that holds `address`, from /proc/self/smaps."""
    from pathlib import Path

    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and ":" not in first:
            lo, hi = (int(x, 16) for x in first.split("-"))
            inside = lo <= address < hi
        elif inside and first == "VmFlags:":
            return line.split()[1:]
    return []


def test_packed_weights_are_copies_asking_for_huge_pages():
    import sys

    w = torch.randn(4096, 512).bfloat16()           # 4 MiB: two whole 2 MiB pages
    packed = native.pack_rows(w)
    assert packed.data_ptr() % native.HUGE_PAGE == 0
    assert torch.equal(packed, w.view(64, 64, 256, 2).transpose(1, 2))
    small = torch.randn(64, 64).bfloat16()
    assert torch.equal(native.on_huge_pages(small), small)
    if sys.platform == "linux":   # "hg": madvise(MADV_HUGEPAGE) holds (whether Linux found free 2 MiB blocks may vary)
        assert "hg" in mapping_flags(packed.data_ptr())


def test_tile_linear_adopts_a_linear_in_place():
    """A drafter's nn.Linear turned TileLinear: same parameters and state-dict keys, the product
    within bf16 rounding of torch's, torch's own path when gradients are wanted or rows are many."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 70, bias=True).to(torch.bfloat16)
    keys, x = set(lin.state_dict()), torch.randn(3, 5, 96, dtype=torch.bfloat16)
    expected = torch.nn.functional.linear(x.float(), lin.weight.float(), lin.bias.float())
    native.TileLinear.adopt(lin)
    assert isinstance(lin, native.TileLinear) and set(lin.state_dict()) == keys
    with torch.no_grad():
        got = lin(x)
    assert got.shape == (3, 5, 70) and ((got.float() - expected).abs().max() / expected.abs().max()) < 1e-2
    assert lin(x).requires_grad                      # grad mode: torch's linear, differentiable
    with torch.no_grad():
        many = torch.randn(native.FEW_ROWS + 1, 96, dtype=torch.bfloat16)
        assert torch.equal(lin(many), torch.nn.functional.linear(many, lin.weight, lin.bias))


def heavy_tailed(*shape, seed=0):
    """bf16 values spread over many binades, as residual streams are (a few huge, most small)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * torch.exp(2 * torch.randn(*shape, generator=g))).bfloat16()


@pytest.mark.parametrize("hidden", [896, 1536, 4096, 8192 + 256])   # 0.5B, 1.5B; past 256 groups: a deeper cascade
def test_rms_norm_has_hugging_faces_bits(hidden):
    x, weight = heavy_tailed(300, hidden), (1 + 0.3 * heavy_tailed(hidden, seed=1)).bfloat16()
    hf = weight * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16()
    got = native.rms_norm(x, weight, 1e-6)
    assert torch.equal(got, hf)
    assert torch.equal(native.rms_norm(x[7:8], weight, 1e-6), got[7:8])   # a row alone: the same bits


def test_silu_times_up_has_torchs_bits_over_every_gate():
    gate = torch.arange(-120.0, 100.0, 1 / 64).bfloat16()   # past exp's overflow at both ends
    gate = gate[: len(gate) // 32 * 32]
    up = heavy_tailed(len(gate))
    got = native.silu_mul(torch.cat([gate, up])[None])
    assert torch.equal(got[0], F.silu(gate) * up)
    rows = heavy_tailed(9, 2 * 4864, seed=2)
    assert torch.equal(native.silu_mul(rows), F.silu(rows[:, :4864]) * rows[:, 4864:])
    assert torch.equal(native.silu_mul(rows[4:5]), native.silu_mul(rows)[4:5])


def test_rope_into_the_cache_rounds_as_hugging_face():
    """Queries rotated as x * cos + rotate_half(x) * sin with each product rounded to bf16 (as
    Hugging Face's bf16 arithmetic does); keys rotated the same and values copied into the cache
    rows of their positions, nothing else written."""
    torch.manual_seed(0)
    n, heads, kv_heads, d = 5, 14, 2, 64
    qkv = heavy_tailed(n, (heads + 2 * kv_heads) * d)
    cos, sin = torch.randn(n, d).bfloat16(), torch.randn(n, d).bfloat16()
    k_cache, v_cache = torch.zeros(kv_heads, 32, d).bfloat16(), torch.zeros(kv_heads, 32, d).bfloat16()
    positions = torch.arange(10, 10 + n)
    q = native.rope_to_cache(qkv, heads, kv_heads, positions, cos, sin, k_cache, v_cache)
    qk = qkv[:, :(heads + kv_heads) * d].view(n, heads + kv_heads, d)
    swapped = qk.unflatten(-1, (2, d // 2)).flip(-2).flatten(-2)       # sin carries rotate-half's sign
    expected = qk * cos[:, None] + swapped * sin[:, None]
    assert torch.equal(q, expected[:, :heads])
    assert torch.equal(k_cache[:, 10:10 + n].transpose(0, 1), expected[:, heads:])
    assert torch.equal(v_cache[:, 10:10 + n].transpose(0, 1), qkv[:, (heads + kv_heads) * d:].view(n, kv_heads, d))
    assert not k_cache[:, :10].any() and not v_cache[:, 10 + n:].any()


def attention_inputs(start: int, n: int, d: int, capacity: int, kv_heads: int = 2, group: int = 7):
    """Queries for positions start .. start + n - 1 and caches of `capacity` rows whose rows past
    the last position hold NaN: a kernel that reads them fails."""
    torch.manual_seed(start + n)
    k_cache, v_cache = torch.randn(kv_heads, capacity, d).bfloat16(), torch.randn(kv_heads, capacity, d).bfloat16()
    k_cache[:, start + n:], v_cache[:, start + n:] = float("nan"), float("nan")
    return (2 * torch.randn(n, kv_heads * group, d)).bfloat16(), k_cache, v_cache


def causal_attention(q, k_cache, v_cache, start):
    """The exact (float64) attention of q [n, heads, D] at positions start .. start + n - 1."""
    n, heads, d = q.shape
    length, group = start + n, heads // k_cache.shape[0]
    unseen = torch.arange(length)[None, :] > torch.arange(start, length)[:, None]
    keys, values = (c[:, :length].double().repeat_interleave(group, 0) for c in (k_cache, v_cache))
    scores = torch.einsum("nhd,htd->hnt", q.double(), keys) * d ** -0.5
    return torch.einsum("hnt,htd->nhd", scores.masked_fill(unseen, float("-inf")).softmax(-1), values)


@pytest.mark.skipif(not native.has_amx(), reason="the attention kernel runs on AMX tiles; this CPU has none")
@pytest.mark.parametrize("n,start,d", [(512, 0, 64), (256, 700, 64), (37, 100, 64), (300, 5, 128), (20, 0, 64)])
def test_prefill_attention_is_causal_attention_within_bf16_rounding(n, start, d):
    """Every query head of each KV head, positions start .. start + n - 1 over cache rows
    [0, start + n), rows and keys not multiples of the kernel's blocks; the rows of the cache past
    the prompt hold garbage that must not be read."""
    q, k_cache, v_cache = attention_inputs(start, n, d, capacity=1 << (start + n - 1).bit_length())
    got = native.prefill_attention(q, k_cache, v_cache, start)
    assert got.shape == q.shape and torch.isfinite(got.float()).all()
    assert (got.double() - causal_attention(q, k_cache, v_cache, start)).abs().max() < 0.02   # bf16 P and output


@pytest.mark.parametrize("start,n,d", [(0, 1, 64), (37, 1, 64), (2047, 5, 64), (100, 19, 128), (15, 3, 32)])
def test_decode_attention_is_causal_attention_and_rows_keep_their_bits(start, n, d):
    """A decode step (n = 1) or a verification (n rows): causal attention within bf16 rounding,
    the cache past the last row unread (NaN there), and each row's bits those of the row alone at
    any thread count, which is what lets speculative output equal plain output."""
    q, k_cache, v_cache = attention_inputs(start, n, d, capacity=start + n + 16)
    got = native.decode_attention(q, k_cache, v_cache, start)
    assert got.shape == q.shape and torch.isfinite(got.float()).all()
    assert (got.double() - causal_attention(q, k_cache, v_cache, start)).abs().max() < 0.02
    for i in range(n):
        alone = k_cache.clone(), v_cache.clone()
        for c in alone:
            c[:, start + i + 1:] = float("nan")       # what a decode step at this position has
        assert torch.equal(native.decode_attention(q[i:i + 1], *alone, start + i), got[i:i + 1])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(native.decode_attention(q, k_cache, v_cache, start), got)
    finally:
        torch.set_num_threads(threads)
