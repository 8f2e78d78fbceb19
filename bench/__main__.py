"""`make bench`: run every bench/bench_*.py in turn; each prints its own ratios."""

from __future__ import annotations

import pathlib
import runpy
import sys


def main() -> int:
    here = pathlib.Path(__file__).parent
    selected = sys.argv[1:]
    for script in sorted(here.glob("bench_*.py")):
        if selected and script.stem not in selected:
            continue
        print(f"\n=== {script.stem} ===", flush=True)
        # Each script parses its own options: hand it a clean argv, not the selection.
        sys.argv = [str(script)]
        runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
