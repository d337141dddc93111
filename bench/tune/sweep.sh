# usage: sh sweep.sh SWEEPFILE  (runs each line: name override-stems..., 6 at a time)
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1; mkdir -p /tmp/r $OUT
while read name rest; do
  ov=""; for o in $rest; do ov="$ov --override bench/tune/$o.yaml"; done
  echo "timeout 500 python3 bench/tune_builtin.py --work /tmp/w/$name $ov $EXTRA --threads 2 --out /tmp/r/$name.json > /tmp/r/$name.log 2>&1; echo done $name \$?"
done < $1 > /tmp/cmds.txt
xargs -P 6 -I{} sh -c '{}' < /tmp/cmds.txt
for f in /tmp/r/*.json; do echo "== $f"; cat $f; done > $OUT/rows.txt
for f in /tmp/r/*.log; do echo "== $f"; grep -v "^{" $f | tail -n 40; done > $OUT/logs.txt
