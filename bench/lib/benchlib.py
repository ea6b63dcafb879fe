#!/usr/bin/env python3
"""Helpers for bench/run.sh: free ports, parsing the load tools' output into one JSON
record per measurement, and the report (the table on stdout and bench/RESULTS.md).

Standard library only.

  benchlib.py ports N
  benchlib.py record --workload W --contender C --mode M --round R --kind K --raw FILE ...
  benchlib.py report --results FILE --out FILE [--meta k=v ...] [--notes FILE] [--work DIR]
"""

import argparse
import datetime
import json
import os
import re
import socket
import statistics
import subprocess
import sys

# Order and wording of the report.
WORKLOADS = [
    # key, title, metric, unit, higher is better
    ("ka", "HTTP/1.1 keep-alive (wrk -c64)", "rps", "req/s", True),
    ("cpr", "connection per request (wrk -c16, Connection: close)", "rps", "req/s", True),
    ("l4", "L4 stream throughput (iperf3)", "gbps", "Gbit/s", True),
    ("ws", "WebSocket echo (wsbench, 64 connections)", "mps", "msg/s", True),
    ("mem", "memory per idle connection", "kib_per_conn", "KiB/conn", False),
    ("siege", "siege -c 50 -b", "tps", "trans/s", True),
]
CONTENDER_ORDER = ["direct", "rlb", "nginx", "haproxy"]
PRETTY = {"direct": "direct", "rlb": "rlb", "nginx": "nginx", "haproxy": "HAProxy"}


# ---------------------------------------------------------------------------- ports

def cmd_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


# ---------------------------------------------------------------------------- parsing

def to_ms(value, unit):
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[unit]


def parse_wrk(text):
    out = {}
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if not m:
        raise ValueError("no Requests/sec line in wrk output")
    out["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        if m:
            out[key] = to_ms(m.group(1), m.group(2))
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = {}
    if m:
        for name, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                errors[name] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors["non2xx"] = int(m.group(1))
    if errors:
        out["errors"] = errors
    return out


def parse_siege(text):
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < 0:
        raise ValueError("no JSON summary in siege output")
    data = json.loads(text[start:end + 1])
    out = {
        "tps": float(data["transaction_rate"]),
        "availability": float(data["availability"]),
        "transactions": int(data["transactions"]),
    }
    if int(data.get("failed_transactions", 0)):
        out["errors"] = {"failed": int(data["failed_transactions"])}
    return out


def parse_iperf(text):
    data = json.loads(text[text.find("{"):])
    if data.get("error"):
        raise ValueError(f"iperf3: {data['error']}")
    bps = data["end"]["sum_received"]["bits_per_second"]
    out = {"gbps": bps / 1e9}
    retr = data["end"].get("sum_sent", {}).get("retransmits")
    if retr:
        out["retransmits"] = retr
    return out


def last_json_line(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in output")


def parse_ws(text):
    data = last_json_line(text)
    out = {"mps": data["msgs_per_sec"], "p50_ms": data["p50_ms"], "p99_ms": data["p99_ms"]}
    if data.get("errors"):
        out["errors"] = {"connections": data["errors"], "first": data.get("first_error")}
    return out


def parse_mem(text, extra):
    data = last_json_line(text)
    idle, loaded = int(extra["idle_kib"]), int(extra["loaded_kib"])
    held = int(data["ok"])
    if held == 0:
        raise ValueError(f"no connection held: {data.get('first_error')}")
    out = {
        "kib_per_conn": (loaded - idle) / held,
        "idle_kib": idle,
        "loaded_kib": loaded,
        "held": held,
    }
    errors = {}
    if data.get("failed"):
        errors["failed"] = data["failed"]
        errors["first"] = data.get("first_error")
    if data.get("closed_while_idle"):
        errors["closed_while_idle"] = data["closed_while_idle"]
    if errors:
        out["errors"] = errors
    return out


def cpu_busy(before_path, after_path):
    """Busy % per core between two copies of the cpuN lines of /proc/stat."""
    def read(path):
        cores = {}
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts and re.fullmatch(r"cpu\d+", parts[0]):
                    vals = [int(x) for x in parts[1:]]
                    # user nice system idle iowait irq softirq steal (guest is in user)
                    total = sum(vals[:8])
                    idle = vals[3] + vals[4]
                    cores[parts[0]] = (total, idle)
        return cores
    b, a = read(before_path), read(after_path)
    busy = {}
    for core in sorted(set(a) & set(b)):
        dt = a[core][0] - b[core][0]
        di = a[core][1] - b[core][1]
        busy[core] = round(100.0 * (dt - di) / dt, 1) if dt > 0 else None
    return busy


def cmd_record(args):
    extra = dict(kv.split("=", 1) for kv in args.extra or [])
    rec = {
        "workload": args.workload,
        "contender": args.contender,
        "mode": args.mode,
        "round": args.round,
        "cmd": args.cmd,
        "rc": args.rc,
    }
    try:
        with open(args.raw, errors="replace") as f:
            text = f.read()
        parser = {"wrk": parse_wrk, "siege": parse_siege, "iperf": parse_iperf,
                  "ws": parse_ws}.get(args.kind)
        rec.update(parse_mem(text, extra) if args.kind == "mem" else parser(text))
    except Exception as e:  # a failed measurement is recorded, not fatal
        tail = " | ".join(text.strip().splitlines()[-3:]) if "text" in locals() else ""
        rec["failed"] = f"{e}" + (f" [{tail}]" if tail else "")
    if args.cpu_before and args.cpu_after:
        try:
            rec["cpu"] = cpu_busy(args.cpu_before, args.cpu_after)
        except OSError:
            pass
    print(json.dumps(rec))


def cmd_progress(_args):
    """One line about the record on stdin, for the log while the run goes on."""
    r = json.loads(sys.stdin.read())
    keys = [k for k in ("rps", "gbps", "mps", "kib_per_conn", "tps") if k in r]
    val = f"{keys[0]}={r[keys[0]]:.2f}" if keys else "FAILED: " + r.get("failed", "?")[:300]
    cpu = r.get("cpu", {})
    line = f"    -> {val}  core0 {cpu.get('cpu0')} %  core1 {cpu.get('cpu1')} %"
    if r.get("errors"):
        line += f"  errors {r['errors']}"
    print(line)


# ---------------------------------------------------------------------------- report

def fmt_num(v, unit):
    if v is None:
        return "–"
    if unit in ("Gbit/s",):
        return f"{v:.1f}"
    if unit == "KiB/conn":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def row_label(contender, mode):
    return PRETTY.get(contender, contender) + ("" if contender == "direct" else f" {mode}")


def summarize(records):
    """{(workload, contender, mode): summary dict}"""
    groups = {}
    for r in records:
        groups.setdefault((r["workload"], r["contender"], r["mode"]), []).append(r)
    out = {}
    for key, recs in groups.items():
        wl = next(w for w in WORKLOADS if w[0] == key[0])
        metric = wl[2]
        ok = [r for r in recs if "failed" not in r and r.get(metric) is not None]
        vals = [r[metric] for r in ok]
        s = {
            "n": len(recs),
            "ok": len(ok),
            "median": median(vals),
            "min": min(vals) if vals else None,
            "max": max(vals) if vals else None,
            "p50": median([r.get("p50_ms") for r in ok]),
            "p99": median([r.get("p99_ms") for r in ok]),
            "availability": median([r.get("availability") for r in ok]),
            "cpu0": median([r.get("cpu", {}).get("cpu0") for r in ok]),
            "cpu1": median([r.get("cpu", {}).get("cpu1") for r in ok]),
            "held": median([r.get("held") for r in ok]),
            "failures": [r["failed"] for r in recs if "failed" in r],
            "errors": [r["errors"] for r in ok if r.get("errors")],
            "cmd": recs[0].get("cmd", ""),
        }
        out[key] = s
    return out


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}"


def notes_for(s):
    notes = []
    if s["failures"]:
        notes.append(f"{len(s['failures'])}/{s['n']} rounds failed: {s['failures'][0][:120]}")
    if s["errors"]:
        agg = {}
        for e in s["errors"]:
            for k, v in e.items():
                if isinstance(v, (int, float)):
                    agg[k] = agg.get(k, 0) + v
        if agg:
            notes.append("errors " + ", ".join(f"{k} {v}" for k, v in sorted(agg.items())))
    return "; ".join(notes)


def build_table(summary):
    header = ["workload", "contender", "median", "min–max", "p50/p99 ms", "core0/core1 busy %",
              "rlb/nginx", "rlb/HAProxy", "rlb/direct", "notes"]
    rows = []
    for key, title, metric, unit, _higher in WORKLOADS:
        entries = [k for k in summary if k[0] == key]
        if not entries:
            continue
        entries.sort(key=lambda k: (CONTENDER_ORDER.index(k[1]) if k[1] in CONTENDER_ORDER
                                    else 99, k[2]))
        for k in entries:
            s = summary[k]
            _, contender, mode = k
            if key == "siege":
                extra = "avail {:.2f} %".format(s["availability"]) \
                    if s["availability"] is not None else "–"
            elif key == "mem":
                extra = f"{s['held']:.0f} held" if s["held"] is not None else "–"
            elif s["p50"] is not None:
                extra = f"{s['p50']:.2f}/{s['p99']:.2f}"
            else:
                extra = "–"
            cpu = "–" if s["cpu0"] is None else f"{s['cpu0']:.0f}/{s['cpu1']:.0f}"
            r_n = r_h = r_d = ""
            if contender == "rlb":
                def med(c, m=mode):
                    t = summary.get((key, c, m))
                    return t["median"] if t else None
                r_n = ratio(s["median"], med("nginx"))
                r_h = ratio(s["median"], med("haproxy"))
                r_d = ratio(s["median"], med("direct", "-"))
            spread = "–" if s["min"] is None else \
                f"{fmt_num(s['min'], unit)}–{fmt_num(s['max'], unit)}"
            rows.append([f"{key} ({unit})", row_label(contender, mode),
                         fmt_num(s["median"], unit), spread, extra, cpu, r_n, r_h, r_d,
                         notes_for(s)])
    return header, rows


def render_text(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    widths[-1] = min(widths[-1], 60)
    def line(cells):
        return "  ".join(str(c)[:w].ljust(w) if i in (0, 1, len(cells) - 1)
                         else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(header), line(["-" * w for w in widths])]
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            out.append("")
        prev = r[0]
        out.append(line(r))
    return "\n".join(l.rstrip() for l in out)


def render_md(header, rows):
    align = ["---", "---"] + ["--:"] * (len(header) - 3) + ["---"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def matrix_md(summary):
    """One row per contender, one column per workload: the baseline's shape."""
    labels = sorted({(k[1], k[2]) for k in summary},
                    key=lambda cm: (CONTENDER_ORDER.index(cm[0]) if cm[0] in CONTENDER_ORDER
                                    else 99, cm[1]))
    cols = [w for w in WORKLOADS if any(k[0] == w[0] for k in summary)]
    out = ["| contender | " + " | ".join(f"{w[1].split(' (')[0]} {w[3]}" for w in cols) + " |",
           "|---|" + "--:|" * len(cols)]
    for c, m in labels:
        cells = []
        for w in cols:
            s = summary.get((w[0], c, m))
            cells.append(fmt_num(s["median"], w[3]) if s else "–")
        out.append(f"| {row_label(c, m)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def every_round_md(records):
    """Each measurement on its own line, with the busy share of each core during it."""
    metric = {w[0]: (w[2], w[3]) for w in WORKLOADS}
    order = [w[0] for w in WORKLOADS]
    out = ["| workload | round | contender | value | unit | p50/p99 ms | core0 % | core1 % "
           "| errors |", "|---|--:|---|--:|---|--:|--:|--:|---|"]
    for r in sorted(records, key=lambda r: (order.index(r["workload"])
                                            if r["workload"] in order else 99, r["round"])):
        m, unit = metric.get(r["workload"], ("?", "?"))
        cpu = r.get("cpu", {})
        lat = f"{r['p50_ms']:.2f}/{r['p99_ms']:.2f}" if "p50_ms" in r else ""
        err = r.get("failed") or (json.dumps(r["errors"]) if r.get("errors") else "")
        pct = lambda v: "–" if v is None else f"{v:.0f}"
        out.append(f"| {r['workload']} | {r['round']} | {row_label(r['contender'], r['mode'])} "
                   f"| {fmt_num(r.get(m), unit)} | {unit} | {lat} | {pct(cpu.get('cpu0'))} "
                   f"| {pct(cpu.get('cpu1'))} | {err.replace('|', '/')[:160]} |")
    return "\n".join(out)


def version_of(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0].strip() if text else "?"
    except Exception:
        return "not found"


def machine_facts():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model, "memory": mem,
            "kernel": os.uname().release}


def cmd_report(args):
    records = []
    with open(args.results) as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    meta = dict(kv.split("=", 1) for kv in args.meta or [])
    summary = summarize(records)
    header, rows = build_table(summary)
    print(render_text(header, rows))
    skip_notes = []
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            skip_notes = [l.rstrip() for l in f if l.strip()]
    for n in skip_notes:
        print(f"note: {n}")

    facts = machine_facts()
    rlb = meta.get("rlb", "")
    versions = {
        "nginx": version_of(["nginx", "-v"]),
        "HAProxy": version_of(["haproxy", "-v"]),
        "wrk": version_of(["wrk", "-v"]),
        "siege": version_of(["siege", "-V"]),
        "iperf3": version_of(["iperf3", "-v"]),
        "rustc": version_of(["rustc", "--version"]),
        "rlb": (version_of([rlb, "--version"]) if rlb and os.access(rlb, os.X_OK)
                else "not run"),
    }
    rounds, duration = meta.get("rounds", "?"), meta.get("duration", "?")
    smoke = False
    try:
        smoke = int(rounds) < 3 or int(duration) < 10
    except ValueError:
        pass
    when = meta.get("date") or datetime.datetime.now(datetime.timezone.utc) \
        .strftime("%Y-%m-%d %H:%M UTC")

    md = ["# rlb benchmark results", ""]
    if smoke:
        md += [f"> **Smoke run** ({rounds} round(s) of {duration} s): the figures only show "
               "that the harness works; they are not comparable with the baseline.", ""]
    md += [
        f"Date: {when}. Machine: {facts['nproc']} vCPUs ({facts['cpu']}), {facts['memory']}, "
        f"Linux {facts['kernel']}.",
        "",
        "Versions: " + "; ".join(f"{k}: `{v}`" for k, v in versions.items()) + ".",
        "",
        f"Produced by `{meta.get('argv', 'bench/run.sh')}`: {rounds} round(s) per "
        f"measurement, {duration} s each, contenders alternating within a round "
        "(A B C A B C …), each contender started fresh for each measurement. "
        "Each proxy is pinned to core 1 with one worker; the load generator and the "
        "origin (a private nginx returning a short 200 on two ports, an iperf3 server, "
        "the wsbench echo server) to core 0. Cells are medians over the rounds, with the "
        "spread (min–max); `core0/core1 busy %` is the median busy share of each core "
        "during the measurement (from /proc/stat): a core near 100 % is the bottleneck. "
        "Ratios are rlb's median over the peer's median in the same mode (for KiB/conn, "
        "lower is better).",
        "",
    ]
    if skip_notes:
        md += ["Notes:", ""] + [f"- {n}" for n in skip_notes] + [""]
    md += ["## All measurements", "", render_md(header, rows), "",
           "## Summary (medians, the baseline's layout)", "", matrix_md(summary), ""]
    md += ["## Every measurement", "", every_round_md(records), ""]
    md += ["## Commands", "",
           "Load commands exactly as run (the ports are picked free at each start):", ""]
    seen = set()
    for key, title, *_ in WORKLOADS:
        cmds = [(k, s["cmd"]) for k, s in summary.items() if k[0] == key]
        if not cmds:
            continue
        md.append(f"- {title}:")
        for k, c in sorted(cmds, key=lambda kc: (CONTENDER_ORDER.index(kc[0][1])
                                                  if kc[0][1] in CONTENDER_ORDER else 99,
                                                  kc[0][2])):
            if (key, c) in seen:
                continue
            seen.add((key, c))
            md.append(f"  - {row_label(k[1], k[2])}: `{c}`")
    md.append("")
    if args.work:
        md += contender_configs(args.work)
    with open(args.out, "w") as f:
        f.write("\n".join(md))
    print(f"\nwritten: {args.out}", file=sys.stderr)


def contender_configs(work):
    """The start commands and configuration files of the contenders (standard variant)."""
    out = ["## Contenders' start commands and configurations", ""]
    try:
        with open(os.path.join(work, "start-commands.txt")) as f:
            for line in f:
                if line.strip():
                    out.append(f"- `{line.strip()}`")
        out.append("")
    except OSError:
        pass
    for name, path, lang in (("origin (nginx)", "origin/nginx.conf", "nginx"),
                             ("nginx", "nginx-std/nginx.conf", "nginx"),
                             ("HAProxy", "haproxy-std/haproxy.cfg", ""),
                             ("rlb", "rlb-std/rlb.toml", "toml"),
                             ("siege", "siegerc", "")):
        p = os.path.join(work, path)
        if os.path.exists(p):
            with open(p) as f:
                body = f.read().rstrip()
            out += [f"<details><summary>{name}: {path}</summary>", "",
                    f"```{lang}", body, "```", "", "</details>", ""]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p.set_defaults(func=cmd_ports)
    p = sub.add_parser("record")
    for a in ("--workload", "--contender", "--mode", "--kind", "--raw"):
        p.add_argument(a, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--rc", type=int, default=0)
    p.add_argument("--cmd", default="")
    p.add_argument("--cpu-before")
    p.add_argument("--cpu-after")
    p.add_argument("--extra", action="append")
    p.set_defaults(func=cmd_record)
    p = sub.add_parser("progress")
    p.set_defaults(func=cmd_progress)
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--meta", action="append")
    p.add_argument("--notes")
    p.add_argument("--work")
    p.set_defaults(func=cmd_report)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
