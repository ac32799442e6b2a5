"""Serve MongoDB's wire protocol on loopback for the mongodb-marked tests (nx-27017 on neosqlite).

Runs under the stand-in's own virtualenv (``.venv-mongo``, ``make install-mongo-standin``);
``tests/run_mongo_standin.py`` starts it, runs the tests and stops it. It proves the pymongo
path, not MongoDB's semantics: README, "Storage", says what it does not show.

    .venv-mongo/bin/python tests/mongo_standin.py --port 0 --workdir /tmp/standin
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time


def _exit_with(parent: int) -> None:
    # A driver killed without its cleanup (SIGKILL) must not leave a server behind; once it is
    # gone this process is someone else's child.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def main() -> None:
    """Set neosqlite's pure-Python query path, then run nx-27017 in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True,
                        help="0: a free port, named in the 'Listening on' log line")
    parser.add_argument("--workdir", required=True, help="folder for the pid and log files")
    parser.add_argument("--parent-pid", type=int, help="stop when this process is gone")
    args = parser.parse_args()

    from neosqlite.collection.query_helper import utils
    from nx_27017 import nx_27017

    # neosqlite's SQL path turns datetimes and booleans written by $set into strings and
    # integers; its Python path keeps the types, as MongoDB does.
    utils.set_force_fallback(True)
    # It warns on every query that the switch above sends down the Python path.
    logging.getLogger("neosqlite").setLevel(logging.ERROR)
    if args.parent_pid:
        threading.Thread(target=_exit_with, args=(args.parent_pid,), daemon=True).start()
    sys.argv = ["nx_27017", "--host", "127.0.0.1", "--port", str(args.port), "--db", "memory",
                "--pid-file", os.path.join(args.workdir, "nx_27017.pid"),
                "--log-file", os.path.join(args.workdir, "nx_27017.log")]
    nx_27017.main()


if __name__ == "__main__":
    main()
