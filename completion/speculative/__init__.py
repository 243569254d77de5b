"""P-EAGLE speculative decoding (DESIGN §4): drafter model, vLLM-compatible checkpoints, parallel
and autoregressive (EAGLE-3) drafting, lossless verification.

    drafter.py     the drafter network          checkpoint.py  read / write the vLLM layout
    config.py      config.json <-> DrafterConfig cache.py       the drafter's per-document KV
    layout.py      draft query rows (diagram)   proposer.py    parallel / autoregressive drafting
    verify.py      greedy + rejection sampling  decoder.py     the engine's SpeculativeDecoder
    compiled.py    the drafter pass under torch.compile (opt-in, with the engine's `compile`)
"""
from .checkpoint import DrafterCheckpointError, load_drafter, save_drafter
from .config import DrafterConfig, DrafterConfigError, default_aux_layer_ids, distinct_aux_layer_ids
from .decoder import SpeculativeDecoder
from .drafter import Drafter, init_drafter

__all__ = ["Drafter", "DrafterCheckpointError", "DrafterConfig", "DrafterConfigError", "SpeculativeDecoder",
           "default_aux_layer_ids", "distinct_aux_layer_ids", "init_drafter", "load_drafter", "save_drafter"]
