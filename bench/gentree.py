#!/usr/bin/env python3
"""Generate a benchmark app tree of incompressible files.

gentree.py OUT_FILES_DIR NFILES TOTAL_MIB [--share-from DIR --share-pct P] [--seed S]

NFILES files spread over 40 directories under share/data, sizes drawn (fixed seed) so
they sum to about TOTAL_MIB, content from os.urandom. With --share-from, P % of the
files (every file whose index is not a multiple of 100/(100-P)) are byte-identical
copies of the same path in DIR (a second app sharing most of its files with the
first); the rest get fresh random content. Prints a summary line.
"""
import argparse
import os
import random
import shutil

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("nfiles", type=int)
ap.add_argument("mib", type=int)
ap.add_argument("--share-from")
ap.add_argument("--share-pct", type=int, default=90)
ap.add_argument("--seed", type=int, default=42)
a = ap.parse_args()

rng = random.Random(a.seed)
# sizes uniform in [1, 99] units, scaled to the total
raw = [1 + rng.random() * 98 for _ in range(a.nfiles)]
scale = a.mib * 1024 * 1024 / sum(raw)
sizes = [max(1, int(r * scale)) for r in raw]

every = None
if a.share_from:
    unique = 100 - a.share_pct
    every = max(1, round(100 / unique)) if unique > 0 else None

shared_bytes = fresh_bytes = 0
for i, size in enumerate(sizes):
    rel = os.path.join("share", "data", "%02d" % (i % 40), "f%05d" % i)
    dst = os.path.join(a.out, rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if a.share_from and not (every and i % every == 0):
        shutil.copyfile(os.path.join(a.share_from, rel), dst)
        shared_bytes += size
        continue
    with open(dst, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    fresh_bytes += size
print("tree %s: %d files, %.1f MiB, %.1f MiB shared, %.1f MiB fresh"
      % (a.out, a.nfiles, sum(sizes) / 2**20, shared_bytes / 2**20, fresh_bytes / 2**20))
