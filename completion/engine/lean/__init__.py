"""Our own Qwen3 / Qwen3-MoE / Qwen2 / Llama forward: fused projections, a static KV cache, optional torch.compile.
The Hugging Face model stays loaded beside it as the reference and as what drafters share."""
from .config import LeanConfig, unsupported_reason
from .model import LeanModel
from .runner import LeanTargetRunner

__all__ = ["LeanConfig", "LeanModel", "LeanTargetRunner", "lean_model_for", "unsupported_reason"]


def lean_model_for(hf_model) -> LeanModel:
    """The lean model over this Hugging Face model's weights, built once per model: every engine
    over the same loaded weights shares it (building again would fuse the projections again)."""
    lean = getattr(hf_model, "_eyas_lean", None)
    if lean is None:
        lean = LeanModel.from_hf(hf_model)
        hf_model._eyas_lean = lean
    return lean
