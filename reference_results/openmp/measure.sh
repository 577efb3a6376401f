#!/usr/bin/env bash
# OpenMP's wait policy alone and beside a second torch process (nbs/40c_step_cost). Run from the repository root with
# its .venv; TSKD_CONFIG is the config.json of a tiny TSKD run (e.g. RUN/3_students/runs/TSKD/config.json of
# `dst run all --scale tiny --out RUN`). measured.log is this script's output on the 2-core AMD EPYC CPU, 2026-11-30.
set -u
source .venv/bin/activate
HERE=$(dirname "$0")
tskd() { env $1 dst train --config "$TSKD_CONFIG" --out /tmp/omp_tskd --overwrite --quiet >/dev/null 2>&1
         echo "tiny TSKD $1: $(grep -o '"time": [0-9.]*' /tmp/omp_tskd/metrics.jsonl | cut -d' ' -f2 | tr '\n' ' ')"; }
echo "== solo $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in 1 2; do for p in OMP_WAIT_POLICY=ACTIVE OMP_WAIT_POLICY=PASSIVE X=default; do
  env $p python "$HERE/step.py" siamfc; env $p python "$HERE/step.py" siamfc@0.5; tskd $p; done; done
for p in X=default OMP_WAIT_POLICY=PASSIVE; do
  env $p dst bench --models siamfc,siamfc@0.5 --frames 30 --precision fp32 2>/dev/null | tail -3 | sed "s/^/$p /"; done
echo "== two processes side by side $(date +%T)"
for p in X=default OMP_WAIT_POLICY=PASSIVE; do
  ( env $p python "$HERE/step.py" siamfc & env $p python "$HERE/step.py" siamfc@0.5 & wait ); done
