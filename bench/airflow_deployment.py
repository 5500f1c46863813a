"""Airflow as it is deployed: PostgreSQL, a real scheduler, Local or Celery executor.

Everything runs on this machine, as real servers and processes, in a work
directory under /tmp (never in the repository):

1. PostgreSQL (scripts/start_postgres.sh): database `airflow` for Airflow's own
   metadata (created with psql over TCP, password from the passfile) and
   database `mlmd` for ML Metadata, shared by every DAG. The MLMD schema is
   created once here, before any task runs, as a deployment's migration step
   (two DAGs' first tasks would otherwise both create it at the same moment).
2. An AIRFLOW_HOME whose dags folder holds one line,
   `from pipeline.airflow_dag import *`, with SENTIMENT_DATASETS naming the
   DAGs (`sentiment-polarity`, `sentiment-imdb`); `airflow db init`.
3. Executor `local`: `airflow scheduler` with the LocalExecutor. Executor
   `celery`: Redis (scripts/start_redis.sh) as broker, the result backend on
   the PostgreSQL server, and two `airflow celery worker` processes started as
   two machines would run them: each in its own UTS namespace (own hostname
   `airflow-worker1` / `airflow-worker2`, which Airflow records as the task
   instance's hostname), own AIRFLOW_HOME with its own copy of the dags folder,
   own log folder and log-server port, own working directory and
   AIRFLOW__CELERY__WORKER_CONCURRENCY; the pipeline root (SENTIMENT_OUTPUT_DIR)
   is one path both see, as shared storage would be.
4. `airflow dags trigger` for every DAG at once; with --kill-task, SIGKILLs the
   process running that task (the forked `airflow task runner: DAG TASK ...`,
   or an `airflow tasks run ... --raw`) once it has run --kill-after seconds:
   the scheduler must find the zombie and Airflow retry it (SENTIMENT_AIRFLOW_RETRIES).
5. Waits for the runs to end, reads every task instance (state, start, end,
   duration, hostname, try_number) and the failed tries from Airflow's
   database, computes the overlap (seconds during which two or more tasks of a
   run, or of the two DAGs, were running at once), counts ML Metadata's
   executions per pipeline and component, and writes it all as JSON.

The scheduler, workers, Redis and PostgreSQL are stopped at the end, also on
Ctrl-C or SIGTERM; the work directory (logs) stays until the next run.

    .venv-airflow/bin/python bench/airflow_deployment.py --executor local --dags polarity,imdb
    .venv-airflow/bin/python bench/airflow_deployment.py --executor celery --dags polarity
    .venv-airflow/bin/python bench/airflow_deployment.py --dags polarity --kill-task Trainer
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import data_sources  # noqa: E402

AIRFLOW = Path(sys.executable).parent / "airflow"
DAG_SHIM = "from pipeline.airflow_dag import *  # noqa: F401,F403  (the DAGs of SENTIMENT_DATASETS)\n"
# A model that trains in seconds: the point is the orchestration, not accuracy.
SMALL_MODEL = ("training.epochs=1,training.batch_size=32,training.weight_averaging=0,model.embedding_dim=16,"
               "model.rnn_units=16,model.ensemble_size=1,evaluation.min_accuracy=0.0,evaluation.min_auc=0,"
               "pretrained_vocabulary=0,model.pretrained_embeddings=")
PG_USER = os.environ.get("PGUSER_NAME") or os.popen("id -un").read().strip() or "root"
TERMINAL = {"success", "failed"}


class Interrupted(Exception):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def utc(value: datetime.datetime | None) -> str | None:
    return value.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds") if value else None


# --- data -------------------------------------------------------------------------------------------------

def source_data_dir() -> Path:
    explicit = os.environ.get(data_sources.DATA_DIR_ENV)
    return Path(explicit) if explicit else data_sources.SHARED_DATA_DIR


def head_gz(source: Path, target: Path, rows: int) -> int:
    """The header and first `rows` rows of a gzip CSV (one record per line, pre-shuffled)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with gzip.open(source, "rt", encoding="utf-8") as src, gzip.open(target, "wt", encoding="utf-8") as dst:
        for number, line in enumerate(src):
            if number > rows:
                break
            dst.write(line)
            written = number
    return written


def small_data(data_dir: Path, datasets: list[str], rows: int) -> dict:
    source = source_data_dir()
    files = {"polarity": ["polarity/rt-polarity.csv.gz"], "imdb": ["imdb/train.csv.gz", "imdb/test.csv.gz"]}
    made = {}
    for name in datasets:
        for relative in files[name]:
            made[relative] = head_gz(source / relative, data_dir / relative, rows)
    return made


# --- processes --------------------------------------------------------------------------------------------

def run(cmd: list[str], env: dict, timeout: float = 900, check: bool = True, cwd: Path | None = None
        ) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout,
                            cwd=str(cwd or ROOT))
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def proc_environ_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


class Services:
    """The processes this run started; stop() ends each of them, by pid or process group."""

    def __init__(self, work: Path):
        self.work = work
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.stoppers: list[list[str]] = []

    def start(self, name: str, cmd: list[str], env: dict, cwd: Path, log_file: Path) -> subprocess.Popen:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab")
        proc = subprocess.Popen([str(c) for c in cmd], env=env, cwd=str(cwd), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc))
        log(f"started {name} (pid {proc.pid}), log {log_file}")
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                log(f"stopping {name} (pid {proc.pid})")
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 60
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log(f"{name} ignored SIGTERM: SIGKILL")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=30)
        # Task processes start their own process groups: whatever still carries this run's
        # AIRFLOW_HOME in its environment was started by this run.
        needle = f"AIRFLOW_HOME={self.work}".encode()
        for pid in all_pids():
            if pid != os.getpid() and proc_environ_has(pid, needle):
                log(f"left-over process {pid} ({proc_cmdline(pid)[:80]}): SIGKILL")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for cmd in reversed(self.stoppers):
            subprocess.run(cmd, cwd=str(ROOT), capture_output=True, timeout=120)


# --- Airflow's database ------------------------------------------------------------------------------------

class AirflowDB:
    def __init__(self, port: int):
        import psycopg2

        self.connection = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="airflow")
        self.connection.autocommit = True

    def rows(self, sql: str, *params) -> list[dict]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]


def task_graph(db: AirflowDB, dag_id: str) -> dict[str, set[str]]:
    """Each task's upstream tasks, from the serialized DAG the scheduler stored."""
    [row] = db.rows("SELECT data FROM serialized_dag WHERE dag_id = %s", dag_id)
    data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
    upstream: dict[str, set[str]] = {t["task_id"]: set() for t in data["dag"]["tasks"]}
    for task in data["dag"]["tasks"]:
        for down in task.get("downstream_task_ids", []):
            upstream[down].add(task["task_id"])
    return upstream


def ancestors(graph: dict[str, set[str]], task: str) -> set[str]:
    seen, stack = set(), list(graph[task])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(graph[node])
    return seen


def covered_by_two(intervals: list[tuple[float, float]]) -> float:
    """Seconds during which two or more of the intervals hold."""
    events = sorted([(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals], key=lambda x: (x[0], x[1]))
    total, active, last = 0.0, 0, None
    for at, step in events:
        if active >= 2 and last is not None:
            total += at - last
        active += step
        last = at
    return total


def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def intersection_seconds(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in union(a) for s2, e2 in union(b))


def overlap_report(tasks: list[dict], graph: dict[str, set[str]] | None) -> dict:
    spans = [(t["task_id"], t["_start"], t["_end"]) for t in tasks if t["_start"] and t["_end"]]
    pairs = []
    for i, (a, s1, e1) in enumerate(spans):
        for b, s2, e2 in spans[i + 1:]:
            seconds = min(e1, e2) - max(s1, s2)
            if seconds > 0.05:
                independent = None if graph is None else (a not in ancestors(graph, b) and b not in ancestors(graph, a))
                pairs.append({"tasks": [a, b], "seconds": round(seconds, 2), "independent": independent})
    return {"seconds_two_or_more_running": round(covered_by_two([(s, e) for _, s, e in spans]), 2),
            "pairs": sorted(pairs, key=lambda p: -p["seconds"])}


# --- the scenario ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", choices=("local", "celery"), default="local")
    parser.add_argument("--dags", default="polarity,imdb", help="datasets, one DAG each: polarity,imdb")
    parser.add_argument("--rows", type=int, default=300, help="first N rows of polarity; of IMDB train and test each")
    parser.add_argument("--scenario", help="name in the JSON file (default: local, celery, or retry with --kill-task)")
    parser.add_argument("--out", help="JSON file (default bench/results/airflow_<scenario>.json)")
    parser.add_argument("--work-dir", help="default /tmp/airflow-deployment/<scenario>")
    parser.add_argument("--kill-task", help="SIGKILL this task's process (of the first DAG) once it has started")
    parser.add_argument("--kill-after", type=float, default=20.0, help="seconds the task runs before the kill")
    parser.add_argument("--retries", type=int, default=1, help="SENTIMENT_AIRFLOW_RETRIES")
    parser.add_argument("--retry-delay", type=float, default=10.0, help="SENTIMENT_AIRFLOW_RETRY_DELAY (seconds)")
    parser.add_argument("--zombie-interval", type=float, default=120.0,
                        help="AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL (seconds; Airflow's default is 10)")
    parser.add_argument("--parallelism", type=int, default=4, help="AIRFLOW__CORE__PARALLELISM")
    parser.add_argument("--worker-concurrency", default="2,1", help="celery: one number per worker")
    parser.add_argument("--set", default="", help="more SENTIMENT_SET overrides, comma-separated")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the runs may take")
    args = parser.parse_args(argv)

    datasets = [d.strip() for d in args.dags.split(",") if d.strip()]
    dag_ids = [f"sentiment-{d}" for d in datasets]
    scenario = args.scenario or ("retry" if args.kill_task else args.executor)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"airflow_{scenario}.json"
    work = Path(args.work_dir or f"/tmp/airflow-deployment/{scenario}").resolve()
    if ROOT in work.parents or work == ROOT:
        parser.error("--work-dir must be outside the repository")

    def interrupted(signum, frame):
        raise Interrupted(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    if (work / "postgres" / "data").exists():
        subprocess.run(["bash", "scripts/stop_postgres.sh", str(work / "postgres")], cwd=ROOT, capture_output=True)
    if (work / "redis").exists():
        subprocess.run(["bash", "scripts/stop_redis.sh", str(work / "redis")], cwd=ROOT, capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    services = Services(work)
    report: dict = {"scenario": scenario, "executor": args.executor, "dags": dag_ids, "rows": args.rows,
                    "machine": {"cores": os.cpu_count(), "loadavg_start": os.getloadavg()}, "problems": []}
    t0 = time.time()
    try:
        return scenario_run(args, report, services, work, datasets, dag_ids, out, t0)
    except (Interrupted, KeyboardInterrupt) as error:
        log(f"interrupted ({error}): stopping everything")
        return 130
    finally:
        services.stop()
        log(f"stopped; logs stay in {work}")


def scenario_run(args, report, services: Services, work: Path, datasets, dag_ids, out: Path, t0: float) -> int:
    import airflow

    report["versions"] = {"airflow": airflow.__version__, "python": sys.version.split()[0]}
    # Data: a small slice of each dataset.
    report["data_rows"] = small_data(work / "data", datasets, args.rows)

    # PostgreSQL: Airflow's database and ML Metadata's, on one server.
    pg_dir, pg_port = work / "postgres", free_port()
    server_uri = run(["bash", "scripts/start_postgres.sh", pg_dir, pg_port], dict(os.environ)).stdout.strip()
    services.stoppers.append(["bash", "scripts/stop_postgres.sh", str(pg_dir)])
    pg_port = int((pg_dir / "data" / "postmaster.pid").read_text().splitlines()[3])
    passfile = pg_dir / "pgpass"
    pg_env = {**os.environ, "PGPASSFILE": str(passfile)}
    os.environ["PGPASSFILE"] = str(passfile)
    run(["psql", "-h", "127.0.0.1", "-p", pg_port, "-U", PG_USER, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc",
         "CREATE DATABASE airflow"], pg_env)
    metadata_uri = f"postgresql://{PG_USER}@127.0.0.1:{pg_port}/mlmd"
    from pipeline import metadata_store

    metadata_store.connect(metadata_uri)  # creates database mlmd and its schema, once
    server_version = run(["psql", "-h", "127.0.0.1", "-p", pg_port, "-U", PG_USER, "-d", "airflow", "-tAc",
                          "SHOW server_version"], pg_env).stdout.strip()
    report["versions"]["postgresql"] = server_version
    sql_conn = f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{pg_port}/airflow"
    report["postgresql"] = {"server": server_uri, "airflow_db": sql_conn, "metadata_uri": metadata_uri,
                            "password": "PGPASSFILE (never in a URI)"}

    home = work / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "sentiment_dags.py").write_text(DAG_SHIM)
    outputs = work / "outputs"  # the pipeline root every worker sees
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if args.executor == "celery" else "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_conn,
        "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Importing TensorFlow and TFX takes tens of seconds on two busy cores.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
        "AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT": "900",
        # The DAG file does not change during a run: parse it once, not every 30 s.
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "3600",
        "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
        # A task whose process died (SIGKILL, a lost worker) is a zombie: the scheduler finds it every
        # zombie_detection_interval (10 s) until the DAG processor has run its failure callback, which
        # parses the DAG file first (20-28 s here: TensorFlow). Found twice, it gets two callbacks: the
        # first sets up_for_retry, the second, after the retry is queued, sets failed (apache/airflow
        # #31212, #42553, still in 2.10). Looking less often than the file takes to parse avoids it.
        "AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL": str(args.zombie_interval),
        "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "PGPASSFILE": str(passfile),
        "SENTIMENT_DATASETS": ",".join(datasets),
        "SENTIMENT_DATA_DIR": str(work / "data"),
        "SENTIMENT_OUTPUT_DIR": str(outputs),
        "SENTIMENT_METADATA_URI": metadata_uri,
        "SENTIMENT_SET": ",".join(filter(None, [SMALL_MODEL, args.set])),
        "SENTIMENT_AIRFLOW_RETRIES": str(args.retries),
        "SENTIMENT_AIRFLOW_RETRY_DELAY": str(args.retry_delay),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("SENTIMENT_INPUT", None)
    env.pop("SENTIMENT_DATASET", None)
    if args.executor == "celery":
        redis_dir, redis_port = work / "redis", free_port()
        broker = run(["bash", "scripts/start_redis.sh", redis_dir, redis_port], dict(os.environ)).stdout.strip()
        services.stoppers.append(["bash", "scripts/stop_redis.sh", str(redis_dir)])
        env["AIRFLOW__CELERY__BROKER_URL"] = broker
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+postgresql://{PG_USER}@127.0.0.1:{pg_port}/airflow"
        report["celery"] = {"broker": broker, "result_backend": env["AIRFLOW__CELERY__RESULT_BACKEND"],
                            "redis": run(["redis-server", "--version"], env).stdout.split()[2]}
    report["settings"] = {k: v for k, v in env.items() if k.startswith(("AIRFLOW__", "SENTIMENT_"))
                          and "SECRET" not in k}

    log("airflow db init")
    started = time.time()
    run([AIRFLOW, "db", "init"], env, timeout=900)
    report["setup_s"] = {"db_init": round(time.time() - started, 1)}

    workers = []
    if args.executor == "celery":
        concurrency = [int(c) for c in args.worker_concurrency.split(",")]
        for number, slots in enumerate(concurrency, start=1):
            node = f"airflow-worker{number}"
            whome = work / f"worker{number}"
            (whome / "dags").mkdir(parents=True)
            (whome / "dags" / "sentiment_dags.py").write_text(DAG_SHIM)
            wenv = {**env,
                    "AIRFLOW_HOME": str(whome),
                    "AIRFLOW__CORE__DAGS_FOLDER": str(whome / "dags"),
                    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(whome / "logs"),
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(slots),
                    # The machine's own name, as Airflow records it for each task instance.
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "socket.gethostname"}
            # Its own UTS namespace: a hostname of its own, as a second machine would have.
            cmd = ["unshare", "--uts", "sh", "-c", f'hostname {node} && exec "$0" "$@"', AIRFLOW, "celery", "worker",
                   "-H", f"worker{number}@%h", "--pid", whome / "worker.pid", "--without-mingle", "--without-gossip"]
            services.start(f"celery worker{number}", cmd, wenv, whome, whome / "worker.log")
            workers.append({"name": f"worker{number}@{node}", "hostname": node, "concurrency": slots,
                            "airflow_home": str(whome), "log": str(whome / "worker.log")})
    report["workers"] = workers

    services.start("scheduler", [AIRFLOW, "scheduler"], env, home, home / "scheduler.log")
    db = AirflowDB(pg_port)
    log(f"waiting for the scheduler to parse {', '.join(dag_ids)}")
    deadline = time.time() + 900
    while True:
        found = {r["dag_id"] for r in db.rows("SELECT dag_id FROM serialized_dag")}
        errors = db.rows("SELECT filename, stacktrace FROM import_error")
        if errors:
            raise RuntimeError(f"the DAG file does not import: {errors[0]['stacktrace'][-3000:]}")
        if set(dag_ids) <= found:
            break
        if time.time() > deadline:
            raise RuntimeError(f"the scheduler parsed {sorted(found)} in 900 s, not {dag_ids}")
        for name, proc in services.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}")
        time.sleep(3)
    report["setup_s"]["until_dags_parsed"] = round(time.time() - t0, 1)
    if workers:
        wait_for_workers(work, workers)

    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%S")
    run_ids = {dag_id: f"deploy_{report['scenario']}_{stamp}" for dag_id in dag_ids}
    log(f"triggering {', '.join(dag_ids)} at once")
    triggered_at = time.time()
    triggers = [subprocess.Popen([str(AIRFLOW), "dags", "trigger", dag_id, "-r", run_ids[dag_id]], env=env,
                                 cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for dag_id in dag_ids]
    for proc in triggers:
        stdout, stderr = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow dags trigger failed: {stderr[-3000:]}")

    kill = None
    if args.kill_task:
        kill = kill_when_running(db, dag_ids[0], run_ids[dag_ids[0]], args.kill_task, args.kill_after, args.timeout)
        report["kill"] = kill

    states = wait_for_runs(db, run_ids, triggered_at + args.timeout, services)
    report["wall_s"] = {"trigger_to_last_run_end": round(time.time() - triggered_at, 1)}
    report["runs"] = collect(db, run_ids, states)
    report["task_failures"] = failures(db, run_ids)
    report["cross_dag"] = cross_dag(report["runs"])
    report["mlmd_executions"] = mlmd_executions(metadata_uri, run_ids)
    if workers:
        report["spread"] = spread(report["runs"], workers)
    if kill:
        report["retry_check"] = retry_check(report, dag_ids[0], args.kill_task, home)
    report["wall_s"]["total_scenario"] = round(time.time() - t0, 1)
    report["machine"]["loadavg_end"] = os.getloadavg()
    ok = all(run["state"] == "success" for run in report["runs"]) and (
        not kill or report["retry_check"]["ok"]) and (not workers or report["spread"]["both_workers_used"])
    report["ok"] = ok
    for run_report in report["runs"]:
        for task in run_report["tasks"]:
            task.pop("_start", None)
            task.pop("_end", None)
    print_table(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"wrote {out} (ok={ok})")
    return 0 if ok else 1


def wait_for_workers(work: Path, workers: list[dict]) -> None:
    """Until each Celery worker logged `ready` (it has connected to the broker)."""
    deadline = time.time() + 600
    for worker in workers:
        while b"ready." not in Path(worker["log"]).read_bytes():
            if time.time() > deadline:
                raise RuntimeError(f"{worker['name']} not ready after 600 s: see {worker['log']}")
            time.sleep(2)
        log(f"{worker['name']} ready")


def find_task_process(dag_id: str, task_id: str, run_id: str, recorded_pid: int | None) -> tuple[int, str] | None:
    """The process running the task: Airflow forks it and titles it `airflow task runner: DAG TASK RUN JOB`,
    or (with execute_tasks_new_python_interpreter) runs `airflow tasks run DAG TASK RUN ... --raw`."""
    for pid in all_pids():
        cmd = proc_cmdline(pid)
        words = cmd.split()
        forked = cmd.startswith(f"airflow task runner: {dag_id} {task_id} {run_id}")
        raw = "tasks" in words and "run" in words and "--raw" in words and dag_id in words and task_id in words
        if forked or raw:
            return pid, cmd
    if recorded_pid and proc_cmdline(recorded_pid):
        return recorded_pid, proc_cmdline(recorded_pid)
    return None


def kill_when_running(db: AirflowDB, dag_id: str, run_id: str, task_id: str, after: float, timeout: float) -> dict:
    log(f"waiting for {dag_id}.{task_id} to run {after:.0f} s, then SIGKILL")
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = db.rows("SELECT state, pid, start_date, try_number, hostname FROM task_instance "
                       "WHERE dag_id=%s AND run_id=%s AND task_id=%s", dag_id, run_id, task_id)
        if rows and rows[0]["state"] in ("success", "failed", "upstream_failed"):
            raise RuntimeError(f"{task_id} ended ({rows[0]['state']}) before it could be killed")
        if rows and rows[0]["state"] == "running" and rows[0]["start_date"]:
            ran = (datetime.datetime.now(datetime.timezone.utc) - rows[0]["start_date"]).total_seconds()
            if ran >= after:
                found = find_task_process(dag_id, task_id, run_id, rows[0]["pid"])
                if found:
                    pid, cmd = found
                    os.kill(pid, signal.SIGKILL)
                    log(f"SIGKILLed {task_id}: pid {pid} ({cmd[:100]}) after {ran:.1f} s")
                    return {"dag_id": dag_id, "task_id": task_id, "pid": pid, "cmdline": cmd,
                            "recorded_pid": rows[0]["pid"], "pid_matches_task_instance": pid == rows[0]["pid"],
                            "try_number_when_killed": rows[0]["try_number"], "hostname": rows[0]["hostname"],
                            "seconds_after_task_start": round(ran, 1),
                            "killed_at": utc(datetime.datetime.now(datetime.timezone.utc))}
        time.sleep(1)
    raise RuntimeError(f"{task_id} never ran for {after} s")


def wait_for_runs(db: AirflowDB, run_ids: dict[str, str], deadline: float, services: Services) -> dict[str, str]:
    last_print = 0.0
    while True:
        states = {}
        for dag_id, run_id in run_ids.items():
            rows = db.rows("SELECT state FROM dag_run WHERE dag_id=%s AND run_id=%s", dag_id, run_id)
            states[dag_id] = rows[0]["state"] if rows else "missing"
        if all(state in TERMINAL for state in states.values()):
            log(f"runs ended: {states}")
            return states
        if time.time() - last_print > 30:
            counts = db.rows("SELECT dag_id, state, count(*) AS n FROM task_instance WHERE run_id = ANY(%s) "
                             "GROUP BY dag_id, state ORDER BY dag_id, state", list(run_ids.values()))
            log("; ".join(f"{c['dag_id']} {c['state']}={c['n']}" for c in counts))
            last_print = time.time()
        for name, proc in services.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode} during the runs")
        if time.time() > deadline:
            raise RuntimeError(f"runs not finished in time: {states}")
        time.sleep(5)


def collect(db: AirflowDB, run_ids: dict[str, str], states: dict[str, str]) -> list[dict]:
    runs = []
    for dag_id, run_id in run_ids.items():
        [dag_run] = db.rows("SELECT state, start_date, end_date, queued_at FROM dag_run WHERE dag_id=%s AND run_id=%s",
                            dag_id, run_id)
        origin = dag_run["start_date"]
        rows = db.rows("SELECT task_id, state, try_number, max_tries, start_date, end_date, duration, hostname, "
                       "pid, queued_dttm, queue, operator FROM task_instance WHERE dag_id=%s AND run_id=%s "
                       "ORDER BY start_date NULLS LAST, task_id", dag_id, run_id)
        tasks = []
        for row in rows:
            start, end = row["start_date"], row["end_date"]
            tasks.append({
                "task_id": row["task_id"], "state": row["state"], "try_number": row["try_number"],
                "max_tries": row["max_tries"], "start": utc(start), "end": utc(end),
                "duration_s": round(row["duration"], 2) if row["duration"] is not None else None,
                "start_offset_s": round((start - origin).total_seconds(), 2) if start and origin else None,
                "hostname": row["hostname"], "pid": row["pid"],
                "queued_s": round((start - row["queued_dttm"]).total_seconds(), 2)
                if start and row["queued_dttm"] else None,
                "_start": start.timestamp() if start else None, "_end": end.timestamp() if end else None})
        graph = _graphs[dag_id] = task_graph(db, dag_id)
        runs.append({
            "dag_id": dag_id, "run_id": run_id, "state": dag_run["state"], "start": utc(origin),
            "end": utc(dag_run["end_date"]),
            "duration_s": round((dag_run["end_date"] - origin).total_seconds(), 1) if dag_run["end_date"] else None,
            "tasks": tasks, "overlap": overlap_report(tasks, graph),
            "task_seconds_sum": round(sum(t["duration_s"] or 0 for t in tasks), 1)})
    return runs


def failures(db: AirflowDB, run_ids: dict[str, str]) -> list[dict]:
    rows = db.rows("SELECT dag_id, task_id, start_date, end_date, duration FROM task_fail WHERE run_id = ANY(%s) "
                   "ORDER BY start_date", list(run_ids.values()))
    return [{"dag_id": r["dag_id"], "task_id": r["task_id"], "start": utc(r["start_date"]), "end": utc(r["end_date"]),
             "duration_s": r["duration"]} for r in rows]


def cross_dag(runs: list[dict]) -> dict:
    if len(runs) < 2:
        return {}
    per_dag = [[(t["_start"], t["_end"]) for t in run["tasks"] if t["_start"] and t["_end"]] for run in runs]
    both = intersection_seconds(per_dag[0], per_dag[1])
    everything = [span for spans in per_dag for span in spans]
    return {"seconds_both_dags_running": round(both, 1),
            "seconds_two_or_more_tasks_running": round(covered_by_two(everything), 1),
            "dags": [run["dag_id"] for run in runs[:2]]}


def spread(runs: list[dict], workers: list[dict]) -> dict:
    by_run = {}
    names = {w["hostname"] for w in workers}
    for run_report in runs:
        hosts: dict[str, list[str]] = {}
        for task in run_report["tasks"]:
            hosts.setdefault(task["hostname"] or "?", []).append(task["task_id"])
        by_run[run_report["dag_id"]] = hosts
    used = all(names <= set(hosts) for hosts in by_run.values())
    return {"tasks_by_hostname": by_run, "both_workers_used": used}


def mlmd_executions(metadata_uri: str, run_ids: dict[str, str]) -> dict:
    """Executions ML Metadata recorded for these runs, per pipeline and component (and state)."""
    from pipeline import metadata_store

    store = metadata_store.connect(metadata_uri)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for execution in store.get_executions():
        props = {k: v.string_value for k, v in execution.properties.items()}
        pipeline, run_id = props.get("pipeline_name", "?"), props.get("run_id", "?")
        # pipeline.airflow_dag.tfx_run_id: TFX records the DAG run's id qualified by the DAG id.
        if run_id not in (run_ids.get(pipeline), f"{pipeline}:{run_ids.get(pipeline)}"):
            continue
        component = props.get("component_id", "?")
        state = props.get("state") or str(execution.last_known_state)
        counts.setdefault(pipeline, {}).setdefault(component, {}).setdefault(state, 0)
        counts[pipeline][component][state] += 1
    return {"store": metadata_uri, "executions": counts,
            "contexts": len(store.get_contexts()), "artifacts": len(store.get_artifacts())}


def retry_check(report: dict, dag_id: str, task_id: str, home: Path) -> dict:
    [run_report] = [r for r in report["runs"] if r["dag_id"] == dag_id]
    tasks = {t["task_id"]: t for t in run_report["tasks"]}
    killed = tasks[task_id]
    upstream_ids = ancestors(task_graph_from_report(run_report), task_id)
    failed_tries = [f for f in report["task_failures"] if f["dag_id"] == dag_id and f["task_id"] == task_id]
    attempt_logs = sorted(p.name for p in (home / "logs").glob(f"dag_id={dag_id}/run_id=*/task_id={task_id}/*.log"))
    exit_lines, before_kill = attempt1_end(home, dag_id, task_id)
    others_once = {t: tasks[t]["try_number"] for t in tasks if t != task_id}
    ok = (run_report["state"] == "success" and killed["state"] == "success" and killed["try_number"] == 2
          and all(n == 1 for n in others_once.values()))
    return {"ok": ok, "task": task_id, "final_state": killed["state"], "final_try_number": killed["try_number"],
            "failed_tries_recorded": failed_tries, "attempt_logs": attempt_logs, "attempt1_exit": exit_lines,
            "attempt1_last_lines_before_kill": before_kill,
            "upstream_tasks": sorted(upstream_ids),
            "upstream_try_numbers": {t: tasks[t]["try_number"] for t in sorted(upstream_ids)},
            "other_tasks_try_numbers": others_once, "mlmd_executions_of_task":
                report["mlmd_executions"]["executions"].get(dag_id, {}).get(task_id)}


def attempt1_end(home: Path, dag_id: str, task_id: str) -> tuple[list[str], list[str]]:
    """The first try's exit lines, and what the task logged last before it was killed."""
    exit_lines, before = [], []
    for path in (home / "logs").glob(f"dag_id={dag_id}/run_id=*/task_id={task_id}/attempt=1.log"):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                 if line.strip() and "warn" not in line.lower()]
        ends = [i for i, line in enumerate(lines) if "return code" in line]
        exit_lines = [lines[i][-160:] for i in ends]
        before = [line[-160:] for line in lines[max(0, ends[0] - 3):ends[0]]] if ends else []
    return exit_lines, before


def task_graph_from_report(run_report: dict) -> dict[str, set[str]]:
    return _graphs[run_report["dag_id"]]


_graphs: dict[str, dict[str, set[str]]] = {}  # each DAG's upstream tasks, filled by collect()


def print_table(report: dict) -> None:
    print()
    print(f"{'dag':20} {'task':36} {'state':8} {'try':>3} {'start+s':>8} {'dur s':>7}  hostname")
    for run_report in report["runs"]:
        for task in run_report["tasks"]:
            print(f"{run_report['dag_id']:20} {task['task_id']:36} {task['state'] or '-':8} {task['try_number']:>3} "
                  f"{task['start_offset_s'] if task['start_offset_s'] is not None else '-':>8} "
                  f"{task['duration_s'] if task['duration_s'] is not None else '-':>7}  {task['hostname']}")
        print(f"{run_report['dag_id']}: {run_report['state']} in {run_report['duration_s']} s; two or more tasks "
              f"at once for {run_report['overlap']['seconds_two_or_more_running']} s: "
              + ", ".join(f"{'/'.join(p['tasks'])} {p['seconds']} s" for p in run_report["overlap"]["pairs"][:4]))
    if report.get("cross_dag"):
        print(f"both DAGs running at once: {report['cross_dag']['seconds_both_dags_running']} s")
    if report.get("spread"):
        for dag_id, hosts in report["spread"]["tasks_by_hostname"].items():
            print(f"{dag_id}: " + "; ".join(f"{h}: {len(t)} tasks" for h, t in sorted(hosts.items())))
    if report.get("retry_check"):
        check = report["retry_check"]
        print(f"retry: {check['task']} {check['final_state']} at try {check['final_try_number']}; upstream tries "
              f"{check['upstream_try_numbers']}; ok={check['ok']}")
    print(f"wall: {report['wall_s']}")


if __name__ == "__main__":
    sys.exit(main())
