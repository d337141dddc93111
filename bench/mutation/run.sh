#!/usr/bin/env bash
# Mutation testing (mutmut, pinned in pyproject.toml's `bench` extra) of the modules behind the
# results table, killed by the fast unit tests. CPU heavy: runs under `nice`, MUTMUT_CHILDREN (2)
# mutants at a time.
#
#   bash bench/mutation/run.sh [SCRATCH_DIR]     # default /tmp/nexperia-mutation
#
# Works in a scratch copy (src/, tests/, pyproject.toml + bench/mutation/mutmut.toml), never in
# the checkout. Leaves mutmut's results there and a summary in SCRATCH_DIR/summary.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/tmp/nexperia-mutation}
CHILDREN=${MUTMUT_CHILDREN:-2}

rm -rf "$WORK"
mkdir -p "$WORK"
tar -C "$ROOT" --exclude=__pycache__ -cf - src tests | tar -C "$WORK" -xf -
cat "$ROOT/pyproject.toml" "$ROOT/bench/mutation/mutmut.toml" > "$WORK/pyproject.toml"
# MUTMUT_ONLY="src/pipeline_lib/classical/classifiers.py ...": only those of the listed modules (e.g. the
# ones a cut-off run did not reach), with the same tests
if [ -n "${MUTMUT_ONLY:-}" ]; then
  python - "$WORK/pyproject.toml" $MUTMUT_ONLY <<'PY'
import re, sys
path, only = sys.argv[1], sys.argv[2:]
text = open(path).read()
listed = re.search(r"only_mutate = \[(.*?)\]", text, re.S)
known = re.findall(r'"([^"]+)"', listed.group(1))
unknown = [m for m in only if m not in known]
if unknown:
    sys.exit(f"MUTMUT_ONLY: {unknown} not among bench/mutation/mutmut.toml's only_mutate {known}")
text = text[:listed.start()] + "only_mutate = [" + ", ".join(f'"{m}"' for m in only) + "]" + text[listed.end():]
open(path, "w").write(text)
PY
fi

cd "$WORK"
# small tensors: one thread each, and the machine is shared
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
echo "mutmut $(mutmut --version 2>&1 | awk '{print $NF}') in $WORK, $CHILDREN child process(es); load: $(uptime)"
start=$(date +%s)
nice -n 19 mutmut run --max-children "$CHILDREN" || true  # non-zero when mutants survive
end=$(date +%s)
mutmut export-cicd-stats >/dev/null
mutmut results --all true > results.txt || true
python - "$WORK" "$((end - start))" <<'PY' | tee summary.txt
import json, sys
from pathlib import Path
work, seconds = Path(sys.argv[1]), int(sys.argv[2])
stats = json.loads((work / "mutants/mutmut-cicd-stats.json").read_text())
counted = stats["killed"] + stats["survived"] + stats.get("timeout", 0) + stats.get("suspicious", 0)
print(json.dumps(stats, sort_keys=True))
print(f"killed {stats['killed']} of {counted} tested mutants = {100 * stats['killed'] / max(counted, 1):.1f} %"
      f" (no tests: {stats.get('no_tests', 0)}, skipped: {stats.get('skipped', 0)}); wall {seconds} s")
PY
echo "survivors: mutmut show <name> in $WORK (list: grep survived $WORK/results.txt)"
