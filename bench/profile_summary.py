#!/usr/bin/env python3
"""Summarise py-spy raw stacks (``bench/run.py --profile``): where a server node spends its time.

    python bench/profile_summary.py bench/results/logs/crossws-W1-0/profile-n0.txt [--top 25]

Prints the functions with the highest *self* share (the frame on top of the stack) and the
highest *inclusive* share (anywhere on the stack), as percentages of all samples.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from typing import Counter, List, Optional

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def summarise(path: str, top: int) -> str:
    self_counts: Counter[str] = collections.Counter()
    incl_counts: Counter[str] = collections.Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = _LINE.match(line.rstrip("\n"))
            if not match:
                continue
            count = int(match.group("count"))
            frames = [f for f in match.group("stack").split(";") if f]
            if not frames:
                continue
            total += count
            self_counts[frames[-1]] += count
            for frame in set(frames):
                incl_counts[frame] += count
    if not total:
        return "%s: no samples" % path
    out: List[str] = ["%s: %d samples" % (path, total), "", "self %   function (file:line)"]
    out += ["%6.1f   %s" % (100.0 * c / total, f) for f, c in self_counts.most_common(top)]
    out += ["", "incl %   function (file:line)"]
    out += ["%6.1f   %s" % (100.0 * c / total, f) for f, c in incl_counts.most_common(top)]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.paths:
        print(summarise(path, args.top))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
