"""`make fuzz`: run every atheris target in its own process and print the total input count.

    .venv/bin/python fuzz/run.py --total-runs 1000000

The runs are split evenly across the targets (libFuzzer's -runs=N each), starting from the
seed corpus in fuzz/corpus/ (read-only; new inputs go to fuzz/corpus-out/, not tracked).
A target that crashes (any exception other than ProtocolError, or peek disagreeing with the
full parse) makes this exit non-zero with libFuzzer's report and the reproducer path.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import re
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
TARGETS = {
    "parse": HERE / "fuzz_parse.py",
    "peek": HERE / "fuzz_peek.py",
    "rewrite": HERE / "fuzz_rewrite.py",
}
_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")


def run_target(name: str, runs: int, max_len: int) -> int:
    out_dir = HERE / "corpus-out" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(TARGETS[name]),
        f"-runs={runs}",
        f"-max_len={max_len}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={out_dir}/",
        str(out_dir),
        str(HERE / "corpus"),
    ]
    completed = subprocess.run(command, cwd=HERE, capture_output=True, check=False)
    done = _DONE.search(completed.stderr)
    if completed.returncode != 0 or done is None:
        sys.stderr.write(completed.stderr.decode(errors="replace")[-6000:])
        raise SystemExit(f"fuzz target {name!r} failed (exit {completed.returncode})")
    count, seconds = int(done.group(1)), int(done.group(2))
    print(f"{name:8s} {count:>9,d} inputs in {seconds:4d} s, no crash", flush=True)
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-runs", type=int, default=1_000_000)
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    names = [name for name in args.targets.split(",") if name]
    per_target = math.ceil(args.total_runs / len(names))
    total = sum(run_target(name, per_target, args.max_len) for name in names)
    print(f"total: {total:,d} inputs across {len(names)} atheris targets, no crash")
    return 0 if total >= args.total_runs else 1


if __name__ == "__main__":
    sys.exit(main())
