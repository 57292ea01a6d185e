"""Helpers shared by the benchmark scripts: machine description and result files.

Benchmarks are scripts, never imported by the package. Each writes a JSON,
CSV and Markdown file into benchmarks/results/ named after itself.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def shared_path(*parts: str) -> str | None:
    """A path under the development machines' ../shared folder, if it exists.

    Benchmarks take their data through flags; this only supplies defaults.
    """
    base = os.environ.get("FEATCACHE_SHARED") or str(Path(__file__).resolve().parents[2] / "shared")
    path = Path(base, *parts)
    return str(path) if path.exists() else None


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            ids = {}
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in ids:
                    ids[key] = value.strip()
                if len(ids) == 3:
                    break
            if "model name" in ids:  # family/model tell apart CPUs sold under one name (AMD EPYC)
                cpu = ids["model name"] + (f" (family {ids['cpu family']}, model {ids['model']})"
                                           if "cpu family" in ids and "model" in ids else "")
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "gpu": None, "date": time.strftime("%Y-%m-%d")}
    try:
        from featcache.hardware import cpu_info

        # the flags that decide the speed of a figure (AVX2/AVX-512/bfloat16/AMX)
        info["cpu_flags"] = cpu_info().to_json()["flags"]
        from featcache.fingerprint import library_versions as versions

        info.update(versions())
    except Exception as exc:  # noqa: BLE001 - a description, never fatal
        info["versions_error"] = str(exc)
    return info


def median(values):
    return statistics.median(values) if values else float("nan")


def write_results(name: str, meta: dict, rows: list[dict], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    if rows:
        with open(RESULTS / f"{name}.csv", "w", newline="") as fh:
            # every row's keys, in first-seen order (merged results mix older and newer rows)
            writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(row[key]) for key, _ in columns) + " |" for row in rows]
    return "\n".join([head, sep, *body]) + "\n"


def machine_line(meta: dict) -> str:
    m = meta["machine"]
    gpu = m.get("gpu") or "no GPU"
    flags = f" (flags: {' '.join(m['cpu_flags'])})" if m.get("cpu_flags") else ""
    return (f"Machine: {m['cpu']}{flags}, {m['cores']} cores, {gpu}; Python {m['python']}, "
            f"Keras {m.get('keras')}, {m.get('backend')} {m.get('backend_version')}, "
            f"Pillow {m.get('pillow')}; {m['date']}.")


def process_env() -> dict:
    """The environment for featcache processes a benchmark starts (a private trust store)."""
    env = dict(os.environ)
    env.setdefault("FEATCACHE_TRUST_STORE", os.path.join(tempfile.gettempdir(), "featcache-bench-trust"))
    return env


def run_json(cmd: list[str], env: dict) -> tuple[float, float, dict]:
    """Run a process that prints JSON: wall seconds, peak RSS in MiB and the parsed output.

    Exits with the command's stderr tail when it fails.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read().decode(errors='replace')[-3000:]}")
        return seconds, usage.ru_maxrss / 1024, json.loads(out.read())
