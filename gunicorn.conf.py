"""Gunicorn settings for ``gunicorn -c gunicorn.conf.py wsgi:app``.

Face detection is CPU-bound and dlib uses one core per call, so more workers than cores only
adds memory (each worker holds the dlib models, ~100 MB, and its own embedding index). The
default is one worker per core; WEB_CONCURRENCY overrides it.
"""

import multiprocessing
import os
import typing as t

# One BLAS thread per worker: the workers already use every core, and a 2-thread OpenBLAS
# slows to 4-6x when the other core is busy (bench/search.py: 2 ms -> 8-12 ms a search).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
# A few threads let a worker answer health checks and metadata reads during a long upload.
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = 30
keepalive = 5
max_requests = 1000
max_requests_jitter = 100
# No preload: pymongo clients and SQLite connections must be opened after the fork.
preload_app = False
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# The request id (echoed by the app in X-Request-ID) ends every access-log line.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'


def on_starting(server: object) -> None:
    """Check the configuration once, in the master, as every worker checks it again: a bad
    value stops gunicorn with one line (and status 3) before any worker starts. A worker that
    still cannot build the app (say, .env edited since) exits with 3, gunicorn's "worker
    failed to boot", and the master stops rather than starting it again for ever."""
    import config
    from errors import ConfigError
    from services.context import check_settings

    try:
        check_settings(config.load_config())
    except ConfigError as err:
        config.exit_for(err)


def post_worker_init(worker: t.Any) -> None:
    """Repair what a killed worker left half done before this one serves a request, then
    start its upkeep thread (heartbeat, and the same repair every REPAIR_INTERVAL_SECONDS)."""
    from app import repair_at_start
    from app import start_upkeep

    repair_at_start(worker.wsgi)
    start_upkeep(worker.wsgi)


# The jobs worker the master starts (JOBS_WORKER=embedded) and stops on exit.
_jobs_worker: t.Any = None


def when_ready(server: object) -> None:
    """Start one jobs worker process beside the web workers, unless JOBS_WORKER=external."""
    import config
    from services.supervisor import WorkerProcess

    global _jobs_worker
    if config.load_config()["JOBS_WORKER"] == "embedded":
        _jobs_worker = WorkerProcess()
        _jobs_worker.start()


def on_exit(server: object) -> None:
    """Stop the jobs worker after its current file; its job waits in the queue."""
    if _jobs_worker is not None:
        _jobs_worker.stop()
