#!/usr/bin/env python3
"""Sums `nm -S --size-sort --demangle` output (stdin) per crate; prints a markdown table of
the N largest (argv[1], default 25) and the rest. Used by bench/size.

A symbol counts for the crate its demangled path starts with, looking through the
`<Type as Trait>::method` form at the type (the code is that type's); symbols with no Rust
path (C code built by -sys crates, such as zstd's; the C runtime) count as "[C]".
"""
import re
import sys
from collections import defaultdict

RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")


def crate_of(name):
    s = name.strip()
    # `<T as Trait>::f`, `<&mut T as Trait>::f`, `<[T] as …>`: the first path inside.
    while s.startswith("<") or s.startswith("&") or s.startswith("["):
        s = s.lstrip("<&[")
        for p in ("mut ", "dyn ", "const ", "impl "):
            if s.startswith(p):
                s = s[len(p):]
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", s)
    if m:
        return m.group(1)
    return None


def main():
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    sizes = defaultdict(int)
    total = 0
    for line in sys.stdin:
        parts = line.rstrip("\n").split(" ", 3)
        if len(parts) < 4 or parts[2] in ("U", "w", "v"):
            continue
        try:
            size = int(parts[1], 16)
        except ValueError:
            continue
        crate = crate_of(parts[3])
        if crate is None:
            crate = "[C]" if not RUST_HASH.search(parts[3]) else "[Rust, no path]"
        sizes[crate] += size
        total += size
    if not total:
        print("(no symbols: the executable is stripped)")
        return
    rows = sorted(sizes.items(), key=lambda kv: -kv[1])
    print("| crate | size | share |")
    print("|---|---:|---:|")
    for crate, size in rows[:top]:
        print(f"| {crate} | {size / 1e3:.0f} kB | {100 * size / total:.1f} % |")
    rest = sum(s for _, s in rows[top:])
    if rest:
        print(f"| {len(rows) - top} others | {rest / 1e3:.0f} kB | {100 * rest / total:.1f} % |")
    print(f"| **all symbols** | **{total / 1e3:.0f} kB** | |")


if __name__ == "__main__":
    main()
