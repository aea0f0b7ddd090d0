"""Start-up time: ``import ggml_py`` and the ``ggml-py`` command's quickest calls beside an empty
Python, each a fresh process, medians of several rounds taken in turn (this VM's speed drifts
within minutes, so every command sees the same drift).

    python benchmarks/startup_time.py [--rounds 15]

Uses the interpreter running it and the ``ggml-py`` script installed beside it (else
``python -m ggml_py``). The "over python" column is what ggml-py adds to a bare interpreter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def commands() -> list[tuple[str, list[str]]]:
    python = sys.executable
    script = shutil.which("ggml-py", path=os.path.dirname(python))
    cli = [script] if script else [python, "-m", "ggml_py"]
    shown = "ggml-py" if script else "python -m ggml_py"
    return [
        ("python -c pass", [python, "-c", "pass"]),
        ("python -c 'import numpy'", [python, "-c", "import numpy"]),
        ("python -c 'import ml_dtypes'", [python, "-c", "import ml_dtypes"]),
        ("python -c 'import ggml_py'", [python, "-c", "import ggml_py"]),
        (f"{shown} --version", [*cli, "--version"]),
        (f"{shown} --help", [*cli, "--help"]),
    ]


def elapsed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    table = commands()
    for _, argv in table:  # warm the page cache and the bytecode caches
        elapsed(argv)
    times: dict[str, list[float]] = {name: [] for name, _ in table}
    for _ in range(args.rounds):
        for name, argv in table:
            times[name].append(elapsed(argv))
    baseline = statistics.median(times["python -c pass"])
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds, medians")
    width = max(len(name) for name in times)
    print(f"{'command':<{width}}  {'median ms':>9}  {'min ms':>7}  {'over python':>11}")
    for name, runs in times.items():
        median = statistics.median(runs)
        extra = (median - baseline) * 1000
        print(f"{name:<{width}}  {median * 1000:9.1f}  {min(runs) * 1000:7.1f}  {extra:+11.1f}")


if __name__ == "__main__":
    main()
