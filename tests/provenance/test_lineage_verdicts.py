"""The lineage verdicts on a hand-made store: ok, STALE, MISSING, DVC DISAGREES, and an input
rewritten by its producer after the reading job had read it.

Two jobs on tiny files: ``make`` reads ``raw.txt`` (a source) and writes ``mid.txt``;
``use`` reads ``mid.txt`` and writes ``out.txt``. Records are built with the library's own
``build_record`` as ``run_step`` does; the expected verdicts follow from what the test does to
the files afterwards, and md5s for ``dvc.lock`` are computed here with hashlib.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from pipeline_lib.__main__ import main as cli
from pipeline_lib.io.atomic import write_json
from pipeline_lib.provenance.lineage import lineage
from pipeline_lib.provenance.record import build_record, record_name

STORE = Path("store")


def _job(rule: str, inputs: list[str], outputs: dict[str, str]) -> None:
    """Run a fake job: write its outputs, then record it (as run_step does after main)."""
    for path, text in outputs.items():
        Path(path).write_text(text)
    record = build_record(rule=rule, wildcards={}, inputs=inputs, outputs=list(outputs), params={f"{rule}.seed": 1})
    write_json(STORE / record_name(rule, {}), record)


@pytest.fixture
def chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("raw.txt").write_text("raw data\n")
    _job("make", ["raw.txt"], {"mid.txt": "made from raw\n"})
    _job("use", ["mid.txt"], {"out.txt": "used mid\n"})
    return tmp_path


def _verdicts(lin) -> dict[tuple[str, str], str]:
    """(record id, path) -> status for every checked file."""
    return {(rid, path): check.status for rid, checks in lin.checks.items() for path, check in checks.items()}


def _md5(path: str) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _lock(stages: dict[str, dict[str, str]]) -> str:
    """A dvc.lock with the given {stage: {out path: md5}}."""
    doc = {"schema": "2.0", "stages": {name: {"cmd": "x", "outs": [{"path": p, "md5": m} for p, m in outs.items()]}
                                       for name, outs in stages.items()}}
    Path("dvc.lock").write_text(yaml.safe_dump(doc))
    return "dvc.lock"


def test_untouched_chain_is_ok_back_to_the_source(chain):
    lin = lineage("out.txt", store=STORE, dvc_lock="absent.lock")
    assert lin.order == ["use", "make"] and lin.problems == [] and not lin.stale
    assert set(_verdicts(lin).values()) == {"ok"}
    assert lin.edges["use"] == [("mid.txt", "make")] and lin.edges["make"] == [("raw.txt", None)]
    assert cli(["lineage", "out.txt", "--check", "--store", str(STORE), "--dvc-lock", "absent.lock"]) == 0


def test_a_changed_intermediate_is_stale(chain, capsys):
    Path("mid.txt").write_text("edited by hand\n")
    lin = lineage("out.txt", store=STORE, dvc_lock="absent.lock")
    verdicts = _verdicts(lin)
    assert verdicts[("use", "mid.txt")] == "STALE" and verdicts[("make", "mid.txt")] == "STALE"
    assert verdicts[("use", "out.txt")] == "ok" and verdicts[("make", "raw.txt")] == "ok"
    assert lin.checks["use"]["mid.txt"].current_sha256 == hashlib.sha256(b"edited by hand\n").hexdigest()
    assert lin.problems and all(p.startswith("STALE: mid.txt") for p in lin.problems)
    assert cli(["lineage", "out.txt", "--check", "--store", str(STORE), "--dvc-lock", "absent.lock"]) == 1
    assert "STALE: mid.txt" in capsys.readouterr().out


def test_a_deleted_source_is_missing(chain):
    Path("raw.txt").unlink()
    lin = lineage("out.txt", store=STORE, dvc_lock="absent.lock")
    check = lin.checks["make"]["raw.txt"]
    assert check.status == "MISSING" and check.current_sha256 is None
    assert [s for s in _verdicts(lin).values() if s != "ok"] == ["MISSING"]
    assert lin.problems == ["MISSING: raw.txt (record make: not on disk)"]


def test_dvc_lock_md5_agrees_or_disagrees(chain):
    right = _lock({"use": {"out.txt": _md5("out.txt")}, "make": {"mid.txt": _md5("mid.txt")}})
    lin = lineage("out.txt", store=STORE, dvc_lock=right)
    assert lin.checks["use"]["out.txt"].dvc == "agrees" and lin.checks["make"]["mid.txt"].dvc == "agrees"
    assert lin.checks["make"]["raw.txt"].dvc is None  # not in dvc.lock
    assert lin.problems == []

    wrong = _lock({"use": {"out.txt": hashlib.md5(b"something else").hexdigest()}, "make": {"mid.txt": _md5("mid.txt")}})
    lin = lineage("out.txt", store=STORE, dvc_lock=wrong)
    check = lin.checks["use"]["out.txt"]
    assert check.status == "ok" and check.dvc == "DISAGREES"  # the file is what the record says; DVC thinks otherwise
    assert lin.problems == ["DVC DISAGREES: out.txt (record use: dvc.lock md5 differs from the record)"]
    assert cli(["lineage", "out.txt", "--check", "--store", str(STORE), "--dvc-lock", wrong]) == 1


def test_an_input_rewritten_by_its_producer_after_the_job_read_it(chain):
    # `make` runs again (new content, new record); `use` did not rerun, so it read the old mid.txt
    _job("make", ["raw.txt"], {"mid.txt": "made again, differently\n"})
    lin = lineage("out.txt", store=STORE, dvc_lock="absent.lock")
    assert lin.checks["make"]["mid.txt"].status == "ok"  # the producer's record matches the disk
    reader = lin.checks["use"]["mid.txt"]
    assert reader.status == "STALE"
    assert "make rewrote it after this job read it" in reader.notes
    assert any("make rewrote it after this job read it" in p for p in lin.problems)


def test_a_rewrite_back_to_the_same_content_is_not_stale(chain):
    # rerunning the producer with the same result changes nothing the reader depends on
    _job("make", ["raw.txt"], {"mid.txt": "made from raw\n"})
    lin = lineage("out.txt", store=STORE, dvc_lock="absent.lock")
    assert lin.problems == [] and lin.checks["use"]["mid.txt"].notes == []
