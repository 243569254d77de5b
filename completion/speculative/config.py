"""The drafter's architecture, read from (and written to) the config.json vLLM reads for P-EAGLE
drafters (DESIGN §4, research/peagle.md §2.2).

Every key we depend on is validated here, once, at load time, with a message that names the key;
nothing in the decode loop re-checks them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Where the mask token id may live; vLLM 0.32 looks in this order (llm_base_proposer.py
# `_init_parallel_drafting_params`), AWS checkpoints use `ptd_token_id`.
MASK_ID_KEYS = ("mask_token_id", "pard_token", "ptd_token_id")
# Our own key (vLLM ignores it): the depth K the drafter was trained for.
TRAINED_DEPTH_KEY = "eyas_trained_depth"
DEFAULT_K_KEY = "eyas_default_k"      # the K measured fastest with this drafter (`eyas eval acceptance`)
# Depth allowed when a checkpoint does not say (public ones do not); the AWS drafters were
# trained with K = 8..10 and served with K = 5..7.
UNKNOWN_DEPTH_LIMIT = 32
DEFAULT_NUM_SPECULATIVE_TOKENS = 7

LAYER_STYLES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


class DrafterConfigError(ValueError):
    """A drafter's config.json lacks a key or disagrees with the target."""


def default_aux_layer_ids(num_target_layers: int) -> tuple[int, int, int]:
    """EAGLE-3's default: the residual streams entering layers (2, L//2, L-3)."""
    return (2, num_target_layers // 2, num_target_layers - 3)


def distinct_aux_layer_ids(num_target_layers: int) -> tuple[int, ...]:
    """The default where it names three distinct layers (L >= 7), else low / middle / last for
    toy targets (L >= 4), which the EAGLE-3 default would repeat or overrun."""
    ids = default_aux_layer_ids(num_target_layers)
    if len(set(ids)) == 3 and ids[0] < num_target_layers:
        return ids
    ids = (1, num_target_layers // 2, num_target_layers - 1)
    if len(set(ids)) != 3:
        raise DrafterConfigError(f"a {num_target_layers}-layer target is too shallow for three fused layers")
    return ids


SPECULATORS_KEYS = ("draft_vocab_size", "target_hidden_size", "norm_before_residual", "norm_before_fc", "fc_norm",
                    "norm_output", "mask_token_id", "eagle_aux_hidden_state_layer_ids")


def flatten_speculators_config(cfg: dict) -> dict:
    """vllm-project/speculators writes P-EAGLE configs as {"speculators_model_type": "peagle",
    "transformer_layer_config": {...}, "mask_token_id": ...}; vLLM flattens them the same way
    (transformers_utils/configs/speculators/algos.py `update_peagle`). Other configs pass through."""
    kind = cfg.get("speculators_model_type")
    if kind is None:
        return cfg
    if kind not in ("peagle", "eagle3"):
        raise DrafterConfigError(f"speculators_model_type {kind!r} is not a P-EAGLE / EAGLE-3 drafter")
    flat = dict(cfg.get("transformer_layer_config") or {})
    flat.update({k: cfg[k] for k in SPECULATORS_KEYS if k in cfg})
    return flat


@dataclass
class DrafterConfig:
    hidden_size: int
    num_hidden_layers: int            # including the fusion "midlayer" (layer 0)
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int                   # the target's vocabulary (embedding rows)
    draft_vocab_size: int             # lm_head rows; mapped to target ids with d2t
    target_hidden_size: int
    mask_token_id: int
    aux_layer_ids: tuple[int, ...]
    layer_style: str = "llama"        # "llama" or "qwen3" (q/k RMSNorm per head)
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 32768
    attention_bias: bool = False
    norm_before_residual: bool = False
    norm_before_fc: bool = False
    fc_norm: bool = False
    norm_output: bool = False         # EAGLE-3 chaining feeds the normed (not pre-norm) output
    trained_depth: int | None = None
    default_k: int | None = None
    torch_dtype: str = "float32"
    extra: dict = field(default_factory=dict)   # unknown keys, written back unchanged

    def __post_init__(self):
        # vLLM captures each listed layer once, in layer order, whatever order the config lists
        # them in (interfaces.py `_maybe_add_hidden_state`); we concatenate the same way
        self.aux_layer_ids = tuple(sorted(int(i) for i in self.aux_layer_ids))
        if self.layer_style not in LAYER_STYLES:
            raise DrafterConfigError(f"layer style must be one of {sorted(LAYER_STYLES)}, got {self.layer_style!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise DrafterConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if not 0 < self.draft_vocab_size <= self.vocab_size:
            raise DrafterConfigError(f"draft_vocab_size {self.draft_vocab_size} must be in 1..vocab_size "
                                     f"({self.vocab_size})")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise DrafterConfigError(f"mask token id {self.mask_token_id} is outside the vocabulary "
                                     f"(vocab_size {self.vocab_size})")

    @property
    def fc_input_size(self) -> int:
        return self.target_hidden_size * len(self.aux_layer_ids)

    @property
    def max_depth(self) -> int:
        return self.trained_depth or UNKNOWN_DEPTH_LIMIT

    @property
    def default_num_speculative_tokens(self) -> int:
        return min(self.default_k or DEFAULT_NUM_SPECULATIVE_TOKENS, self.max_depth)

    # ---- config.json -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, cfg: dict, *, num_target_layers: int | None = None) -> "DrafterConfig":
        """Parse a drafter config.json. `num_target_layers` supplies the default aux layer ids
        when the checkpoint declares none."""
        cfg = flatten_speculators_config(cfg)

        def need(key):
            if key not in cfg:
                raise DrafterConfigError(f"drafter config.json has no {key!r}")
            return cfg[key]

        hidden = int(need("hidden_size"))
        heads = int(need("num_attention_heads"))
        vocab = int(need("vocab_size"))
        mask_ids = {k: int(cfg[k]) for k in MASK_ID_KEYS if cfg.get(k) is not None}
        if not mask_ids:
            raise DrafterConfigError(
                "drafter config.json names no mask token: P-EAGLE needs one of "
                + ", ".join(repr(k) for k in MASK_ID_KEYS) + " (AWS checkpoints use 'ptd_token_id')")
        if len(set(mask_ids.values())) > 1:
            # vLLM would take the first of MASK_ID_KEYS; a disagreement is a broken export
            raise DrafterConfigError(f"drafter config.json gives different mask token ids: {mask_ids}")
        mask_id = next(iter(mask_ids.values()))

        eagle = cfg.get("eagle_config") or {}
        if eagle.get("use_aux_hidden_state", True) is False:
            raise DrafterConfigError("eagle_config.use_aux_hidden_state is false: only EAGLE-3 style "
                                     "drafters (three fused target layers) are supported")
        aux = eagle.get("eagle_aux_hidden_state_layer_ids") or cfg.get("eagle_aux_hidden_state_layer_ids")
        if not aux:
            if num_target_layers is None:
                raise DrafterConfigError("drafter config.json has no 'eagle_aux_hidden_state_layer_ids' "
                                         "and no target was given to derive the default (2, L//2, L-3)")
            aux = default_aux_layer_ids(num_target_layers)

        rope = cfg.get("rope_parameters") or {}
        rope_theta = float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0)
        rope_scaling = cfg.get("rope_scaling")
        if rope_scaling is None and rope.get("rope_type", "default") != "default":
            rope_scaling = dict(rope)

        arch = (cfg.get("architectures") or [""])[0]
        style = "qwen3" if cfg.get("model_type") == "qwen3" or "Qwen3" in arch else "llama"

        known = {"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "intermediate_size", "vocab_size", "draft_vocab_size", "target_hidden_size",
                 "eagle_config", "eagle_aux_hidden_state_layer_ids", "rms_norm_eps", "rope_theta",
                 "rope_scaling", "rope_parameters", "max_position_embeddings", "attention_bias",
                 "norm_before_residual", "norm_before_fc", "fc_norm", "norm_output", "architectures",
                 "model_type", "torch_dtype", "dtype", TRAINED_DEPTH_KEY, DEFAULT_K_KEY, *MASK_ID_KEYS}
        return cls(
            hidden_size=hidden,
            num_hidden_layers=int(need("num_hidden_layers")),
            num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(need("intermediate_size")),
            vocab_size=vocab,
            draft_vocab_size=int(cfg.get("draft_vocab_size") or vocab),
            target_hidden_size=int(cfg.get("target_hidden_size") or hidden),
            mask_token_id=int(mask_id),
            aux_layer_ids=tuple(aux),
            layer_style=style,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
            attention_bias=bool(cfg.get("attention_bias", False)),
            norm_before_residual=bool(cfg.get("norm_before_residual", False)),
            norm_before_fc=bool(eagle.get("norm_before_fc", cfg.get("norm_before_fc", False))),
            fc_norm=bool(cfg.get("fc_norm", False)),
            norm_output=bool(cfg.get("norm_output", False)),
            trained_depth=cfg.get(TRAINED_DEPTH_KEY),
            default_k=cfg.get(DEFAULT_K_KEY),
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
            extra={k: v for k, v in cfg.items() if k not in known},
        )

    def to_json(self) -> dict:
        """The config.json vLLM loads: Llama/Qwen3 keys + EAGLE-3 keys + the mask id under both
        names vLLM 0.16+ accepts (research/peagle.md §4.3)."""
        cfg = dict(self.extra)
        cfg.update({
            "architectures": [LAYER_STYLES[self.layer_style]],
            "model_type": self.layer_style,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "draft_vocab_size": self.draft_vocab_size,
            "target_hidden_size": self.target_hidden_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_bias": self.attention_bias,
            "norm_before_residual": self.norm_before_residual,
            "norm_before_fc": self.norm_before_fc,
            "fc_norm": self.fc_norm,
            "norm_output": self.norm_output,
            "tie_word_embeddings": False,
            "torch_dtype": self.torch_dtype,
            "ptd_token_id": self.mask_token_id,
            "pard_token": self.mask_token_id,
            "eagle_config": {"use_aux_hidden_state": True,
                             "eagle_aux_hidden_state_layer_ids": list(self.aux_layer_ids)},
        })
        if self.trained_depth is not None:
            cfg[TRAINED_DEPTH_KEY] = self.trained_depth
        if self.default_k is not None:
            cfg[DEFAULT_K_KEY] = self.default_k
        return cfg

    def check_target(self, target_config) -> None:
        """Fail early, naming the key, when this drafter cannot serve `target_config`."""
        text = getattr(target_config, "get_text_config", lambda: target_config)()
        num_layers = text.num_hidden_layers
        if self.target_hidden_size != text.hidden_size:
            raise DrafterConfigError(f"drafter target_hidden_size {self.target_hidden_size} != target "
                                     f"hidden_size {text.hidden_size}: this drafter was made for another model")
        if self.vocab_size != text.vocab_size:
            raise DrafterConfigError(f"drafter vocab_size {self.vocab_size} != target vocab_size "
                                     f"{text.vocab_size}: this drafter was made for another tokenizer")
        bad = [i for i in self.aux_layer_ids if not 0 <= i < num_layers]
        if bad:
            raise DrafterConfigError(f"eagle_aux_hidden_state_layer_ids {list(self.aux_layer_ids)} names "
                                     f"layers {bad} outside the target's 0..{num_layers - 1}")
        if len(set(self.aux_layer_ids)) != len(self.aux_layer_ids):
            raise DrafterConfigError(f"eagle_aux_hidden_state_layer_ids {list(self.aux_layer_ids)} repeats a layer: "
                                     "vLLM captures each layer once, so the fc input would not match (for a "
                                     "target this shallow, list the layers explicitly)")
