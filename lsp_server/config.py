"""Server settings: command-line flags, then `initializationOptions`, then
`workspace/didChangeConfiguration` ({"eyas": {...}}), each overriding the last.

Client keys are camelCase as editors write them:
    {"engine": "torch" | "daemon" | "vllm" | "openai", "url": "http://host:8000", "apiKeyEnv": "VAR",
     "model": "<dir or hub id>", "draft": "<drafter dir or hub id>",
     "device": "cpu", "precision": "auto" | "float32" | "bf16" | "int8" | "int4" | "int4-head8", "impl": "lean" | "hf", "compile": false, "maxTokens": 64, "temperature": 0.0, "topP": 1.0,
     "requestTimeout": 20, "enable": {"*": true, "markdown": false}, "speculativeK": 4,
     "cache": true, "prefetch": true, "adapt": "off" | "idle",
     "multiline": "auto" | "always" | "never" | {"*": "auto", "markdown": "never"}}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from completion.engine import ENGINE_KINDS, PRECISIONS

_KEYS = {"engine": "engine", "model": "model", "draft": "draft", "device": "device", "precision": "precision", "impl": "impl",
         "compile": "compile", "maxTokens": "max_tokens", "temperature": "temperature", "topP": "top_p",
         "requestTimeout": "request_timeout_s", "enable": "enable", "url": "url", "apiKeyEnv": "api_key_env",
         "speculativeK": "speculative_k", "multiline": "multiline", "cache": "cache", "prefetch": "prefetch",
         "adapt": "adapt"}
_LOAD_KEYS = ("engine", "model", "draft", "device", "precision", "impl", "compile", "url", "api_key_env")   # a change reloads the model


@dataclass
class ServerConfig:
    engine: str = "torch"
    model: str | None = None          # None: the default model (completion.models.DEFAULT_MODEL)
    draft: str | None = None
    device: str | None = None
    precision: str = "auto"           # torch engine: float32, bf16, int8, int4, int4-head8; auto: the device's best
    impl: str | None = None           # torch engine forward: "lean" or "hf"; None: lean where supported
    compile: bool = False             # torch engine: torch.compile the lean steps at load (a minute on 2 cores)
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    request_timeout_s: float = 20.0   # a stuck engine answers empty after this, never freezes the editor
    enable: dict[str, bool] = field(default_factory=lambda: {"*": True})
    url: str | None = None            # openai: the server; daemon: a daemon started by hand
    api_key_env: str | None = None    # openai: the environment variable that holds the API key
    speculative_k: int | None = None  # draft tokens per step; None: the drafter's default
    multiline: dict[str, str] = field(default_factory=lambda: {"*": "auto"})   # per language id
    cache: bool = True                # answer typed-through requests from recent completions
    prefetch: bool = True             # compute the next completion as if the shown one were accepted
    adapt: str = "off"                # "idle": fit the drafter to the workspace while the user is away

    def enabled_for(self, language_id: str | None) -> bool:
        return self.enable.get(language_id or "", self.enable.get("*", True))

    def multiline_for(self, language_id: str | None) -> str:
        return self.multiline.get(language_id or "", self.multiline.get("*", "auto"))

    def merged(self, settings: object) -> tuple["ServerConfig", list[str]]:
        """A copy with the client's settings applied, and a list of complaints about bad values
        (bad values are ignored, never fatal)."""
        if not isinstance(settings, dict):
            return self, ([] if settings is None else [f"settings must be an object, got {type(settings).__name__}"])
        if isinstance(settings.get("eyas"), dict):
            settings = settings["eyas"]
        changes, problems = {}, []
        for key, value in settings.items():
            name = _KEYS.get(key)
            if name is None:
                continue
            checked = _check(name, value)
            if isinstance(checked, str) and checked.startswith("!"):
                problems.append(f"{key}: {checked[1:]}")
            else:
                changes[name] = checked
        for name in ("enable", "multiline"):   # per-language maps merge into what is there
            if name in changes:
                changes[name] = {**getattr(self, name), **changes[name]}
        return dataclasses.replace(self, **changes), problems

    def needs_reload(self, other: "ServerConfig") -> bool:
        return any(getattr(self, k) != getattr(other, k) for k in _LOAD_KEYS)


def _check(name: str, value):
    """The value to use, or a string starting with '!' that explains why it is refused."""
    if name in ("model", "draft", "device", "url", "api_key_env"):
        return value if value is None or isinstance(value, str) else f"!expected a string, got {value!r}"
    if name == "precision":
        return value if value in PRECISIONS else f"!unknown precision {value!r} (available: {', '.join(PRECISIONS)})"
    if name == "impl":
        return value if value in (None, "lean", "hf") else f"!unknown impl {value!r} (available: lean, hf)"
    if name == "engine":
        return value if value in ENGINE_KINDS else f"!unknown engine {value!r} (available: {', '.join(ENGINE_KINDS)})"
    if name == "max_tokens":
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096
        return value if ok else f"!expected an integer in 1..4096, got {value!r}"
    if name in ("temperature", "top_p", "request_timeout_s"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        low, high = {"temperature": (0, 5), "top_p": (1e-6, 1), "request_timeout_s": (0.1, 600)}[name]
        return float(value) if ok and low <= value <= high else f"!expected a number in [{low}, {high}], got {value!r}"
    if name == "speculative_k":
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 32)
        return value if ok else f"!expected an integer in 1..32, got {value!r}"
    if name == "multiline":
        modes = ("auto", "always", "never")
        if isinstance(value, str):
            value = {"*": value}
        ok = isinstance(value, dict) and all(v in modes for v in value.values())
        return value if ok else f"!expected one of {', '.join(modes)} or an object of language id -> mode, got {value!r}"
    if name == "adapt":
        return value if value in ("off", "idle") else f"!expected off or idle, got {value!r}"
    if name in ("cache", "prefetch", "compile"):
        return value if isinstance(value, bool) else f"!expected true or false, got {value!r}"
    if name == "enable":
        ok = isinstance(value, dict) and all(isinstance(v, bool) for v in value.values())
        return value if ok else f"!expected an object of language id -> true/false, got {value!r}"
    return value
