"""Time `python -c "import agentlightning"` in fresh interpreters (bytecode already compiled) and print the median.

    python benchmarks/import_time.py [--runs 15]

Also prints `-X importtime`'s five slowest imports, to see what to make lazy.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    command = [sys.executable, "-c", "import agentlightning"]
    subprocess.run(command, check=True)  # compile bytecode once
    baseline, timings = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        timings.append(time.perf_counter() - start)
    print(
        f"python -c 'import agentlightning': median {statistics.median(timings):.3f} s, max {max(timings):.3f} s over {args.runs} runs"
    )
    print(f"(bare interpreter start: median {statistics.median(baseline):.3f} s)")
    report = subprocess.run([*command[:1], "-X", "importtime", *command[1:]], capture_output=True, text=True).stderr
    rows = []
    for line in report.splitlines()[1:]:
        parts = line.split("|")
        if len(parts) == 3:
            rows.append((int(parts[1]), parts[2].rstrip()))
    print("slowest imports (cumulative µs):")
    for micros, name in sorted(rows, reverse=True)[:5]:
        print(f"  {micros:>9} {name}")


if __name__ == "__main__":
    main()
