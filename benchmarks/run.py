"""Run one benchmark by name, as `corrtree bench NAME` does (the code is in corrtree/bench/).

python benchmarks/run.py gd --out benchmarks/results/gd_m17.json
python benchmarks/run.py --list
"""

import sys

from corrtree.bench import BENCHMARKS, run

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "--list"):
        for name, what in BENCHMARKS.items():
            print(f"{name:14s} {what}")
    else:
        run(sys.argv[1], sys.argv[2:])
