"""llama.cpp's own programs (`llama-bench`, `llama-server`, `llama-quantize`), built once from a
pinned source, the way its users build them: `make install-peers` runs `python -m
completion.evaluation.llama_cpp build`.

The source is llama-cpp-python's sdist (PyPI is reachable here; GitHub is not), which vendors
llama.cpp at a fixed commit. The build lands in `$XDG_CACHE_HOME/eyas/peers/llama.cpp-<version>/`
and is reused while its stamp (version + cmake flags) matches. Native first (`GGML_NATIVE=ON`, every
instruction this CPU has); if the native programs crash on a real forward here (0.3.36's AMX path
did on a Sapphire Rapids), the build is redone with the vector units named and AMX left out, and
the stamp says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "llama-cpp-python==0.3.36"
COMMIT = "0c1e57098"                     # the llama.cpp commit that sdist vendors
PROGRAMS = ("llama-bench", "llama-server", "llama-quantize")
COMMON_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF")
NATIVE_FLAGS = ("-DGGML_NATIVE=ON",)


def fallback_flags() -> tuple[str, ...]:
    """The vector units named one by one, no AMX: for a CPU where the native build crashes."""
    from completion.engine.lean.native import cpu_flags

    flags = ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"]
    if "avx512f" in cpu_flags():
        flags += ["-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON"]
    return tuple(flags)


class NotBuilt(Exception):
    """llama.cpp's programs are not built here; the message says how to build them."""


def home() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "eyas" / "peers" / f"llama.cpp-{SDIST.split('==')[1]}"


def stamp() -> dict | None:
    path = home() / "stamp.json"
    return json.loads(path.read_text()) if path.exists() else None


def program(name: str) -> Path:
    """The path of one built program, or NotBuilt saying how to build it."""
    path = home() / "build" / "bin" / name
    if stamp() is None or not path.exists():
        raise NotBuilt(f"llama.cpp's {name} is not built: `make install-peers` builds it (~10 min on 2 cores)")
    return path


def log(message: str) -> None:
    print(f"[llama.cpp] {message}", file=sys.stderr, flush=True)


def fetch_source(dest: Path) -> Path:
    """The vendored llama.cpp tree of the pinned sdist, unpacked under `dest`."""
    source = dest / "llama.cpp"
    if (source / "CMakeLists.txt").exists():
        return source
    with tempfile.TemporaryDirectory() as tmp:
        log(f"downloading {SDIST} (source only) from PyPI")
        subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-binary", ":all:", "--no-deps",
                        "--quiet", "-d", tmp], check=True)
        archive = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            prefix = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(Path(tmp) / "src", members=[m for m in members if m.name], filter="data")
        shutil.move(Path(tmp) / "src", source)
    return source


def compile_programs(source: Path, build: Path, flags: tuple[str, ...], jobs: int) -> None:
    shutil.rmtree(build, ignore_errors=True)
    log(f"cmake {' '.join(flags)}")
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), *COMMON_FLAGS, *flags], check=True,
                   stdout=subprocess.DEVNULL)
    log(f"building {', '.join(PROGRAMS)} with {jobs} jobs (~10 min on 2 cores)")
    subprocess.run(["cmake", "--build", str(build), "-j", str(jobs), "--target", *PROGRAMS], check=True)


def runs_a_forward(build: Path, gguf: Path | None) -> bool | None:
    """Whether llama-bench survives a short prefill and decode on a real model (None: no model here)."""
    if gguf is None or not gguf.exists():
        return None
    proc = subprocess.run([str(build / "bin" / "llama-bench"), "-m", str(gguf), "-p", "16", "-n", "4", "-r", "1",
                           "-t", str(os.cpu_count() or 1)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        log(f"llama-bench failed on {gguf.name} (rc {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return proc.returncode == 0


def build(gguf: Path | None = None, jobs: int | None = None, force: bool = False) -> dict:
    """Build (or reuse) the programs; returns the stamp: version, commit, flags, whether native."""
    root = home()
    old = stamp()
    if old and not force and all((root / "build" / "bin" / p).exists() for p in PROGRAMS):
        log(f"reusing {root} ({'native' if old['native'] else 'fallback'} build of {old['commit']})")
        return old
    root.mkdir(parents=True, exist_ok=True)
    (root / "stamp.json").unlink(missing_ok=True)
    source = fetch_source(root)
    jobs = jobs or os.cpu_count() or 1
    native = True
    compile_programs(source, root / "build", NATIVE_FLAGS, jobs)
    if runs_a_forward(root / "build", gguf) is False:
        log("the native build crashed on a forward; rebuilding with named vector units and no AMX")
        native = False
        compile_programs(source, root / "build", fallback_flags(), jobs)
        if runs_a_forward(root / "build", gguf) is False:
            raise RuntimeError("llama.cpp crashes on this CPU with both builds; see the log above")
    result = {"sdist": SDIST, "commit": COMMIT, "native": native,
              "flags": list(COMMON_FLAGS + (NATIVE_FLAGS if native else fallback_flags()))}
    (root / "stamp.json").write_text(json.dumps(result, indent=1))
    log(f"built {', '.join(PROGRAMS)} in {root / 'build' / 'bin'}")
    return result


def default_gguf() -> Path | None:
    """The registry's GGUF of the default model, assembled where the bench keeps it, to check the build on."""
    try:
        from completion.models import DEFAULT_MODEL, MODELS, assemble_gguf
    except ImportError as exc:
        log(f"no registry model to check the build on ({exc})")
        return None
    packaged = MODELS[DEFAULT_MODEL]
    if not packaged.installed():
        log(f"{DEFAULT_MODEL} is not installed: the build goes unchecked")
        return None
    path = home() / "check" / f"{DEFAULT_MODEL}-q4.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        assemble_gguf(packaged, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m completion.evaluation.llama_cpp", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "where"))
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    args = parser.parse_args(argv)
    if args.command == "where":
        print(home() / "build" / "bin")
        return
    build(default_gguf(), args.jobs, args.force)


if __name__ == "__main__":
    main()
