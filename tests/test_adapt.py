"""`eyas adapt`: which files a repository gives, and the whole run on the pocket pair (fast): data,
fine-tune, held-out AL before/after, the kept drafter and its provenance, --status / --reset, and a
run killed mid-training that leaves the previous drafter in use."""
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from completion import adapt
from completion.models import POCKET_DRAFT

CODE = "def area(width, height):\n    \"\"\"The area of a rectangle.\"\"\"\n    return width * height\n" * 6


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_collect_keeps_source_and_leaves_out_ignored_secret_binary_generated_and_huge(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    files = {
        "pkg/geometry.py": CODE, "web/app.js": CODE.replace("def", "function"), "README.md": CODE,
        ".gitignore": "ignored.py\n", "ignored.py": CODE, ".env": "API_KEY=abc\n" * 40,
        "keys/id_rsa": "x" * 400, "pkg/secret_settings.py": CODE,
        "pkg/leaky.py": CODE + "-----BEGIN RSA PRIVATE KEY-----\nabc\n",
        "pkg/big.py": "x = 1\n" * 40_000, "pkg/gen.py": "# auto-generated, do not edit\n" + CODE,
        "pkg/blob.py": "\0" * 400, "node_modules/lib/index.js": CODE, "pkg/tiny.py": "x = 1\n",
        "pkg/tokenizer.py": CODE, "pkg/api_token.py": CODE,     # a tokenizer is code; a token file is not
    }
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "init", "-q")
    git(repo, "add", "pkg", "web", "README.md", ".gitignore", "node_modules", "-f")
    train, heldout, skipped = adapt.collect(repo)
    assert sorted(train + heldout) == ["pkg/geometry.py", "pkg/tokenizer.py", "web/app.js"]   # ignored.py: .gitignore
    assert len(heldout) >= 1 and len(train) >= 1
    assert skipped["secret"] == 5 and skipped["generated"] == 1 and skipped["binary"] == 1
    assert skipped["size"] == 2 and skipped["vendored or built"] == 1 and skipped["not source"] >= 2
    assert adapt.repo_root(repo / "pkg" / "geometry.py") == repo.resolve()
    assert adapt.collect(repo) == (train, heldout, skipped)          # a fixed split


def make_repo(root: Path, n: int = 12) -> Path:
    """A small git repository of real code: standard-library modules."""
    repo = root / "stdlib-sample"
    repo.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("bisect.py", "colorsys.py", "fnmatch.py", "glob.py", "heapq.py", "keyword.py", "linecache.py",
                 "netrc.py", "queue.py", "sched.py", "shlex.py", "stat.py", "textwrap.py", "this.py")[:n]:
        if (stdlib / name).exists():
            shutil.copy(stdlib / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "sample")
    return repo


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_adapt_on_the_pocket_pair_reports_before_after_and_keeps_only_a_gain(tmp_path, cache, capsys):
    repo = make_repo(tmp_path)
    record = adapt.adapt(repo, model="pocket", draft=None, minutes=0.5, threads=1, log=lambda line: None, speed=True)
    home = adapt.repo_dir(repo)
    assert home.parent == cache / "eyas" / "adapt"
    decode = record["decode"]      # tokens/s measured on the held-out prompts, plain and speculative
    assert list(decode) == ["plain", "shipped"] + ["adapted"] * record["kept"]
    assert decode["plain"]["al"] == 1.0 and all(d["tok_s"] > 0 and 1.0 <= d["al"] for d in decode.values())
    assert record["files"]["train"] >= 5 and record["files"]["heldout"] >= 1
    assert record["data_tokens"] > 0 and record["train_steps"] > 0 and record["commit"]
    assert set(record["al_before"]) == {"4", "10"} and 1 <= record["al_before"]["4"] <= 4
    assert set(record["al_lookup_after"]) == {"4", "10"} and 1 <= record["al_lookup_before"]["4"] <= 5
    assert record["kept"] == (record["al_after"]["4"] > record["al_before"]["4"])
    assert json.loads((home / "last-run.json").read_text())["al_after"] == record["al_after"]
    if record["kept"]:
        from completion.speculative import load_drafter
        from completion.training.synthesis import load_target
        from completion.models import resolve_model
        assert adapt.adapted_draft(repo / "heapq.py", "pocket") == str(home / "drafter")
        assert adapt.adapted_draft(repo / "heapq.py", "qwen2.5-coder-0.5b") is None   # another target's
        load_drafter(str(home / "drafter"), load_target(resolve_model("pocket"), "cpu"))
    else:
        assert adapt.adapted_draft(repo, "pocket") is None
    assert not (home / "work").exists()
    assert adapt.main([str(repo), "--status"]) == 0
    out = capsys.readouterr().out
    assert ("AL@4" in out) == record["kept"]
    assert adapt.main([str(repo), "--reset"]) == 0 and not home.exists()


def test_a_killed_run_leaves_the_previous_drafter_and_the_next_reuses_its_data(tmp_path, cache):
    repo = make_repo(tmp_path)
    home = adapt.repo_dir(repo)
    previous = home / "drafter"
    shutil.copytree(POCKET_DRAFT, previous)
    (previous / "provenance.json").write_text(json.dumps({"model": "pocket", "al_before": {"4": 1.0},
                                                          "al_after": {"4": 1.1}}))
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cmd = [sys.executable, "-m", "completion.adapt", str(repo), "--model", "pocket", "--minutes", "1", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = home / "adapt.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and "AL before" in log.read_text()):
        time.sleep(0.2)
    time.sleep(1.0)                  # into the training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "AL before" in log.read_text(), log.read_text()[-2000:]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert adapt.adapted_draft(repo, "pocket") == str(previous)
    shards = sorted((home / "data").glob("shard-*.safetensors"))
    assert shards
    record = adapt.adapt(repo, model="pocket", draft=None, minutes=0.3, threads=1, log=lambda line: None)
    assert f"{len(shards)} done" in log.read_text().split("held-out AL before")[-2]   # the data was reused
    if not record["kept"]:
        assert {p.name: p.read_bytes() for p in previous.iterdir()} == before


def test_an_unset_draft_prefers_the_workspaces_adapted_drafter(tmp_path, cache, monkeypatch):
    import dataclasses

    from completion import models
    repo = make_repo(tmp_path, n=2)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "config.json").write_text("{}")
    monkeypatch.setitem(models.MODELS, models.DEFAULT_MODEL,
                        dataclasses.replace(models.MODELS[models.DEFAULT_MODEL], draft=shipped))
    assert models.default_draft(None, "bf16", "cpu", str(repo)) == models.SHIPPED_DRAFT
    adapted = adapt.repo_dir(repo) / "drafter"
    adapted.mkdir(parents=True)
    (adapted / "provenance.json").write_text(json.dumps({"model": models.DEFAULT_MODEL}))
    assert models.default_draft(None, "bf16", "cpu", str(repo / "bisect.py")) == str(adapted)
    assert models.default_draft(None, "float32", "cpu", str(repo)) is None   # plain where speculation loses
    assert models.default_draft("pocket", "bf16", "cpu", str(repo)) is None
