#!/usr/bin/env python3
"""Prints which top-level module of src/ imports which (`crate::X` paths),
and checks the layering that src/lib.rs states: no module imports one above it.

Usage: scripts/module-graph.py [SRC_DIR]   (exit 1 on an upward edge)
"""
import os
import re
import sys

# Lower number = lower layer. A module may import its own layer or lower.
LAYERS = {
    "main": 7,
    "cli": 6,
    "http": 5,
    "operations": 4,
    "app": 3,
    "accounts": 2, "inputs": 2, "faces": 2,
    "telemetry": 1, "error_codes": 1, "config": 1,
    "image_format": 0, "memory": 0, "utc": 0,
}


def top_module(src, path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def brace_group(text, start):
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
    return ""


def split_top(group):
    out, depth, cur = [], 0, ""
    for ch in group:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [p.strip() for p in out if p.strip()]


def imports(text):
    # Drop comments and #[cfg(test)] modules' contents are kept: tests count too.
    text = re.sub(r"//[^\n]*", "", text)
    found = set()
    for m in re.finditer(r"crate::(\{|[A-Za-z_][A-Za-z0-9_]*)", text):
        if m.group(1) == "{":
            for part in split_top(brace_group(text, m.start(1))):
                name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", part)
                if name and name.group(0) != "self":
                    found.add(name.group(0))
        else:
            found.add(m.group(1))
    return found


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    edges = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(root, f)
                mod = top_module(src, path)
                if mod == "lib":
                    continue
                with open(path, encoding="utf-8") as fh:
                    deps = imports(fh.read())
                deps = {d for d in deps if d != mod}
                edges.setdefault(mod, set()).update(deps)
    upward = []
    for mod in sorted(edges, key=lambda m: (-LAYERS.get(m, 99), m)):
        deps = sorted(edges[mod], key=lambda m: (-LAYERS.get(m, 99), m))
        print(f"{mod:13} -> {', '.join(deps) if deps else '(nothing)'}")
        for d in deps:
            if LAYERS.get(d, 99) > LAYERS.get(mod, -1):
                upward.append((mod, d))
    if upward:
        print("\nupward imports (a module imports one above it):")
        for a, b in upward:
            print(f"  {a} -> {b}")
        return 1
    print("\nno module imports one above it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
