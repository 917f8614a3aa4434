#!/usr/bin/env bash
# Issue 20's PostgreSQL figure: a real server on 127.0.0.1 (Debian's postgresql package), one study, two worker
# processes of one `cifarlab tune --workers 2`, then two more commands joining the same study at once as two other
# machines would; prints every trial with its worker, state, value and times, and checks that none is lost or run
# twice.
#
#   bash benchmarks/tune_postgres.sh DATA OUT_DIR
#
# DATA is an image folder (or 'cifar10'); each trial is proyecto1 for 2 epochs on 200 images per class (160 train,
# 40 validation), so the whole run takes a few minutes on 2 cores. OUT_DIR gets trials.csv and the logs; the server
# lives in a temporary folder.
set -euo pipefail
data=${1:?usage: tune_postgres.sh DATA OUT_DIR}
out=${2:?usage: tune_postgres.sh DATA OUT_DIR}
cifarlab=${CIFARLAB:-cifarlab}  # CIFARLAB and PYTHON pick another install
python=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee "$out/tune_postgres.log") 2>&1

bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1 || command -v pg_ctl)")
server=$(mktemp -d /tmp/cifarlab-pg-XXXXXX)
as_user=()
if [ "$(id -u)" = 0 ]; then as_user=(runuser -u postgres --); chown postgres "$server"; fi  # initdb refuses root
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_user[@]}" "$bin/initdb" -D "$server/data" -U postgres --auth=trust -E UTF8 > /dev/null
"${as_user[@]}" "$bin/pg_ctl" -D "$server/data" -o "-p $port -k $server -c listen_addresses=127.0.0.1" -w \
    -l "$server/log" start > /dev/null
trap '"${as_user[@]}" "$bin/pg_ctl" -D "$server/data" -m immediate stop > /dev/null; rm -rf "$server"' EXIT
url=postgresql://postgres@127.0.0.1:$port/postgres
hardware=$("$python" -c 'import torch; from cifarlab.device import describe_hardware as d; print(d(torch.device("cpu")))')
echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $url; $hardware"

study_dir=$(mktemp -d /tmp/cifarlab-pg-study-XXXXXX)
common=(--preset proyecto1 --epochs 2 --top-k 0 --storage "$url" --study-dir "$study_dir" --data "$data"
        --per-class-limit 200 --val-size 0.2 --quiet)
echo "== one command, two worker processes, 8 trials"
time "$cifarlab" tune "${common[@]}" --workers 2 --trials 8
echo "== two commands at once (two 'machines', one worker each), each asking for 4 more: the budget is global"
"$cifarlab" tune "${common[@]}" --trials 4 > "$out/machine-a.log" 2>&1 &
machine_a=$!
"$cifarlab" tune "${common[@]}" --trials 4 > "$out/machine-b.log" 2>&1 &
machine_b=$!
wait "$machine_a" "$machine_b"  # a bare wait would wait for the tee above too
tail -n 2 "$out/machine-a.log" "$out/machine-b.log"

"$python" - "$url" "$out/trials.csv" <<'EOF'
import csv, sys
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
trials = optuna.load_study(study_name="proyecto1", storage=sys.argv[1]).trials
rows = [{"trial": t.number, "worker": t.user_attrs.get("worker"), "state": t.state.name,
         "val_accuracy": None if t.value is None else round(t.value * 100, 2),
         "start": t.datetime_start.strftime("%H:%M:%S"), "end": t.datetime_complete.strftime("%H:%M:%S"),
         "run_dir": t.user_attrs.get("run_dir")} for t in trials]
with open(sys.argv[2], "w", newline="") as file:
    writer = csv.DictWriter(file, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
for row in rows:
    print(*(row[key] for key in ("trial", "worker", "state", "val_accuracy", "start", "end")), sep="\t")
numbers = [row["trial"] for row in rows]
workers = {row["worker"] for row in rows}
per_worker = {w: sum(row["worker"] == w for row in rows) for w in workers}
print(f"{len(rows)} trials, numbered {numbers[0]}..{numbers[-1]} with no gap: {numbers == list(range(len(rows)))};"
      f" distinct run folders: {len({row['run_dir'] for row in rows})}; all finished:"
      f" {all(row['state'] in ('COMPLETE', 'PRUNED') for row in rows)}; trials per worker: {sorted(per_worker.values())}")
EOF
rm -rf "$study_dir"
