"""Command line of the library (run from the project or work directory).

    python -m pipeline_lib lineage <artifact> [--json] [--check]
        Which jobs, inputs, params, seeds, code and weights produced <artifact>, back to the raw
        data, with every recorded hash checked against the disk (and dvc.lock when present).
        --check: exit 1 when anything is STALE, MISSING or disagrees with dvc.lock.

    python -m pipeline_lib pull [dvc pull arguments...]
        `dvc pull` (without targets: the stages recorded in dvc.lock), then give the pulled outputs file times in DAG order (dvc.lock's stages
        sorted by their deps), so Snakemake sees them as up to date ("Nothing to be done")
        instead of rerunning jobs whose inputs look newer than their outputs; then
        `snakemake --touch --forceall` over the pulled outputs (when `dvc status` is clean) so the
        clone has `.snakemake/` metadata and a later params/code change reruns under Snakemake too.

    python -m pipeline_lib sync
        The second half of `pull` alone: after `dvc checkout` of another version (e.g.
        `git checkout <commit> -- dvc.lock params.yaml && dvc checkout`), when `dvc status` says the
        workspace matches dvc.lock, tell Snakemake that these outputs are the ones dvc.lock vouches
        for (file times in DAG order, then `snakemake --touch`), so `snakemake -n` has nothing to do.
        Without it Snakemake plans exactly the jobs whose params or code differ from its last run.

    python -m pipeline_lib restore-mtimes
        Only the file times in DAG order (no Snakemake metadata).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .io.errors import PipelineError


def _lineage(args: argparse.Namespace) -> int:
    from .provenance.lineage import LINEAGE_DIR, lineage, render_text

    lin = lineage(args.artifact, store=args.store or LINEAGE_DIR, dvc_lock=args.dvc_lock)
    if args.json:
        print(json.dumps(lin.to_json(), indent=2, sort_keys=True))
    else:
        print(render_text(lin))
    return 1 if (args.check and lin.stale) else 0


def _norm(path: str) -> str:
    return Path(os.path.normpath(path)).as_posix()


def stage_order(lock: dict) -> list[tuple[int, str, list[str]]]:
    """(rank, stage, outs) for every dvc.lock stage; rank 0 reads only sources, rank n reads rank < n."""
    stages = lock.get("stages") or {}
    outs = {name: [_norm(o["path"]) for o in (st.get("outs") or [])] for name, st in stages.items()}
    deps = {name: [_norm(d["path"]) for d in (st.get("deps") or [])] for name, st in stages.items()}

    def producers(dep: str) -> list[str]:
        return [n for n, paths in outs.items() if any(dep == p or dep.startswith(p + "/") for p in paths)]

    rank: dict[str, int] = {}

    def rank_of(name: str, seen: tuple = ()) -> int:
        if name not in rank:
            if name in seen:
                raise PipelineError(f"dvc.lock: stage {name} depends on itself")
            ups = [rank_of(p, seen + (name,)) for d in deps[name] for p in producers(d) if p != name]
            rank[name] = 1 + max(ups) if ups else 0
        return rank[name]

    return sorted((rank_of(n), n, outs[n]) for n in stages)


def _set_time(path: Path, when: float) -> None:
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path, topdown=False):
            for name in filenames:
                os.utime(Path(dirpath, name), (when, when), follow_symlinks=False)
            os.utime(dirpath, (when, when))
    elif path.exists():
        os.utime(path, (when, when), follow_symlinks=False)


def restore_mtimes(lock_path: str | os.PathLike = "dvc.lock", *, spacing: float = 1.0) -> list[str]:
    """Give sources, then each rank of stage outputs, strictly increasing file times (in the past)."""
    import yaml

    lock_path = Path(lock_path)
    if not lock_path.is_file():
        raise PipelineError(f"{lock_path}: not found; run from the project root after `dvc repro` was committed")
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    order = stage_order(lock)
    all_outs = {o for _, _, outs in order for o in outs}
    sources = sorted({_norm(d["path"]) for st in (lock.get("stages") or {}).values() for d in (st.get("deps") or [])}
                     - all_outs)
    sources = [s for s in sources if not any(s.startswith(o + "/") for o in all_outs)]
    top = max((r for r, _, _ in order), default=0)
    base = time.time() - (top + 3) * spacing
    for source in sources:
        _set_time(Path(source), base)
    touched = []
    for rank, name, outs in order:
        existing = [o for o in outs if Path(o).exists()]
        for out in existing:
            _set_time(Path(out), base + (rank + 1) * spacing)
        if existing:
            touched.append(name)
    return touched


def _locked_stages(lock_path: str | os.PathLike) -> list[str]:
    import yaml

    lock_path = Path(lock_path)
    if not lock_path.is_file():
        return []
    return sorted((yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}).get("stages") or {})


# `dvc pull` options that take a value as the next word (`-j 2`, `-r store`): that word is no target
_DVC_PULL_VALUE_OPTIONS = {"-j", "--jobs", "-r", "--remote"}


def _pull_targets(dvc_args: list[str]) -> list[str]:
    targets, after_option = [], False
    for arg in dvc_args:
        if after_option:
            after_option = False
        elif arg in _DVC_PULL_VALUE_OPTIONS:
            after_option = True
        elif not arg.startswith("-"):
            targets.append(arg)
    return targets


def _pull(args: argparse.Namespace) -> int:
    if not args.skip_dvc:
        dvc_args = list(args.dvc_args)
        if not _pull_targets(dvc_args):
            # no targets: the stages dvc.lock has a record of (stages never reproduced have nothing to pull)
            dvc_args += _locked_stages(args.dvc_lock)
        result = subprocess.run(["dvc", "pull", *dvc_args])
        if result.returncode != 0:
            print(f"ERROR: dvc pull failed (exit {result.returncode}); file times left as they are", file=sys.stderr)
            return result.returncode
    touched = restore_mtimes(args.dvc_lock)
    print(f"file times restored in DAG order for {len(touched)} stage(s): {', '.join(touched)}")
    if touched and not args.no_metadata:
        code = record_snakemake_metadata(args.dvc_lock, touched)
        if code:
            return code
    print("check: snakemake -n <target>  (expect 'Nothing to be done')")
    return 0


def record_snakemake_metadata(lock_path: str | os.PathLike, stages: list[str]) -> int:
    """``snakemake --touch --forceall`` over the pulled outputs, so this clone gets ``.snakemake/``
    metadata and Snakemake's params/code/input triggers work here too (a fresh clone has none,
    and those triggers then stay silent). Only when ``dvc status`` says the checkout matches
    dvc.lock: the metadata then truthfully names the params and code that made the outputs."""
    import yaml

    status = subprocess.run(["dvc", "status", "--json", *stages], capture_output=True, text=True)
    changed = json.loads(status.stdout or "{}") if status.returncode == 0 else None
    if changed:
        print(f"WARNING: dvc status: {', '.join(sorted(changed))} differ from dvc.lock; Snakemake metadata not "
              "recorded (run `dvc repro`, or `snakemake`, to bring them up to date)", file=sys.stderr)
        return 0
    if changed is None:
        print(f"WARNING: dvc status failed; Snakemake metadata not recorded: {status.stderr.strip()}", file=sys.stderr)
        return 0
    lock = yaml.safe_load(Path(lock_path).read_text(encoding="utf-8")) or {}
    targets = [o["path"] for name in stages for o in (lock["stages"][name].get("outs") or []) if Path(o["path"]).exists()]
    # --no-hooks: dvc status was just found clean, so the onsuccess dvc commit would change nothing
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--touch", "--forceall", "--no-hooks",
                             *targets], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"ERROR: snakemake --touch failed (exit {result.returncode}):\n{result.stdout}{result.stderr}", file=sys.stderr)
        return result.returncode
    print(f"Snakemake metadata recorded for {len(targets)} pulled output(s) (snakemake --touch)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lin = sub.add_parser("lineage", help="provenance of an artifact back to the raw data")
    lin.add_argument("artifact")
    lin.add_argument("--json", action="store_true", help="machine-readable output")
    lin.add_argument("--check", action="store_true", help="exit 1 when a hash is stale or disagrees with dvc.lock")
    lin.add_argument("--store", default=None, help="lineage store (default results/.lineage)")
    lin.add_argument("--dvc-lock", default="dvc.lock")
    lin.set_defaults(func=_lineage)
    pull = sub.add_parser("pull", help="dvc pull, then file times in DAG order so Snakemake has nothing to do")
    pull.add_argument("--dvc-lock", default="dvc.lock")
    pull.add_argument("--skip-dvc", action="store_true", help=argparse.SUPPRESS)
    pull.add_argument("--no-metadata", action="store_true",
                      help="do not record Snakemake metadata for the pulled outputs (snakemake --touch)")
    pull.add_argument("dvc_args", nargs=argparse.REMAINDER, help="passed to dvc pull")
    pull.set_defaults(func=_pull)
    sync = sub.add_parser("sync", help="after dvc checkout: file times in DAG order and Snakemake metadata")
    sync.add_argument("--dvc-lock", default="dvc.lock")
    sync.set_defaults(func=_pull, skip_dvc=True, dvc_args=[], no_metadata=False)
    restore = sub.add_parser("restore-mtimes", help="only the file times in DAG order")
    restore.add_argument("--dvc-lock", default="dvc.lock")
    restore.set_defaults(func=_pull, skip_dvc=True, dvc_args=[], no_metadata=True)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "pull":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.dvc_args = [*extra, *args.dvc_args]
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
