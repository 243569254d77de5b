"""The P-EAGLE / EAGLE-3 drafter: N small decoder layers over [token embedding, fused target state].

    aux [T, 3Ht] --fc--> h [T, H]               (mask slots use fc(mask_hidden), computed once)
    layer 0 ("midlayer"): attn(cat(input_layernorm(embed), hidden_norm(h)))  2H wide, residual = h
    layers 1..N-1: plain pre-norm decoder layers on H
    norm -> lm_head [Vd] -> + d2t -> target token ids

The arithmetic follows vLLM's `Eagle3LlamaForCausalLM` / `Eagle3Qwen3ForCausalLM` (fused residual
adds, RMSNorm in float32, neox-style RoPE at absolute positions) so that the same checkpoint gives
the same drafts in both engines. The forward serves inference (writes a `DraftCache`) and training
(an explicit attention mask over one long row list) alike.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from completion.engine.lean.model import rms_norm
from completion.engine.lean import native
from completion.engine.lean.weights import column_major

from .config import DrafterConfig

if TYPE_CHECKING:
    from .cache import DraftCache


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 normalisation as vLLM's, in as few kernels as the target's (a draft pass on a
        # CPU is op-count bound)
        return rms_norm(x, self.weight, self.eps)


def rope_inverse_frequencies(cfg: DrafterConfig) -> torch.Tensor:
    """[head_dim/2] float32 inverse frequencies; "default", "linear" and "llama3" scaling."""
    dim = cfg.head_dim
    # explicit cpu: a skeleton built under `torch.device("meta")` still needs real frequencies
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim))
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        # long wavelengths are slowed by `factor`, short ones kept, the band between blended
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, blended, scaled)
    raise ValueError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3)")


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Neox-style rotation of x [heads, T, head_dim] with cos, sin [T, head_dim] from Drafter.rope.
    `sin` carries the sign (first half negated), so [x1 cos - x2 sin, x2 cos + x1 sin] is
    x cos + swap_halves(x) sin, bit for bit, in three ops instead of nine."""
    swapped = x.unflatten(-1, (2, x.shape[-1] // 2)).flip(-2).flatten(-2)
    return x * cos + swapped * sin


class KVBuffers:
    """Per-layer key/value buffers [kv_heads, capacity, head_dim] (a DraftCache's) that one pass
    writes at `positions` (consecutive, ending at `end`). Built inside the pass from plain tensor
    lists, so a compiled pass takes the buffers as inputs of any capacity rather than guarding on
    a cache object; written with index_copy_ as the lean target's cache is (a slice assignment
    made dynamo guard on how the capacity relates to the row count, and recompile)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], positions: torch.Tensor, end: int):
        self.keys, self.values, self.positions, self.end = keys, values, positions, end

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the pass's k, v [kv_heads, n, head_dim]; return every key and value up to `end`."""
        self.keys[layer].index_copy_(1, self.positions, k)
        self.values[layer].index_copy_(1, self.positions, v)
        return self.keys[layer][:, :self.end], self.values[layer][:, :self.end]


class DraftAttention(nn.Module):
    def __init__(self, cfg: DrafterConfig, input_size: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (cfg.num_attention_heads, cfg.num_key_value_heads,
                                                            cfg.head_dim)
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(input_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(input_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(input_size, self.num_kv_heads * self.head_dim, bias=bias)
        # vLLM's Llama attention gives o_proj a bias with attention_bias; Qwen3's never does
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size,
                                bias=bias and cfg.layer_style == "llama")
        self.qk_norm = cfg.layer_style == "qwen3"
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, kv: "KVBuffers | None", layer: int):
        n = x.shape[0]
        q = self.q_proj(x).view(n, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(n, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(n, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(0, 1), cos, sin)        # [heads, n, head_dim]
        k = apply_rope(k.transpose(0, 1), cos, sin)
        v = v.transpose(0, 1)
        if kv is not None:
            k, v = kv.write(layer, k, v)
            if isinstance(kv, KVBuffers) and native.decode_attention_ready(q, kv.keys[layer]):
                # a draft pass's few rows over the whole context: torch's SDPA with a mask costs ~1 ms
                # at 2k cached rows (the drafter's largest op), Eyas's decode kernel a fraction
                out = native.decode_attention(q.transpose(0, 1), kv.keys[layer], kv.values[layer], kv.end - n)
                return self.o_proj(out.reshape(n, -1))
        out = F.scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), attn_mask=mask,
                                             enable_gqa=self.num_heads != self.num_kv_heads)
        return self.o_proj(out[0].transpose(0, 1).reshape(n, -1))


class DraftMLP(nn.Module):
    def __init__(self, cfg: DrafterConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DraftLayer(nn.Module):
    def __init__(self, cfg: DrafterConfig, fusion: bool):
        super().__init__()
        self.fusion, self.norm_before_residual = fusion, cfg.norm_before_residual
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if fusion:
            self.hidden_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DraftAttention(cfg, 2 * cfg.hidden_size if fusion else cfg.hidden_size)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = DraftMLP(cfg)

    def forward(self, x, residual, embeds, cos, sin, mask, kv, layer):
        if self.fusion:
            if self.norm_before_residual:
                residual = x = self.hidden_norm(x)
            else:
                residual, x = x, self.hidden_norm(x)
            x = torch.cat([self.input_layernorm(embeds), x], dim=-1)
        else:
            residual = x + residual
            x = self.input_layernorm(residual)
        x = self.self_attn(x, cos, sin, mask, kv, layer)
        residual = x + residual
        return self.mlp(self.post_attention_layernorm(residual)), residual


class Drafter(nn.Module):
    """Tensor names match the checkpoint layout (with `layers.0.` for `midlayer.`), see checkpoint.py.
    `embed_tokens` / `lm_head` are absent when the checkpoint shares the target's."""

    def __init__(self, cfg: DrafterConfig, *, own_embeddings: bool = True, own_lm_head: bool = True):
        super().__init__()
        self.config = cfg
        H = cfg.hidden_size
        if own_embeddings:
            self.embed_tokens = nn.Embedding(cfg.vocab_size, H)
        if cfg.norm_before_fc:
            self.input_norm = RMSNorm(cfg.fc_input_size, cfg.rms_norm_eps)
        if cfg.fc_norm:
            self.fc_norm = nn.ModuleList(RMSNorm(cfg.target_hidden_size, cfg.rms_norm_eps)
                                         for _ in cfg.aux_layer_ids)
        self.fc = nn.Linear(cfg.fc_input_size, H, bias=False)
        self.layers = nn.ModuleList(DraftLayer(cfg, fusion=(i == 0)) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(H, cfg.rms_norm_eps)
        if own_lm_head:
            self.lm_head = nn.Linear(H, cfg.draft_vocab_size, bias=False)
        self.mask_hidden = nn.Parameter(torch.zeros(1, 1, cfg.fc_input_size))
        # target id = draft id + d2t[draft id]
        self.register_buffer("d2t", torch.zeros(cfg.draft_vocab_size, dtype=torch.long))
        # float32 always (not a buffer, so .to(dtype) cannot round it), moved to the device on use
        self.inv_freq = rope_inverse_frequencies(cfg)
        self._shared: dict[str, nn.Module] = {}      # the target's modules, never saved or trained
        self.mask_state: torch.Tensor | None = None   # fc(mask_hidden), see refresh()
        self.compiled = None                          # a CompiledDraft for inference passes, or None

    # ---- wiring ------------------------------------------------------------------------------

    def share_target_modules(self, target_model) -> None:
        """Use the target's embedding / lm_head where the checkpoint has none."""
        if not hasattr(self, "embed_tokens"):
            self._shared["embed_tokens"] = target_model.get_input_embeddings()
        if not hasattr(self, "lm_head"):
            self._shared["lm_head"] = target_model.get_output_embeddings()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "embed_tokens"):
            return self.embed_tokens(ids)
        with torch.no_grad():   # the target's table is never trained (nor its huge gradient built)
            return self._shared["embed_tokens"](ids)

    def head(self) -> nn.Module:
        return self.lm_head if hasattr(self, "lm_head") else self._shared["lm_head"]

    @torch.no_grad()
    def refresh(self) -> None:
        """Project `mask_hidden` through fc once, as vLLM does at load, and store the projections for
        a draft pass's few rows: bf16 ones on the tile kernel where it runs (lean/native.py),
        others column-major (see lean/weights.py); call after changing weights."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                if native.tile_ready(module.weight):
                    native.TileLinear.adopt(module)
                else:
                    column_major(module)
        self.mask_state = self.combine(self.mask_hidden.view(1, -1)).detach()

    # ---- math --------------------------------------------------------------------------------

    def combine(self, aux: torch.Tensor) -> torch.Tensor:
        """[T, fc_input_size] concatenated target states (or mask_hidden) -> [T, H]."""
        if hasattr(self, "input_norm"):
            aux = self.input_norm(aux)
        if hasattr(self, "fc_norm"):
            chunks = aux.chunk(len(self.fc_norm), dim=-1)
            aux = torch.cat([norm(c) for norm, c in zip(self.fc_norm, chunks)], dim=-1)
        return self.fc(aux)

    def rope(self, positions: torch.Tensor):
        """cos, sin [T, head_dim] for apply_rope: float32 angles (as vLLM), cast to the weights' dtype."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        cos, sin = freqs.cos(), freqs.sin()
        dtype = self.fc.weight.dtype
        return torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)

    def forward(self, input_ids: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor, *,
                cache: "DraftCache | None" = None, attn_mask: torch.Tensor | None = None):
        """input_ids [T], hidden [T, H] (already fused), positions [T] absolute.
        With `cache`: rows are written at `positions` (consecutive) and attend causally to
        everything the cache holds below them. Without: `attn_mask` [T, T] (True = attend).
        Returns (normed [T, H] for the lm_head, state [T, H] fed forward by EAGLE-3 chaining)."""
        if cache is None:
            return self.run_layers(input_ids, hidden, positions, attn_mask, None)
        start, n = int(positions[0]), input_ids.shape[0]
        if self.compiled is not None and self.compiled.handles(n):
            return self.compiled(input_ids, hidden, positions, cache, start)
        cache.reserve(start + n)
        return self.cached_forward(input_ids, hidden, positions, cache.keys, cache.values, start)

    def cached_forward(self, input_ids, hidden, positions, keys: list[torch.Tensor], values: list[torch.Tensor],
                       start: int):
        """The inference pass over KV buffers (what a compiled draft step runs): rows at positions
        start.. write their keys/values there and see every row up to their own position."""
        end = start + input_ids.shape[0]
        mask = torch.arange(end, device=positions.device)[None, :] <= positions[:, None]
        return self.run_layers(input_ids, hidden, positions, mask, KVBuffers(keys, values, positions, end))

    def run_layers(self, input_ids, hidden, positions, attn_mask, kv):
        """The layers, norm and output state; `kv` (KVBuffers, or training's PastKV) holds earlier
        rows' keys/values and takes the new rows'."""
        cos, sin = self.rope(positions)
        embeds = self.embed(input_ids)
        x, residual = hidden, None
        for i, layer in enumerate(self.layers):
            x, residual = layer(x, residual, embeds, cos, sin, attn_mask, kv, i)
        prenorm = x + residual
        normed = self.norm(prenorm)
        return normed, (normed if self.config.norm_output else prenorm)

    def logits(self, normed: torch.Tensor) -> torch.Tensor:
        """[T, H] -> [T, draft_vocab_size]."""
        return self.head()(normed)

    def to_target_ids(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids]

    def target_vocab_logits(self, draft_logits: torch.Tensor) -> torch.Tensor:
        """Scatter [T, Vd] draft logits into [T, V] with -inf elsewhere (vLLM compute_logits)."""
        if self.config.draft_vocab_size == self.config.vocab_size:
            return draft_logits
        full = draft_logits.new_full((draft_logits.shape[0], self.config.vocab_size), float("-inf"))
        full[:, self.to_target_ids(torch.arange(self.config.draft_vocab_size, device=draft_logits.device))] = \
            draft_logits
        return full


def init_drafter(cfg: DrafterConfig, *, seed: int = 0, std: float = 0.02, own_embeddings: bool = True,
                 own_lm_head: bool = True, draft_to_target: torch.Tensor | None = None,
                 target_model=None) -> Drafter:
    """A randomly initialised drafter (tests, and the start of training). `draft_to_target`
    lists the target id of each draft id (sorted), from which d2t is derived."""
    gen = torch.Generator().manual_seed(seed)
    drafter = Drafter(cfg, own_embeddings=own_embeddings, own_lm_head=own_lm_head)
    with torch.no_grad():
        for name, p in drafter.named_parameters():
            if name.endswith("norm.weight") or ".fc_norm." in name or name.startswith("fc_norm."):
                continue                          # norms start at one
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        if draft_to_target is not None:
            ids = torch.as_tensor(draft_to_target, dtype=torch.long)
            drafter.d2t.copy_(ids - torch.arange(len(ids)))
    if target_model is not None:
        drafter.share_target_modules(target_model)
        param = next(target_model.parameters())
        drafter.to(device=param.device, dtype=param.dtype)
    drafter.eval().requires_grad_(False)   # like a loaded drafter; fit_drafter turns training on
    drafter.refresh()
    return drafter
