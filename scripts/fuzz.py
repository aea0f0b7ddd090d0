"""Fuzz ggml-py's readers for as long as you like: the test suite's campaigns, unbounded.

    python scripts/fuzz.py                           # every campaign, 60 s each, hypothesis
    python scripts/fuzz.py --seconds 600 model zip   # two campaigns, 10 minutes each
    python scripts/fuzz.py --engine atheris pickle   # coverage-guided: pip install -e '.[fuzz]'

Campaigns (tests/fuzz/campaigns.py): model (ggml and GGUF files), zip (torch zip structures),
checkpoint (torch and safetensors files), pickle (the restricted pickle machine), safetensors
(forged headers), tokenizer (Hugging Face folders), text (encode), ids (decode).

The hypothesis engine draws from the same strategies as tests/test_robustness_fuzz.py, in rounds
of fresh random examples until the time is up; on a crash it prints the failing example (shrunk
by hypothesis) and saves its input under ./fuzz-crashes/<campaign>/. The atheris engine runs one
campaign per process (so several campaigns run one after another), starting from the
campaign's seed inputs; arguments it does not know go to libFuzzer (``-jobs=2``,
``-rss_limit_mb=4096``), and libFuzzer writes a crashing input to ``crash-*`` in the current
folder. Either way, a crasher goes into
``tests/fixtures/crashers/<campaign>/`` with a line in ``crashers.json`` once it is fixed, and
the test suite replays it from then on. The exit status is 1 when any campaign crashed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the campaigns live beside the tests that run them

ROUND_EXAMPLES = 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaigns", nargs="*", help="campaigns to run (default: all)")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="time per campaign (default 60)"
    )
    parser.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    args, engine_arguments = parser.parse_known_args()
    if engine_arguments and args.engine != "atheris":
        parser.error(
            f"unknown arguments {' '.join(engine_arguments)} (only atheris takes libFuzzer's)"
        )
    from fuzz.campaigns import CAMPAIGNS

    names = args.campaigns or sorted(CAMPAIGNS)
    unknown = sorted(set(names) - set(CAMPAIGNS))
    if unknown:
        parser.error(f"unknown campaign {unknown[0]!r}; choose from {', '.join(sorted(CAMPAIGNS))}")
    if args.engine == "atheris":
        return max(_run_atheris_process(name, args.seconds, engine_arguments) for name in names)
    return max(_run_hypothesis(name, args.seconds) for name in names)


def _run_hypothesis(name: str, seconds: float) -> int:
    from fuzz import targets
    from fuzz.campaigns import CAMPAIGNS
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    campaign = CAMPAIGNS[name]
    stop = time.monotonic() + seconds
    rounds = 0
    with tempfile.TemporaryDirectory() as folder:
        while time.monotonic() < stop:

            @settings(
                max_examples=ROUND_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(data=st.data())
            def one_round(data):
                campaign.draw(data, Path(folder))

            try:
                one_round()
            except Exception as error:
                # hypothesis replays the shrunk example last, so the targets' last input is it
                traceback.print_exception(error)
                saved = _save_crasher(name, targets.last_input)
                print(
                    f"{name}: CRASH after {rounds * ROUND_EXAMPLES} examples: {type(error).__name__}: {error}"
                )
                print(
                    f"  input saved as {saved}; move it to tests/fixtures/crashers/{name}/ once it is fixed"
                )
                return 1
            rounds += 1
    print(f"{name}: {rounds * ROUND_EXAMPLES} examples in {seconds:g} s, no crash")
    return 0


def _save_crasher(name: str, crashing_input) -> Path:
    """Write the input (a file, or a folder of tokenizer files) to ./fuzz-crashes/<campaign>/."""
    folder = Path("fuzz-crashes") / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / time.strftime("%Y%m%d-%H%M%S")
    if isinstance(crashing_input, dict):
        path.mkdir()
        for file_name, content in crashing_input.items():
            (path / file_name).write_bytes(content)
    else:
        path.write_bytes(crashing_input or b"")
    return path


def _run_atheris_process(name: str, seconds: float, engine_arguments) -> int:
    # atheris.Fuzz() never returns, so each campaign gets its own process.
    command = [
        sys.executable,
        __file__,
        "--atheris-child",
        name,
        f"-max_total_time={int(seconds)}",
        *engine_arguments,
    ]
    return 0 if subprocess.run(command).returncode == 0 else 1


def _atheris_child(name: str, libfuzzer_arguments) -> None:
    import atheris

    with atheris.instrument_imports():
        from fuzz.campaigns import CAMPAIGNS

        import ggml_py  # noqa: F401  (instrumented for coverage feedback)

    campaign = CAMPAIGNS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    corpus = workdir / "corpus"
    corpus.mkdir()
    for seed_name, content in campaign.seeds().items():
        (corpus / seed_name).write_bytes(content)

    def test_one_input(raw: bytes) -> None:
        campaign.run_bytes(raw, workdir)

    atheris.Setup([sys.argv[0], *libfuzzer_arguments, str(corpus)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--atheris-child":
        _atheris_child(sys.argv[2], sys.argv[3:])
    sys.exit(main())
