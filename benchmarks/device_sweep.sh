#!/usr/bin/env bash
# Train several benchmarks/recipe.py runs at once on one GPU machine, then score each with benchmarks/views.py.
#
#   bash benchmarks/device_sweep.sh CACHE.npz RUNS.txt [SECONDS]
#
# RUNS.txt holds one run a line, "NAME recipe.py-arguments", e.g.
#   tiny_f0_s0 --folds 0 --seeds 0 --size 200 300 --backbone resnet_tiny --lr 3e-3 --epochs 35 --patience 12
# Every run starts at once on the same GPU (--device ${DEVICE:-cuda}); each stops training after the epoch that
# passes SECONDS (default 420, recipe.py --time-limit), and scoring is cut after SCORE_SECONDS (default 300), so that
# training and scoring end inside one device call of at most 10 minutes; trained.tar.gz (logs and recipe.py's CSVs)
# is written before scoring starts. Each writes NAME.pt (recipe.py --save) and NAME.log; then views.py scores every run that
# finished, each in its own process at once (k = 5 references with ink, and single pairs, per data set). Into $OUT
# (a temporary folder when unset): sweep.tar.gz (logs, recipe.py's NAME.csv, views.py's NAME.views.csv, views.txt),
# views.txt (mean and sd over the runs) and networks_aa.tar, networks_ab.tar, ... (the .pt files under 2 MB, 8 a
# tar, about 14 MB each for resnet_tiny: under the 16 MiB a file that comes back; 22 runs make 3 tars; at most
# 64 MiB come back in all, about 36 resnet_tiny networks).
#
# On the device machine its Python lacks skorch and pytorch-metric-learning (it has tqdm, safetensors, scipy):
# carry a folder .whl of their wheels beside the cache, fetched here with
#   python -m pip download --no-deps --only-binary=:all: -d .whl skorch==1.4.0 pytorch-metric-learning==2.9.0
# (pure-Python wheels, 0.4 MB); the script installs them when skorch is missing. Example call:
#   run(command="bash benchmarks/device_sweep.sh .cache_data/all_200x300.npz .cache_data/runs.txt",
#       carry=[".cache_data/all_200x300.npz", ".cache_data/runs.txt", ".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
cache=$1 runs=$2 seconds=${3:-420}
OUT=${OUT:-$(mktemp -d)}
work=$(mktemp -d)
if ! python3 -c "import skorch" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
threads=$(( $(nproc) / $(grep -c . "$runs") ))
while read -r name arguments; do
    [ -z "$name" ] && continue
    OMP_NUM_THREADS=$(( threads > 0 ? threads : 1 )) python3 benchmarks/recipe.py "$cache" $arguments \
        --device "${DEVICE:-cuda}" --time-limit "$seconds" --save "$work/$name.pt" --out "$work/$name.csv" \
        > "$work/$name.log" 2>&1 &
done < "$runs"
wait
finished=$(ls "$work"/*.pt 2>/dev/null)
echo "finished runs: $(echo $finished | wc -w) of $(grep -c . "$runs")"
(cd "$work" && tar czf "$OUT/trained.tar.gz" *.log *.csv)  # recipe.py's figures come back even if scoring is cut
for run in $finished; do  # each run scored by its own views.py, all at once, cut after SCORE_SECONDS
    OMP_NUM_THREADS=$(( threads > 0 ? threads : 1 )) timeout "${SCORE_SECONDS:-300}" \
        python3 benchmarks/views.py "$cache" "$run" \
        --device "${DEVICE:-cuda}" --out "${run%.pt}.views.csv" > "${run%.pt}.views.log" 2>&1 &
done
wait
python3 -c '
import sys
import pandas as pd
from views import report
print(len(sys.argv) - 1, "runs scored by views.py")
report(pd.concat([pd.read_csv(f, index_col=[0, 1, 2, 3]) for f in sys.argv[1:]]))
' $(ls "$work"/*.views.csv 2>/dev/null) > "$work/views.txt" 2>&1
cat "$work/views.txt"
cp "$work/views.txt" "$OUT/"
(cd "$work" && tar czf "$OUT/sweep.tar.gz" *.log *.csv views.txt)
# the networks in tars of 8 (a file back from the device machine holds at most 16 MiB)
(cd "$work" && find . -maxdepth 1 -name '*.pt' -size -2048k -printf '%f\n' | sort | split -l 8 - group.)
for group in "$work"/group.*; do
    [ -e "$group" ] && tar cf "$OUT/networks_${group##*.}.tar" -C "$work" $(cat "$group")
done
echo "wrote $OUT/sweep.tar.gz and $(ls "$OUT"/networks_*.tar 2>/dev/null | wc -l) tars of networks"
