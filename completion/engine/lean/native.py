"""Eyas's CPU kernels (kernels/*.c): the few-row matrix product for bf16, int8 and int4 weights
(bf16_rows.c: on the AMX tile unit, or with AVX-512 BF16 dot products where the CPU has no AMX or
the weight is int4), attention (attention.c: a prefill chunk's on the tile unit, AMX only; a
decode step's or a verification's with AVX-512 BF16), and the row-wise steps beside them
(rows.c: RMSNorm, SiLU * up, RoPE into the cache). Built once with the machine's C compiler
into the user cache, loaded with ctypes, used where the CPU has AVX-512 with BF16 (Intel Cooper
Lake / Sapphire Rapids and later, AMD Zen 4 and later).

Nothing here is required: without a compiler, without AVX-512 BF16, or with EYAS_NATIVE=0 the lean
model keeps torch's kernels (`available()` is False and says why in `reason()`). EYAS_AMX=0 keeps
the products off the tile unit on a CPU that has one.

    python -c 'from completion.engine.lean import native; native.report()'   # build now (make install does)
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

SOURCES = [Path(__file__).with_name("kernels") / name for name in ("bf16_rows.c", "attention.c", "rows.c")]
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512_bf16")   # every kernel
AMX_FLAGS = ("amx_tile", "amx_bf16")                                            # the tile engine
CFLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vbmi", "-mavx512bf16", "-mamx-tile", "-mamx-bf16",
          "-fopenmp", "-shared", "-fPIC"]
GROUP = 64          # outputs per packed weight stream (kernels/bf16_rows.c)
K_MULTIPLE = 32     # input columns per tile step

_lock = threading.Lock()
_state: dict = {}


def kernel_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eyas" / "kernels"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build() -> Path:
    """The shared library for these sources, compiled into the cache on first use (to a temporary
    name, then renamed: a concurrent or interrupted build never leaves a half-written library)."""
    source = b"".join(s.read_bytes() for s in [*SOURCES, SOURCES[0].with_name("common.h")])
    tag = hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    lib = kernel_dir() / f"eyas-kernels-{tag}.so"
    if lib.exists():
        return lib
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc) to build the CPU kernels")
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=lib.name, dir=lib.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *CFLAGS, "-o", tmp, *map(str, SOURCES)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building the CPU kernels failed: {proc.stderr.strip()[-600:]}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def missing_flags() -> list[str]:
    """The instructions the kernels need that this CPU lacks."""
    return [f for f in CPU_FLAGS if f not in cpu_flags()]


def _load() -> None:
    if os.environ.get("EYAS_NATIVE", "1") == "0":
        _state["reason"] = "EYAS_NATIVE=0"
        return
    missing = missing_flags()
    if missing:
        _state["reason"] = f"this CPU lacks {', '.join(missing)}"
        return
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as e:
        _state["reason"] = str(e)
        return
    _state["lib"] = lib
    select_amx(os.environ.get("EYAS_AMX", "1") != "0")
    fn = lib.eyas_bf16_rows
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    fn.restype = None
    _state["fn"] = fn
    lib.eyas_int4_rows.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.eyas_int4_rows.restype = ctypes.c_int
    _state["int4"] = lib.eyas_int4_rows
    lib.eyas_rms_norm.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_float,
                                  ctypes.c_void_p, ctypes.c_int]
    lib.eyas_silu_mul.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
    lib.eyas_rope_to_cache.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 4, *[ctypes.c_void_p] * 6,
                                       ctypes.c_int64, ctypes.c_int]
    _state["rms_norm"], _state["silu_mul"], _state["rope"] = lib.eyas_rms_norm, lib.eyas_silu_mul, lib.eyas_rope_to_cache
    lib.eyas_prefill_attention.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 4, ctypes.c_void_p, ctypes.c_void_p,
                                           ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    lib.eyas_prefill_attention.restype = ctypes.c_int
    _state["attention"] = lib.eyas_prefill_attention
    lib.eyas_decode_attention.argtypes = lib.eyas_prefill_attention.argtypes
    lib.eyas_decode_attention.restype = ctypes.c_int
    _state["decode_attention"] = lib.eyas_decode_attention


def select_amx(wanted: bool) -> bool:
    """Compute the products on the AMX tile unit (when `wanted` and the CPU and Linux allow it) or
    with AVX-512 BF16; returns whether AMX is in use. Both read the same packed weights."""
    amx = bool(_state["lib"].eyas_init(int(wanted and all(f in cpu_flags() for f in AMX_FLAGS))))
    _state["amx"] = amx
    return amx


def has_amx() -> bool:
    """Whether the products (and a prefill's attention) run on the AMX tile unit."""
    return available() and _state["amx"]


def _ensure() -> dict:
    with _lock:
        if not _state:
            _load()
    return _state


def available() -> bool:
    return "fn" in _ensure()


def reason() -> str:
    """Why the kernel is not in use ('' when it is)."""
    return _ensure().get("reason", "")


HUGE_PAGE = 1 << 21
MADV_HUGEPAGE = 14


def on_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """A copy of t whose whole 2 MiB pages Linux backs with transparent huge pages (asked for with
    madvise before the pages exist; granted where THP is `always` or `madvise` and a free 2 MiB
    block is found). A step streams ~1 GB of packed weights; on 4 KiB pages every 4 KiB of the stream
    costs a TLB miss and a page walk (two-level in a VM). Measured in
    `eyas bench engines`, before and after in alternating rounds (docs/bench-engines.md): plain
    int8 6-13% faster; bf16 within the shared machine's spread. Elsewhere the copy is just a
    contiguous one (t itself when it is)."""
    nbytes = t.numel() * t.element_size()
    if nbytes < HUGE_PAGE or sys.platform != "linux":
        return t.contiguous()
    buf = torch.empty(nbytes + HUGE_PAGE, dtype=torch.uint8)
    start = -buf.data_ptr() % HUGE_PAGE
    _libc().madvise(buf.data_ptr() + start, nbytes // HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE)   # before the pages exist
    return buf[start:start + nbytes].view(t.dtype).view(t.shape).copy_(t)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def pack_rows(w: torch.Tensor) -> torch.Tensor:
    """A bf16 or int8 [N, K] weight (K a multiple of 32) in the kernel's layout: [N/64, K/2, 64, 2],
    N padded."""
    n, k = w.shape
    if w.dtype not in (torch.bfloat16, torch.int8) or k % K_MULTIPLE:
        raise ValueError(f"the tile kernel takes bf16 or int8 weights with columns a multiple of {K_MULTIPLE}, "
                         f"not {w.dtype} {n}x{k}")
    padded = -(-n // GROUP) * GROUP
    if padded != n:
        w = torch.cat([w, w.new_zeros(padded - n, k)])
    packed = w.reshape(padded // GROUP, GROUP, k // 2, 2).transpose(1, 2)   # bf16: laid out by the one copy below
    if w.dtype == torch.int8:   # sign and magnitude, each 64-byte chunk in the order widen_int8 undoes
        if int(w.min()) < -127:
            raise ValueError("int8 tile weights take -127..127 (sign and magnitude)")
        packed = packed.contiguous()
        magnitude = packed.abs().view(torch.uint8) | (packed < 0).to(torch.uint8) << 7
        # element h*32 + lane*8 + i sits at byte lane*16 + h*8 + i: unpacklo/hi interleave per 128-bit lane
        packed = magnitude.view(-1, 2, 4, 8).transpose(1, 2).contiguous().view(torch.int8).view(packed.shape)
    return on_huge_pages(packed)


def rows_mm(x: torch.Tensor, packed: torch.Tensor, n: int, bias: torch.Tensor | None = None,
            out_dtype: torch.dtype = torch.bfloat16, scale: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K] bf16 @ w.T (+ bias, float32 [N]) with w as pack_rows made it; out [M, N] bf16 or float32.
    An int8 w needs `scale` (float32 [N]): the product is then x @ (w * scale[:, None]).T."""
    if (packed.dtype == torch.int8) != (scale is not None):
        raise ValueError("an int8 weight needs its scale, and only an int8 weight takes one")
    x = x.contiguous()
    out = torch.empty(x.shape[0], n, dtype=out_dtype)
    _state["fn"](x.data_ptr(), x.shape[0], x.shape[1], packed.data_ptr(), n,
                 None if scale is None else scale.data_ptr(), None if bias is None else bias.data_ptr(),
                 out.data_ptr(), int(out_dtype == torch.float32), torch.get_num_threads())
    return out


INT4_COLS = 32      # input columns per int4 scale and offset (kernels/bf16_rows.c)


def pack_int4(q: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An int4 weight w = q * scale + lo (q [N, K] in 0..15; scale, lo [N, K / 32], one per output and
    group of 32 input columns) in the kernel's layout: (nibbles uint8 [N/64, K/2, 64], scales and
    offsets bf16 [N/64, K/32, 2, 64]), N padded."""
    n, k = q.shape
    if k % INT4_COLS or scale.shape != (n, k // INT4_COLS) or lo.shape != scale.shape:
        raise ValueError(f"the int4 kernel takes columns a multiple of {INT4_COLS}, one scale per output and "
                         f"group of {INT4_COLS}; not {n}x{k} with scales {tuple(scale.shape)}")
    pad = -(-n // GROUP) * GROUP - n
    q, scale, lo = (torch.cat([t, t.new_zeros(pad, t.shape[1])]) for t in (q.to(torch.uint8), scale, lo))
    # per pair of columns, 64 outputs x 2 columns in order v[0..127]; byte 16 L + 8 h + t holds
    # v[32 h + 8 L + t] in its low nibble (widened to registers 0-1) and v[64 + ...] in its high one
    pairs = q.view(-1, GROUP, k // 2, 2).transpose(1, 2).reshape(-1, k // 2, 2 * GROUP)
    b = torch.arange(GROUP)
    at = 32 * (b % 16 // 8) + 8 * (b // 16) + b % 8
    nibbles = (pairs[..., at] | pairs[..., GROUP + at] << 4).contiguous()
    sl = torch.stack([scale, lo]).to(torch.bfloat16).view(2, -1, GROUP, k // INT4_COLS).permute(1, 3, 0, 2)
    return on_huge_pages(nibbles), on_huge_pages(sl.contiguous())


def int4_mm(x: torch.Tensor, nibbles: torch.Tensor, sl: torch.Tensor, n: int, bias: torch.Tensor | None = None,
            out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """x [M, K] bf16 @ w.T (+ bias, float32 [N]) for w as pack_int4 made it; out [M, N] bf16 or float32."""
    x = x.contiguous()
    out = torch.empty(x.shape[0], n, dtype=out_dtype)
    if _state["int4"](x.data_ptr(), x.shape[0], x.shape[1], nibbles.data_ptr(), sl.data_ptr(), n,
                      None if bias is None else bias.data_ptr(), out.data_ptr(), int(out_dtype == torch.float32),
                      torch.get_num_threads()):
        raise MemoryError("no memory for the int4 kernel's row sums")
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Hugging Face's RMSNorm of bf16 rows x [..., H] with its bf16 weight [H], in one pass."""
    x = x.contiguous()
    out = torch.empty_like(x)
    _state["rms_norm"](x.data_ptr(), x.numel() // x.shape[-1], x.shape[-1], weight.data_ptr(), eps, out.data_ptr(),
                       torch.get_num_threads())
    return out


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up for bf16 rows [M, 2I] holding gate then up, in one pass: [M, I]."""
    gate_up = gate_up.contiguous()
    m, i = gate_up.shape[0], gate_up.shape[1] // 2
    out = gate_up.new_empty(m, i)
    _state["silu_mul"](gate_up.data_ptr(), m, i, out.data_ptr(), torch.get_num_threads())
    return out


def rope_to_cache(qkv: torch.Tensor, heads: int, kv_heads: int, positions: torch.Tensor, cos: torch.Tensor,
                  sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
    """One layer's bf16 q|k|v rows [n, (heads + 2 kv_heads) * D]: the queries RoPE-rotated as
    [n, heads, D]; the keys rotated and the values copied into the caches [kv_heads, T, D] at
    `positions`. cos, sin: [n, D] (sin signed as RopeTables stores it)."""
    qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
    n, d = qkv.shape[0], k_cache.shape[-1]
    assert k_cache.is_contiguous() and v_cache.is_contiguous() and positions.dtype == torch.int64
    q = qkv.new_empty(n, heads, d)
    _state["rope"](qkv.data_ptr(), n, heads, kv_heads, d, positions.contiguous().data_ptr(), cos.data_ptr(),
                   sin.data_ptr(), q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), k_cache.shape[1],
                   torch.get_num_threads())
    return q


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: int) -> torch.Tensor:
    """Causal attention of bf16 queries q [n, heads, D] at positions start .. start + n - 1 over
    cache rows [0, start + n) of k_cache, v_cache [kv_heads, T, D] (heads KV-major, as Hugging
    Face's repeat_kv orders them): [n, heads, D]. D a multiple of 64, at most 256."""
    return _attention("attention", q, k_cache, v_cache, start)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: int) -> torch.Tensor:
    """A decode step's or a verification's attention, arguments as prefill_attention's (row i sees
    cache rows [0, start + i + 1)), each row with the bits it has alone. D a multiple of 32, at
    most 256."""
    return _attention("decode_attention", q, k_cache, v_cache, start)


def _attention(kernel: str, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: int) -> torch.Tensor:
    q = q.contiguous()
    n, heads, d = q.shape
    out = torch.empty_like(q)
    if _state[kernel](q.data_ptr(), n, heads, k_cache.shape[0], d, k_cache.data_ptr(), v_cache.data_ptr(),
                      k_cache.shape[1], start, d ** -0.5, out.data_ptr(), torch.get_num_threads()):
        raise MemoryError("no memory for the attention kernel's scratch")
    return out


def decode_attention_ready(q: torch.Tensor, k_cache: torch.Tensor) -> bool:
    return (q.dtype == torch.bfloat16 and q.device.type == "cpu" and q.shape[-1] % 32 == 0 and q.shape[-1] <= 256
            and k_cache.is_contiguous() and available() and not torch.compiler.is_compiling())


def rows_ready(x: torch.Tensor) -> bool:
    """Whether the row-wise kernels (rms_norm, silu_mul) take x: bf16 on the CPU, rows of a
    multiple of 32 values, the kernels built."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.shape[-1] % 32 == 0 and available()


def report() -> None:
    engine = "AMX tiles" if has_amx() else "AVX-512 BF16, no AMX"
    print(f"CPU kernels: {f'in use ({engine}; {build()})' if available() else 'not in use: ' + reason()}")


FEW_ROWS = 32   # rows up to which the lean model's few-row kernels (and TileLinear) run: weights.FEW_ROWS


def tile_ready(weight: torch.Tensor) -> bool:
    return (weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and weight.dim() == 2
            and weight.shape[1] % K_MULTIPLE == 0 and available())


class TileLinear(torch.nn.Linear):
    """An inference-time nn.Linear that sends 1 to FEW_ROWS rows to the tile kernel (a drafter's
    passes are a few rows; torch's bf16 GEMM re-lays the weight out on every such call). `adopt`
    turns a loaded nn.Linear into one in place: same parameters, same state-dict keys."""
    tile: torch.Tensor
    bias_f32: torch.Tensor | None

    @classmethod
    def adopt(cls, module: torch.nn.Linear) -> None:
        """(Re)pack `module`'s current weight; call again after changing it."""
        module.__class__ = cls
        with torch.no_grad():
            module.tile = pack_rows(module.weight.detach())
            module.bias_f32 = None if module.bias is None else module.bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > FEW_ROWS or x.dtype != torch.bfloat16 or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return super().forward(x)
        out = rows_mm(x.reshape(rows, x.shape[-1]), self.tile, self.out_features, self.bias_f32)
        return out.view(*x.shape[:-1], self.out_features)
