"""What provenance costs at the start of a run: the data root's content fingerprint and the
no-op check of a finished study.

    python bench/provenance_cost.py --root DATA_ROOT [--study STUDY_DIR] [--repeat 3]

``--root``: ``pipeline_lib.provenance.data_fingerprint`` of that folder three ways -- cold (no stat cache:
every byte hashed, as on a first run or a fresh clone), warm (the cache under
``.snakemake/data_fingerprint/`` of a scratch folder: only ``os.stat`` per file, as on every
later start), and warm after one file changed in place (one file hashed again).
``--study``: in a finished study (a git + DVC checkout after ``make study``), the wall time of
``snakemake -n`` and of ``dvc status``, each the median of ``--repeat`` runs (wall and CPU;
both must report nothing to do): ``bench/noop_time.py``, which also sums them against the
budget. The machine's load is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from pipeline_lib.provenance.data_fingerprint import data_fingerprint  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from noop_time import noop_times, report, study_env  # noqa: E402


def _load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def fingerprint_costs(root: Path) -> None:
    files = [p for p in root.rglob("*") if p.is_file()]
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"data root {root}: {len(files)} files, {size_mb:.0f} MB; {_load()}")
    scratch = Path(tempfile.mkdtemp(prefix="fpcost-"))
    here = os.getcwd()
    try:
        os.chdir(scratch)  # the stat cache lives under the working directory's .snakemake/
        cold, first = _timed(lambda: data_fingerprint(str(root), []))
        warm, again = _timed(lambda: data_fingerprint(str(root), []))
        assert again == first, "the warm fingerprint differs from the cold one"
        victim = sorted(files)[len(files) // 2]
        original = victim.read_bytes()
        try:
            with victim.open("r+b") as f:  # in place: same inode, new bytes
                f.seek(len(original) // 2)
                f.write(bytes([original[len(original) // 2] ^ 0xFF]))
            changed, after = _timed(lambda: data_fingerprint(str(root), []))
        finally:
            victim.write_bytes(original)
        assert after != first, "an in-place change did not change the fingerprint"
    finally:
        os.chdir(here)
        shutil.rmtree(scratch)
    print(f"  cold (every byte hashed): {cold:.2f} s")
    print(f"  warm (stat cache, nothing changed): {warm:.2f} s")
    print(f"  warm, one file changed in place: {changed:.2f} s")


def noop_costs(study: Path, repeat: int) -> None:
    print(f"finished study {study}; {_load()}")
    # bench/noop_time.py: the same no-op check, with its budget
    report(str(study), noop_times({"study": (study, study_env(study))}, repeat)["study"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--study", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.root:
        fingerprint_costs(args.root.resolve())
    if args.study:
        noop_costs(args.study.resolve(), args.repeat)
    print(f"done; {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
