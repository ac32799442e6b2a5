"""Print the share of mutants killed by the last ``make mutate`` (mutmut's results in mutants/).

Counts only the mutants that run (``make mutate`` picks functions; the other mutants of a file
stay "not checked"). A timeout counts as killed, as in mutmut's own score. Survivors are listed
by function: ``.venv/bin/mutmut show <name>`` prints one.

Usage (from the repo root, after ``make mutate``)::

    .venv/bin/python -m bench.mutation_score
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

#: mutmut 3's exit codes, by what they mean for the score.
FAILED = {1, 3}
TIMED_OUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def main(folder: Path = Path("mutants")) -> int:
    codes: dict[str, int] = {}
    for meta in sorted(folder.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code is not None:
                codes[name] = code
    if not codes:
        print(f"no mutmut results under {folder}/: run `make mutate` first", file=sys.stderr)
        return 1
    failed = [n for n, c in codes.items() if c in FAILED]
    timed_out = [n for n, c in codes.items() if c in TIMED_OUT]
    survived = [n for n, c in codes.items() if c in SURVIVED]
    untested = [n for n, c in codes.items() if c in NO_TESTS]
    killed = failed + timed_out
    other = len(codes) - len(killed) - len(survived) - len(untested)
    tested = len(killed) + len(survived)
    print(f"mutants run: {len(codes)}  killed: {len(killed)} (a test failed: {len(failed)}, "
          f"timed out: {len(timed_out)})  survived: {len(survived)}  "
          f"no test reaches them: {len(untested)}  other (suspicious, segfault): {other}")
    print(f"killed: {len(killed) / max(tested, 1):.1%} of the mutants the tests reach, "
          f"{len(killed) / len(codes):.1%} of all")
    by_function = Counter(n.partition("__mutmut_")[0] for n in survived + untested)
    if by_function:
        print("not killed, by function:")
        for function, count in by_function.most_common():
            print(f"  {count:4d}  {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
