#!/usr/bin/env python3
"""The house rules of src/, checked: imports point one way, no file over 500 lines,
no function over 80 lines (test code excluded).

1. Layers: each top-level module of src/ may use only the modules listed before it in
   LAYERS (lib.rs and main.rs stand above them all).
2. No import circle between files, inside a module too: a file's `use` lines and inline
   `crate::` / `super::` / child-module paths are its imports (a `mod x;` declaration
   is not); any strongly connected set of two or more files is a circle.
3. Size: no source file over 500 lines, no `fn` over 80 lines.

Exits 1 and names each violation; prints the layer graph when all is well.
"""
import os
import re
import signal
import sys

# Bottom first. Keep in step with the README's "Architecture" section.
LAYERS = [
    "route",     # pure matching: host, path prefix, TLS names
    "config",    # file -> validated Config
    "tls",       # TLS termination: ServerConfig, SNI certificate choice, session stores
    "events",    # EventKind, the /events ring, the clock
    "error",     # what can fail on the data path, and its retry rule
    "connect",   # connections to servers: connect, the idle pool, request bodies
    "server",    # live server state, Active, counters, rise/fall
    "limit",     # live limit state: open connections, per-client counts, rate buckets
    "balance",   # picking a server
    "metrics",   # counters and the Prometheus exposition
    "snapshot",  # Shared, Snapshot, listener plans, build
    "health",    # checkers and probes, passive ejection
    "proxy",     # the data path: tcp, http, copy loops
    "listener",  # bind, accept loop
    "control",   # the control task: reload, admin API, watch, signals
]
MAX_FILE_LINES = 500
MAX_FN_LINES = 80

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_path(rel):
    """src-relative file path -> module path tuple (`proxy/http/mod.rs` -> proxy, http)."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts in (["lib"], ["main"]):
        return ()
    return tuple(parts)


def strip_tests(text):
    """The text without its `#[cfg(test)] mod ...` block (tests sit at the end)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            rest = [l for l in lines[i + 1:i + 4] if l.strip()]
            if rest and re.match(r"\s*(pub(\(\w+\))?\s+)?mod\s+\w+", rest[0]):
                if rest[0].rstrip().endswith(";"):
                    lines[i + 1] = ""  # `mod tests;`: the file is skipped on its own
                    continue
                return "\n".join(lines[:i])
    return text


def without_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*", "", l) for l in text.split("\n"))


def paths_in(text, children):
    """Every path an item of the file names: `use` trees expanded, and inline paths
    that start at the crate, the parent or a child module."""
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        found.extend(expand(m.group(1).replace("\n", " ")))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|\w+)(?:::\w+)+)", text):
        first = m.group(1).split("::")[0]
        if first in ("crate", "super") or first in children:
            found.append(m.group(1))
    return found


def expand(tree):
    """`a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e."""
    tree = re.sub(r"\s+", "", tree)
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix = tree[:start]
                inner, out, d, last = tree[start + 1:i], [], 0, 0
                items = []
                for j, c in enumerate(inner):
                    if c == "{":
                        d += 1
                    elif c == "}":
                        d -= 1
                    elif c == "," and d == 0:
                        items.append(inner[last:j])
                        last = j + 1
                items.append(inner[last:])
                for item in items:
                    if item and item != "self":
                        out.extend(expand(prefix + item))
                    elif item == "self":
                        out.append(prefix.rstrip(":"))
                return out
    return [re.sub(r"\bas\b.*", "", tree)]


def resolve(path, here, children, modules):
    """A path as written in module `here` -> the longest known module it names."""
    segments = path.split("::")
    if segments[0] == "crate":
        base, rest = (), segments[1:]
    elif segments[0] == "super":
        base = here
        rest = segments
        while rest and rest[0] == "super":
            base = base[:-1]
            rest = rest[1:]
    elif segments[0] == "self":
        base, rest = here, segments[1:]
    elif segments[0] in children.get(here, ()):
        base, rest = here, segments
    else:
        return None  # an external crate or std
    best = None
    for n in range(len(rest) + 1):
        candidate = base + tuple(rest[:n])
        if candidate in modules:
            best = candidate
    return best


def long_functions(text, rel):
    """`fn` items whose body spans more than MAX_FN_LINES lines."""
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"\s*(pub(\([\w:]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", line)
        if not m:
            continue
        depth, opened, end = 0, False, None
        for j in range(i, len(lines)):
            code = lines[j]
            if not opened and ";" in code and "{" not in code:
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                end = j
                break
        if end is not None and end - i + 1 > MAX_FN_LINES:
            out.append(f"{rel}:{i + 1}: fn {m.group(6)} is {end - i + 1} lines (at most {MAX_FN_LINES})")
    return out


def main():
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".rs"):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, ROOT).replace(os.sep, "/")
                files[rel] = open(full, encoding="utf-8").read()
    problems = []
    modules = {}
    children = {}
    for rel, text in files.items():
        if rel.endswith("/tests.rs") or rel == "tests.rs":
            continue
        modules[module_path(rel)] = rel
    for rel, text in files.items():
        here = module_path(rel)
        children[here] = set(re.findall(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?mod\s+(\w+)\s*;", text, re.M))

    edges = {}
    for mod, rel in modules.items():
        code = without_comments(strip_tests(files[rel]))
        count = len(files[rel].split("\n")) - (1 if files[rel].endswith("\n") else 0)
        if count > MAX_FILE_LINES:
            problems.append(f"{rel}: {count} lines (at most {MAX_FILE_LINES})")
        problems.extend(long_functions(code, rel))
        targets = set()
        for path in paths_in(code, children.get(mod, ())):
            target = resolve(path, mod, children, modules)
            if target is not None and target != mod and target != ():
                targets.add(target)
        edges[mod] = targets
        if not mod:
            continue
        top = mod[0]
        if top not in LAYERS:
            problems.append(f"{rel}: module `{top}` is not in LAYERS of scripts/check-layers.py")
            continue
        for target in sorted(targets):
            other = target[0]
            if other != top and other in LAYERS and LAYERS.index(other) > LAYERS.index(top):
                problems.append(
                    f"{rel}: `{top}` imports `{'::'.join(target)}`, a layer above it"
                )

    for circle in circles(edges):
        names = " -> ".join(modules[m] for m in circle)
        problems.append(f"import circle: {names}")

    if problems:
        print("check-layers: the house rules are broken:")
        for p in problems:
            print("  " + p)
        return 1
    print(f"check-layers: {len(modules)} files, no import circle, every import points down:")
    for top in LAYERS:
        below = sorted({t[0] for m, ts in edges.items() if m and m[0] == top for t in ts if t and t[0] != top},
                       key=LAYERS.index)
        print(f"  {top:<9} -> {', '.join(below) if below else '(nothing)'}")
    return 0


def circles(edges):
    """Strongly connected sets of two or more files (Tarjan), each as a path."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
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

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends it quietly
    sys.exit(main())
