# Run one sweep of bench/tune/sweeps.txt, 6 settings at a time (written for a 16-core GPU box):
#   OUT=/tmp/out [EXTRA="--genotype darts=..."] sh bench/tune/sweep.sh SWEEP
# Rows land in $OUT/rows.txt (one JSON block per setting), the tail of each log in $OUT/logs.txt.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p /tmp/tune_rows "$OUT"
grep -v '^#' bench/tune/sweeps.txt | awk -v s="$1" '$1 == s' | while read -r sweep name rest; do
  ov=""; for o in $rest; do ov="$ov --override $o"; done
  echo "timeout 500 python3 bench/tune_builtin.py --work /tmp/tune_work/$name $ov $EXTRA --threads 2 --out /tmp/tune_rows/$name.json > /tmp/tune_rows/$name.log 2>&1; echo done $name \$?"
done > /tmp/tune_cmds.txt
xargs -P 6 -I{} sh -c '{}' < /tmp/tune_cmds.txt
for f in /tmp/tune_rows/*.json; do echo "== $f"; cat "$f"; done > "$OUT/rows.txt"
for f in /tmp/tune_rows/*.log; do echo "== $f"; grep -v "^{" "$f" | tail -n 40; done > "$OUT/logs.txt"
