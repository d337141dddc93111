"""Code and data as inputs: the import closure, the data fingerprint, hashes at job start, the machine."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.iocontainers import Namedlist

from e2e_helpers import ROOT
from pipeline_lib.provenance.codedeps import PLUMBING, changed_files, job_code, module_files
from pipeline_lib.provenance.data_fingerprint import data_fingerprint, tree_sha256
from pipeline_lib.provenance.lineage import lineage
from pipeline_lib.provenance.record import hash_path
from pipeline_lib.step import run_step

SCRIPTS = sorted((ROOT / "workflow/scripts").glob("*.py"))


def _package(tmp_path: Path) -> Path:
    """A hand-made library: relative, absolute, lazy and `from pkg import module` imports."""
    src = tmp_path / "src"
    files = {
        "pipeline_lib/__init__.py": "",
        "pipeline_lib/a.py": "from .b import f\n",
        "pipeline_lib/b.py": "import os\nfrom pipeline_lib.sub import c\n\ndef f():\n    from . import lazy\n",
        "pipeline_lib/lazy.py": "from .sub.d import g\n",
        "pipeline_lib/sub/__init__.py": "",
        "pipeline_lib/sub/c.py": "",
        "pipeline_lib/sub/d.py": "from ..scripting import run_step\n",
        "pipeline_lib/step.py": "from .never import x\n",  # plumbing: not followed
        "pipeline_lib/never.py": "",
        "pipeline_lib/unused.py": "",
    }
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    (tmp_path / "script.py").write_text("from pipeline_lib.a import f\nfrom pipeline_lib.step import run_step\n")
    return src


def test_the_closure_follows_every_kind_of_import_and_stops_at_plumbing(tmp_path):
    src = _package(tmp_path)
    found = {p.relative_to(src).as_posix() for p in module_files(tmp_path / "script.py", src)}
    assert found == {
        "pipeline_lib/__init__.py", "pipeline_lib/a.py", "pipeline_lib/b.py", "pipeline_lib/lazy.py",
        "pipeline_lib/sub/__init__.py", "pipeline_lib/sub/c.py", "pipeline_lib/sub/d.py",
    }


def test_imports_nested_in_any_block_are_found(tmp_path):
    """Imports under try/except/else/finally, with, if/else, for/while-else, match and class bodies."""
    src = tmp_path / "src"
    blocks = {
        "try_": "try:\n    import pipeline_lib.m1\nexcept ImportError:\n    from . import m2\nelse:\n"
                "    from .m3 import x\nfinally:\n    pass\n",
        "nest": "class K:\n    def f(self):\n        with open('f') as h:\n            if h:\n                pass\n"
                "            else:\n                import pipeline_lib.m4\n",
        "loop": "for i in []:\n    pass\nelse:\n    while False:\n        pass\n    else:\n        from .m5 import y\n",
        "case": "match 1:\n    case 1:\n        from . import m6\n",
    }
    files = {f"pipeline_lib/{name}.py": text for name, text in blocks.items()}
    files |= {f"pipeline_lib/m{i}.py": "" for i in range(1, 8)} | {"pipeline_lib/__init__.py": ""}
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    script = tmp_path / "script.py"
    script.write_text("from pipeline_lib import try_, nest, loop, case\nx = lambda: __import__('pipeline_lib.m7')\n")
    found = {p.name for p in module_files(script, src)}
    assert found == {"__init__.py", *(f"{name}.py" for name in blocks), *(f"m{i}.py" for i in range(1, 7))}


def test_the_import_cache_is_kept_across_starts_and_redone_for_a_changed_file(tmp_path):
    """With ``cache_dir`` the import names of each file are kept by its sha256: a new process reads
    them instead of parsing (a stale entry stands in for the file only while its bytes are the same),
    and an edited file is parsed again."""
    from pipeline_lib.provenance import codedeps

    src, script, cache = _package(tmp_path), tmp_path / "script.py", tmp_path / "cache"

    def new_process() -> None:
        for cached in (codedeps._closure, codedeps._known_imports, codedeps._names_in_source):
            cached.cache_clear()

    plain = module_files(script, src)
    assert module_files(script, src, cache) == plain
    (stored,) = cache.iterdir()
    entries = json.loads(stored.read_text())
    b_py = str((src / "pipeline_lib/b.py").resolve())
    assert entries[b_py][:3] == [hashlib.sha256((src / "pipeline_lib/b.py").read_bytes()).hexdigest(), "pipeline_lib.b", False]
    entries[b_py][3] = ["pipeline_lib.sub"]  # not what b.py imports: shows whether the entry is read
    stored.write_text(json.dumps(entries))
    new_process()
    assert {p.name for p in module_files(script, src, cache)} == {"__init__.py", "a.py", "b.py"}
    (src / "pipeline_lib/b.py").write_text((src / "pipeline_lib/b.py").read_text() + "import pipeline_lib.unused\n")
    new_process()
    assert {p.name for p in module_files(script, src, cache)} == {p.name for p in plain} | {"unused.py"}


def test_job_code_hashes_the_rule_file_the_script_and_the_modules(tmp_path):
    src = _package(tmp_path)
    rule = tmp_path / "rule.smk"
    rule.write_text("rule x:\n")
    code = job_code(rule, tmp_path / "script.py", root=tmp_path, src=src)
    assert code["rule.smk"] == hashlib.sha256(b"rule x:\n").hexdigest()
    assert set(code) == {"rule.smk", "script.py"} | {f"src/pipeline_lib/{m}" for m in
                                                     ("__init__.py", "a.py", "b.py", "lazy.py", "sub/__init__.py", "sub/c.py", "sub/d.py")}
    (src / "pipeline_lib/sub/c.py").write_text("# a comment counts: DVC hashes bytes too\n")
    assert changed_files(code, tmp_path) == {"src/pipeline_lib/sub/c.py": "changed"}
    (src / "pipeline_lib/lazy.py").unlink()
    assert changed_files(code, tmp_path)["src/pipeline_lib/lazy.py"] == "missing"


def test_every_script_names_its_helpers_and_only_plumbing_is_left_out():
    """Plumbing is not followed, so a helper reached only through it would be missed: the scripts
    that call Step.device() import devices themselves, and figures come from report.provenance."""
    for script in SCRIPTS:
        text = script.read_text()
        names = {p.relative_to(ROOT / "src").as_posix() for p in module_files(script, ROOT / "src")}
        if "step.device()" in text:
            assert "pipeline_lib/runtime/devices.py" in names, script.name
        if "publish_figure(" in text:
            assert {"pipeline_lib/report/provenance.py", "pipeline_lib/report/figures.py"} <= names, script.name
        assert not names & {m.replace(".", "/") + ".py" for m in PLUMBING}, script.name
    scripting = ast.parse((ROOT / "src/pipeline_lib/step.py").read_text())
    methods = {n.name for n in ast.walk(scripting) if isinstance(n, ast.FunctionDef)}
    assert "publish_figure" not in methods  # a helper that writes outputs does not live in plumbing


def test_the_data_fingerprint_equals_the_lineage_tree_hash_and_ignores_times(tmp_path):
    root = tmp_path / "data"
    (root / "train/good_0").mkdir(parents=True)
    (root / "train/good_0/a.jpg").write_bytes(b"a" * 10)
    (root / "test_labels.csv").write_text("id,label\nx,0\n")
    (root / ".snakemake_timestamp").write_text("")
    cache = tmp_path / "cache"
    first = data_fingerprint(root, cache_dir=cache)
    assert first["sha256"] == hash_path(root)["sha256"] and first["files"] == 2
    for path in root.rglob("*"):
        os.utime(path, ns=(10**18, 10**18))
    assert data_fingerprint(root, cache_dir=cache) == first
    with open(root / "train/good_0/a.jpg", "r+b") as handle:  # in place, same size
        handle.write(b"b")
    assert data_fingerprint(root, cache_dir=cache)["sha256"] == hash_path(root)["sha256"] != first["sha256"]


def test_the_fingerprint_cache_is_used_while_size_time_and_inode_hold(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    image = root / "a.jpg"
    image.write_bytes(b"abc")
    cache = tmp_path / "cache"
    sha, _ = tree_sha256(root, cache)
    stat = image.stat()
    cache_file = next(cache.iterdir())
    stored = json.loads(cache_file.read_text())
    stored["files"]["a.jpg"][1] = "0" * 64  # a planted hash is reused: proof the file was not read
    cache_file.write_text(json.dumps(stored))
    assert tree_sha256(root, cache)[0] != sha
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # new time: hashed again
    assert tree_sha256(root, cache)[0] == sha


class _Snake:
    """The parts of Snakemake's ``snakemake`` object that run_step reads."""

    def __init__(self, tmp_path: Path, inputs: list[str], outputs: list[str]):
        self.input, self.output = Namedlist(inputs), Namedlist(outputs)
        self.params = Namedlist(fromdict={"cfg": {}, "code": {}})
        self.wildcards, self.threads, self.rule = Namedlist(), 1, "victim"
        self.resources = Namedlist(fromdict={"gpu": 0})
        self.log = Namedlist([str(tmp_path / "victim.log")])


def test_a_record_vouches_only_for_the_inputs_the_job_saw_at_its_start(tmp_path, monkeypatch):
    """Finding 8: another run rewrote an input while this job worked; the record keeps what
    this job read, and the check then reports the input as changed since."""
    monkeypatch.chdir(tmp_path)
    Path("in.txt").write_text("dataset A")
    seen_at_start = hashlib.sha256(b"dataset A").hexdigest()

    def main(step):
        text = Path(step.input[0]).read_text()
        Path(step.input[0]).write_text("dataset B")  # the other run, meanwhile
        Path(step.output[0]).write_text(text.upper())

    run_step(_Snake(tmp_path, ["in.txt"], ["out.txt"]), main)
    record = json.loads((tmp_path / "results/.lineage/victim.json").read_text())
    assert record["inputs"]["in.txt"]["sha256"] == seen_at_start
    lin = lineage("out.txt")
    assert any(p.startswith("STALE: in.txt") for p in lin.problems)


@pytest.mark.parametrize("capability", ["AVX2", "DEFAULT"])
def test_the_record_names_the_kernels_torch_really_used(capability):
    import torch

    if capability == "AVX2" and torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("this CPU has no AVX2")
    code = "import torch, json; from pipeline_lib.provenance.machine import describe; print(json.dumps(describe(1)['torch']))"
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability.lower())
    env.pop("ATEN_CPU_CAPABILITY") if capability == "DEFAULT" else None
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    described = json.loads(out)
    expected = "AVX2" if capability == "AVX2" else torch.backends.cpu.get_cpu_capability()
    assert described["cpu_capability"] == expected
    assert described["onednn"] and described["blas"]
