"""`make bench`: every benchmark in turn, each writing its rows of bench/RESULTS.md.

Each script measures its own baseline in the same run and rewrites only its rows, so a
failure of one leaves the others' figures in place. `--quick` passes small sizes to the
scripts that have them (a smoke run, not figures to keep).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# SPEC order of the RESULTS.md table; einvoicing.py writes the einvoice_validation row.
SCRIPTS = ["create_finalize", "webhook_ingest", "reconcile", "export", "deliveries", "einvoicing"]
QUICK_ARGS = {
    "create_finalize": ["--quick"],
    "webhook_ingest": ["--quick"],
    "reconcile": ["--sizes", "10000"],
    "export": ["--sizes", "10000"],
    "deliveries": ["--quick"],
    "einvoicing": ["--quick"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--only", help="comma-separated bench names")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else SCRIPTS
    outcomes: list[tuple[str, int, float]] = []
    for name in names:
        script = BENCH_DIR / f"{name}.py"
        if not script.exists():
            print(f"[run_all] {name}: no bench/{name}.py", flush=True)
            outcomes.append((name, 2, 0.0))
            continue
        command = [sys.executable, str(script), *(QUICK_ARGS.get(name, []) if args.quick else [])]
        print(f"[run_all] {' '.join(command)}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command)
        outcomes.append((name, code, time.monotonic() - started))
    print("\n[run_all] bench           exit   minutes")
    for name, code, seconds in outcomes:
        print(f"[run_all] {name:<15} {code:>4}   {seconds / 60:7.1f}")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
