#!/usr/bin/env python3
"""What fine-tuning buys over the frozen head, and what transfer buys over training from scratch.

Per dataset, each step a timed process as a user would run it:

  extract              featcache extract (MobileNet at --image-size, the 224 px weights file)
  frozen heads         train-head logreg and dense256 on the cache; the best is "best frozen head"
  fine-tuned, defaults featcache finetune from the dense256 head with no tuning flag
  fine-tuned, tuned    the same with the settings passed in --tuned DATASET=FLAGS
  from scratch         benchmarks/scratch_cnn.py: a small CNN from random weights, same images

Reported: validation accuracy, the process's seconds (start-up included) and,
for the runs with epochs, seconds per epoch (median, training and
validation). Results are merged into benchmarks/results/finetune_gain_<backbone>.*
by dataset, so datasets can be run one invocation at a time.

    python benchmarks/finetune_gain.py --datasets flowers5 --image-size flowers5=128 \
        --tuned "flowers5=--epochs 10"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, machine_line, markdown_table, shared_path  # noqa: E402
from common import process_env, run_json, write_results  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHT_FILES = {"mobilenet": "mobilenet_1_0_224_tf_no_top.h5",
                "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"}
RUNS = ("frozen", "defaults", "tuned", "scratch")
TARGETS = {"flowers5": "≥ best frozen + 0.05 (aim 0.80)", "cats_dogs": "≥ 0.99", "hymenoptera": "≥ 0.96"}


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep:
            raise SystemExit(f"{what} {value!r}: expected DATASET=VALUE")
        out[key] = rest
    return out


def _adopt(out: str) -> dict | None:
    """The summary of a fine-tuning run already finished in `out` (its own files), or None."""
    config_path, metrics_path = os.path.join(out, "config.json"), os.path.join(out, "metrics.json")
    if not (os.path.isfile(config_path) and os.path.isfile(metrics_path)):
        return None
    ft = json.load(open(config_path))["finetune"]
    times = sorted(ft.get("epoch_seconds") or [0.0])
    return {"val_accuracy": json.load(open(metrics_path))["accuracy"], "seconds": ft["seconds"],
            "seconds_per_epoch": times[len(times) // 2], "epochs_run": ft["epochs_done"],
            "images_per_second": None, "before_finetune": ft.get("before_finetune"),
            "best_epoch": ft.get("kept_epoch"), "trainable_layer_count": len(ft["trainable_layers"]),
            "trainable_layers": ft["trainable_layers"]}


def run_dataset(name: str, data: str, backbone: str, size: int, weights: str, tuned: str,
                scratch_epochs: int, work: str, env: dict, runs: set[str]) -> list[dict]:
    fc = [sys.executable, "-m", "featcache"]
    cache = os.path.join(work, "cache")
    os.makedirs(work, exist_ok=True)
    rows = []

    def row(method, seconds, result, **extra):
        rows.append({"dataset": name, "backbone": backbone, "image_size": size, "method": method,
                     "val_accuracy": round(float(result["val_accuracy"]), 4),
                     "seconds": round(seconds, 1),
                     "seconds_per_epoch": extra.pop("seconds_per_epoch", None),
                     "epochs": extra.pop("epochs", None), **extra})
        print(json.dumps(rows[-1]), flush=True)

    if "frozen" in runs:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        seconds, _, _ = run_json([*fc, "extract", "--data", data, "--out", cache, "--backbone", backbone,
                                  "--image-size", str(size), "--weights", weights, "--json", "--quiet"],
                                 env)
        extract_seconds = round(seconds, 1)
        heads = {}
        for head in ("logreg", "dense256"):
            seconds, _, result = run_json([*fc, "train-head", "--cache", cache, "--model", head,
                                           "--out", os.path.join(work, head), "--json", "--quiet"], env)
            heads[head] = result
            row(f"frozen {head} (+ extract {extract_seconds} s)", seconds, result,
                epochs=result.get("epochs_run"))
        best = max(heads, key=lambda h: heads[h]["val_accuracy"])
        rows.append({**next(r for r in rows if r["method"].startswith(f"frozen {best}")),
                     "method": f"best frozen head ({best})"})

    for label, flags in (("fine-tuned, defaults", ""), ("fine-tuned, tuned", tuned)):
        kind = label.split()[-1]
        if kind not in runs or (kind == "tuned" and not flags):
            continue
        out = os.path.join(work, "ft-" + kind)
        result = _adopt(out)  # a run finished earlier (e.g. by an interrupted benchmark)
        if result is not None:
            seconds = result["seconds"]
        else:
            shutil.rmtree(out, ignore_errors=True)
            seconds, _, result = run_json([*fc, "finetune", "--data", data, "--model",
                                           os.path.join(work, "dense256"), "--out", out, "--json",
                                           "--quiet", *shlex.split(flags)], env)
        before = result.get("before_finetune") or {}
        row(label, seconds, result, seconds_per_epoch=result["seconds_per_epoch"],
            epochs=result["epochs_run"], flags=flags or "(none)",
            images_per_second=result["images_per_second"],
            before_finetune=round(before.get("val_accuracy", float("nan")), 4),
            kept_epoch=result.get("best_epoch"), trainable_layers=result["trainable_layer_count"],
            from_layer=(result["trainable_layers"] or ["-"])[0])

    if "scratch" in runs:
        seconds, _, result = run_json([sys.executable, os.path.join(HERE, "scratch_cnn.py"), "--data",
                                       data, "--image-size", str(size), "--epochs", str(scratch_epochs)],
                                      env)
        row("from scratch (small CNN)", seconds, result, seconds_per_epoch=result["seconds_per_epoch"],
            epochs=result["epochs_run"], parameters=result["parameters"])
    return rows


def _rows_from_log(path: str) -> list[dict]:
    """Rows an interrupted run of this script printed (one JSON object per line)."""
    rows = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{") and '"dataset"' in line:
            rows.append(json.loads(line))
    for dataset in {r["dataset"] for r in rows}:
        frozen = [r for r in rows if r["dataset"] == dataset and r["method"].startswith("frozen ")]
        if frozen and not any(r["dataset"] == dataset and r["method"].startswith("best frozen")
                              for r in rows):
            best = max(frozen, key=lambda r: r["val_accuracy"])
            head = best["method"].split()[1]
            rows.append({**best, "method": f"best frozen head ({head})"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--datasets", nargs="*", default=["flowers5", "hymenoptera", "cats_dogs"],
                        help="datasets to run (none: only merge --rows-from logs)")
    parser.add_argument("--data-root", default=shared_path("data"))
    parser.add_argument("--weights-dir", default=shared_path("weights"))
    parser.add_argument("--backbone", default="mobilenet", choices=sorted(WEIGHT_FILES))
    parser.add_argument("--image-size", nargs="*", default=[], metavar="DATASET=PX",
                        help="input size per dataset (default 224)")
    parser.add_argument("--tuned", nargs="*", default=[], metavar="DATASET=FLAGS",
                        help="finetune flags of the tuned run per dataset")
    parser.add_argument("--scratch-epochs", type=int, default=30)
    parser.add_argument("--name", default=None,
                        help="results file name (default finetune_gain_<backbone>)")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS,
                        help="which steps to run (the others' rows already in the results stay); "
                             "fine-tuning and scratch runs reuse --work's cache and heads")
    parser.add_argument("--rows-from", nargs="*", default=[], metavar="LOG",
                        help="also take the rows an interrupted run printed to LOG")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    if not args.data_root or not args.weights_dir:
        raise SystemExit("pass --data-root and --weights-dir")
    sizes = {k: int(v) for k, v in _pairs(args.image_size, "--image-size").items()}
    tuned = _pairs(args.tuned, "--tuned")
    weights = os.path.join(args.weights_dir, WEIGHT_FILES[args.backbone])
    env = process_env()
    env.setdefault("FEATCACHE_WEIGHTS_DIR", args.weights_dir)
    work = args.work or tempfile.mkdtemp(prefix="finetune-gain-")

    name = args.name or f"finetune_gain_{args.backbone}"
    load_before = os.getloadavg()
    rows = [r for log in args.rows_from for r in _rows_from_log(log)]
    for dataset in args.datasets:
        rows += run_dataset(dataset, os.path.join(args.data_root, dataset), args.backbone,
                            sizes.get(dataset, 224), weights, tuned.get(dataset, ""),
                            args.scratch_epochs, os.path.join(work, dataset), env, set(args.runs))
    import fcntl

    RESULTS.mkdir(parents=True, exist_ok=True)
    lock = open(RESULTS / f".{name}.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # several invocations may merge into one file
    previous = RESULTS / f"{name}.json"
    kept, meta = [], {}
    new_keys = {(r["dataset"], r["method"].split(" (+")[0]) for r in rows}
    if previous.exists():  # merge: the rows not run now stay
        old = json.loads(previous.read_text())
        kept = [r for r in old["rows"] if (r["dataset"], r["method"].split(" (+")[0]) not in new_keys]
        meta = old["meta"]
    from featcache.hardware import cpu_info

    cpu = cpu_info().to_json()
    # other jobs on the machine slow every step alike; the load says how busy it was
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    def per_dataset(key):  # older results files kept these as one string
        value = meta.get(key)
        return value if isinstance(value, dict) else {}

    meta = {**meta, "machine": machine(), "cpu": cpu, "load_average": {
        **per_dataset("load_average"), **{d: load for d in args.datasets}}, "runs": {
        **per_dataset("runs"), **{d: {"image_size": sizes.get(d, 224), "tuned": tuned.get(d, "")}
                                  for d in args.datasets}}}
    order = {d: i for i, d in enumerate(["flowers5", "hymenoptera", "cats_dogs"])}
    steps = ["frozen logreg", "frozen dense256", "best frozen", "fine-tuned, defaults",
             "fine-tuned, tuned", "from scratch"]
    rows = sorted(kept + rows, key=lambda r: (order.get(r["dataset"], 99), next(
        (i for i, step in enumerate(steps) if r["method"].startswith(step)), 99)))
    columns = [("dataset", "dataset"), ("image_size", "px"), ("method", "method"),
               ("val_accuracy", "val accuracy"), ("seconds", "seconds"),
               ("seconds_per_epoch", "s/epoch"), ("epochs", "epochs")]
    table = markdown_table([{**r, "seconds_per_epoch": r.get("seconds_per_epoch") or "—",
                             "epochs": r.get("epochs") or "—"} for r in rows], columns)
    runs = [r for r in rows if r["method"].startswith("fine-tuned")]
    detail_columns = [("dataset", "dataset"), ("method", "run"), ("flags", "flags"),
                      ("before_finetune", "val acc before update"), ("kept_epoch", "kept epoch"),
                      ("from_layer", "unfrozen from"), ("trainable_layers", "layers"),
                      ("images_per_second", "train img/s")]
    # rows from older runs may lack some columns
    detail = markdown_table([{k: r.get(k, "—") for k, _ in detail_columns} for r in runs],
                            detail_columns)
    text = (f"# Fine-tuning gain ({args.backbone})\n\n{machine_line(meta)}\nCPU flags: "
            f"{' '.join(cpu['flags'])} (native bfloat16: {cpu['native_bfloat16']}).\n"
            f"Targets: {'; '.join(f'{k} {v}' for k, v in TARGETS.items())}.\n\n{table}\n{detail}")
    write_results(name, meta, rows, text)
    lock.close()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
