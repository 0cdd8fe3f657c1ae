#!/usr/bin/env python3
"""Fails when the node crate's top-level modules import each other in a circle.

Every `crate::<module>` a file of module A names (outside tests and comments) is an edge
A -> module; a strongly connected group of two or more modules is a circle, printed with the
lines that make each of its edges. The layers are written down in docs/ARCHITECTURE.md.
Usage: scripts/check-layers.py [node/src]
"""
import os
import re
import sys


def edges(root):
    graph, where = {}, {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            graph.setdefault(top, set())
            text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
            for line in text.splitlines():
                if line.strip().startswith("//"):
                    continue
                for dep in re.findall(r"crate::([a-z_]+)", line):
                    if dep != top:
                        graph[top].add(dep)
                        where.setdefault((top, dep), []).append(f"{rel}: {line.strip()[:100]}")
    return graph, where


def circles(graph):
    """Tarjan's strongly connected components with more than one member."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "node/src"
    graph, where = edges(root)
    found = circles(graph)
    for group in found:
        print(f"import circle among {', '.join(group)}:")
        for a in group:
            for b in sorted(graph[a] & set(group)):
                print(f"  {a} -> {b}: {where[(a, b)][0]}")
    if found:
        sys.exit(1)
    print(f"{root}: {len(graph)} modules, no import circle")


if __name__ == "__main__":
    main()
