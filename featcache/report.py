"""All terminal text of the command line: each function returns the lines to print.

The CLI prints these strings as they are (`--json` output is the results'
`to_json()` instead). Nothing here computes anything or touches a file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: importing extract would pull in h5py
    from .extract import ExtractSummary


def printable(text: str) -> str:
    """A file name as valid UTF-8 for the terminal: undecodable bytes (non-UTF-8
    names arrive as surrogate escapes) are shown as \\xNN instead of crashing print."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def _splits(splits: dict[str, int]) -> str:
    return " · ".join(f"{name} {rows}" for name, rows in splits.items()) or "none"


def _rows(pairs: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in pairs)


def extract_summary(s: ExtractSummary, max_listed: int = 10) -> str:
    head = f"featcache extract: {s.backbone} -> {shape_text(s.feature_shape)} {s.dtype} features per image"
    rate = f"{s.images_per_second:.1f} img/s" if s.images_extracted else "nothing to do"
    pairs = [
        ("cache", f"{s.cache}  (fingerprint {s.fingerprint_hash[:12]})"),
        ("images", f"{s.images_extracted} extracted in {s.extract_seconds:.1f} s ({rate}); "
                   f"{s.shards_reused} shard(s) already done"),
        ("rows", _splits(s.splits)),
        ("runtime", f"{s.runtime}, {s.precision}"),
        ("written", f"{human_bytes(s.bytes_written)} in {s.shards_written} shard(s); "
                    f"cache holds {human_bytes(s.cache_bytes)}"),
        ("time", " · ".join(f"{k.replace('_', ' ')} {v:.1f}s" for k, v in s.timing.items())
                 + f" · total {s.seconds:.1f}s"),
    ]
    if s.quantization:
        fid, cal = s.quantization["fidelity"], s.quantization["calibration"]
        pairs.append(("int8", f"features move {fid['relative_l2']:.1%} from float32 (median "
                              f"relative L2 over {fid['held_out']} held-out training images, worst "
                              f"{fid['worst']:.1%}); calibrated on {cal['images']} training images "
                              f"(seed {cal['seed']})"))
    if s.decode_bound:
        hint = ("; --decode fast reads large JPEGs several times faster" if s.decode == "exact"
                else "; more cores (or --workers) would help")
        pairs.append(("pace", f"decode-bound: the backbone waited {s.timing['wait_for_decode']:.1f} s "
                              f"for decoded images ({s.decode} decode){hint}"))
    if s.ignored:
        pairs.append(("ignored", f"{s.ignored} file(s) passed over: hidden, not images, or "
                                 "symlink loops (see featcache info --json)"))
    if s.skipped:
        listed = "; ".join(f"{printable(x['path'])} ({x['reason']})" for x in s.skipped[:max_listed])
        more = f"; and {len(s.skipped) - max_listed} more" if len(s.skipped) > max_listed else ""
        pairs.append(("skipped", f"{len(s.skipped)}: {listed}{more}"))
    for warning in s.warnings:
        pairs.append(("warning", printable(warning)))
    return head + "\n" + _rows(pairs)


def cache_info(manifest: dict) -> str:
    fp = manifest["fingerprint"]
    shards = manifest["shards"]
    if "fused" in fp:
        parts = " + ".join(f"{f.get('backbone')} {shape_text(f.get('feature_shape', []))}"
                           for f in fp["fused"])
        return _rows([("fused", f"{parts} -> {shape_text(fp['feature_shape'])} {fp['dtype']}"),
                      ("from", ", ".join(manifest.get("extraction", {}).get("fused_from", []))),
                      ("rows", " · ".join(f"{k} {v['rows']}" for k, v in manifest["splits"].items())),
                      ("fingerprint", manifest["fingerprint_hash"])])
    weights = manifest.get("weights", {})
    if weights.get("source") == "none":
        weights_text = f"random (seed {weights.get('seed')}): features are meaningless"
    else:
        weights_text = f"{weights.get('source')} {weights.get('file')} sha256 {str(weights.get('sha256'))[:16]}"
    skipped = sum(v["skipped"] for v in manifest["splits"].values())
    rows = " · ".join(
        f"{k} {v['rows']}" + (f" ({v['skipped']} skipped)" if v["skipped"] else "")
        for k, v in manifest["splits"].items())
    v = fp["versions"]
    pairs = [
        ("backbone", f"{fp['backbone']} ({fp['builder']}), "
                     f"layer {fp['layer'] or manifest.get('extraction', {}).get('tap', 'final output')}, "
                     f"pooling {fp['pooling']}"),
        ("input", f"{fp['input_size'][0]}x{fp['input_size'][1]}, {fp['resize']['method']} "
                  f"{fp['resize']['aspect']}, {fp['resize'].get('decode', 'exact')} decode, "
                  f"preprocessing {fp['preprocessing']['mode']}"),
        ("features", f"{shape_text(fp['feature_shape'])} {fp['dtype']} per image"),
        ("runtime", f"{(fp.get('runtime') or {}).get('name', 'keras')}, "
                    f"{fp.get('precision', 'float32')}"
                    + (f" (int8 features {manifest['quantization']['fidelity']['relative_l2']:.1%} "
                       "from float32)" if manifest.get("quantization") else "")),
        ("weights", weights_text),
        _classes_row(manifest),
        ("rows", rows),
        ("shards", f"{len(shards)}, {human_bytes(sum(s['bytes'] for s in shards))}"),
        ("skipped", str(skipped)),
        ("source", manifest["source"]["data"]),
        ("versions", f"keras {v['keras']}, {v['backend']} {v['backend_version']}, pillow {v['pillow']}"),
        ("fingerprint", manifest["fingerprint_hash"]),
        ("updated", manifest.get("updated", "?")),
    ]
    return _rows(pairs)


def _classes_row(manifest: dict) -> tuple[str, str]:
    classes = manifest["class_names"]
    if manifest.get("source", {}).get("multi_label"):
        from .multilabel import vocabulary

        labels = vocabulary(classes)
        return ("labels", f"{len(labels)} (multi-label, {len(classes)} distinct sets): "
                          f"{', '.join(labels[:12])}" + (" ..." if len(labels) > 12 else ""))
    return ("classes", f"{len(classes)}: {', '.join(classes[:12])}" + (" ..." if len(classes) > 12 else ""))


def _label_table(metrics: dict) -> list[str]:
    """A multi-label head's scores, and per label its threshold, precision, recall, F1, AP."""
    names = metrics["label_names"]
    width = max(8, *(len(n) for n in names))
    lines = [f"  micro F1 {metrics['micro_f1']:.4f} · macro F1 {metrics['macro_f1']:.4f} · mAP "
             f"{metrics['mean_average_precision']:.4f} (at 0.5: micro F1 "
             f"{metrics['micro_f1_at_0.5']:.4f}) · exact sets {metrics['accuracy']:.4f}",
             f"  {'label'.ljust(width)}  threshold  precision  recall     f1     AP  support"]
    for name in names:
        m = metrics["per_label"][name]
        ap = "    -" if m["average_precision"] is None else f"{m['average_precision']:5.3f}"
        lines.append(f"  {name.ljust(width)}  {m['threshold']:9.3f}  {m['precision']:9.3f}  "
                     f"{m['recall']:6.3f}  {m['f1']:5.3f}  {ap}  {m['support']:7d}")
    return lines


def _class_table(metrics: dict) -> list[str]:
    if metrics.get("multi_label"):
        return _label_table(metrics)
    names = metrics["class_names"]
    width = max(8, *(len(n) for n in names))
    lines = [f"  {'class'.ljust(width)}  precision  recall     f1  support"]
    for name in names:
        m = metrics["per_class"][name]
        lines.append(f"  {name.ljust(width)}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}"
                     f"  {m['support']:7d}")
    if len(names) <= 12:
        lines.append("  confusion matrix (rows: true class, columns: predicted)")
        cell = max(5, *(len(str(v)) for row in metrics["confusion_matrix"] for v in row))
        for name, row in zip(names, metrics["confusion_matrix"]):
            lines.append(f"  {name.ljust(width)}  " + " ".join(str(v).rjust(cell) for v in row))
    return lines


def metrics_text(metrics: dict, title: str) -> str:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix as text."""
    if metrics.get("multi_label"):
        return "\n".join([title, f"  {metrics['rows']} rows, multi-label", *_label_table(metrics)])
    summary = (f"  accuracy {metrics['accuracy']:.4f} on {metrics['rows']} rows"
               + (f" · top-5 {metrics['top5_accuracy']:.4f}" if "top5_accuracy" in metrics else "")
               + f" · macro F1 {metrics['macro_f1']:.4f} · log loss {metrics['log_loss']:.4f}"
               + (f" · ECE {metrics['ece']:.4f}" if "ece" in metrics else ""))
    return "\n".join([title, summary, *_class_table(metrics)])


def train_summary(s) -> str:
    """One screen for `featcache train-head`."""
    where = "in memory" if s.in_memory else "streamed from disk"
    head = f"featcache train-head: {s.head} (train {s.train_rows} · val {s.val_rows}, {where})"
    accuracy = (f"{s.val_accuracy:.4f} on val" if s.val_accuracy is not None
                else "no validation split: scores below are on train (optimistic)")
    if s.metrics.get("multi_label"):  # accuracy: the share of images whose whole label set is right
        tuned = "on out-of-fold train scores" if s.notes.get("thresholds") else "on val"
        accuracy = (f"micro F1 {s.metrics['micro_f1']:.4f}, exact label sets {s.val_accuracy:.4f} "
                    f"on val, thresholds tuned {tuned}" if s.val_accuracy is not None
                    else "no validation split: thresholds 0.5, scores below are on train")
    training = f"{s.seconds:.1f} s"
    if "epochs_run" in s.notes:
        training += f", {s.notes['epochs_run']} epochs"
        if s.notes.get("best_epoch") is not None:
            training += f", kept epoch {s.notes['best_epoch'] + 1} (lowest validation loss)"
    if "top5_accuracy" in s.metrics:
        accuracy += f", top-5 {s.metrics['top5_accuracy']:.4f}"
    pairs = [("accuracy", f"{accuracy} (train {s.train_accuracy:.4f})"),
             ("training", training),
             ("wrote", f"{s.out}: {', '.join(s.files)}")]
    if "calibration" in s.metrics:
        c = s.metrics["calibration"]
        pairs.append(("calibrated", f"{c['method']}, T = {c['temperature']:.3f}: ECE on {c['split']} "
                                    f"{c['ece_before']:.4f} -> {c['ece_after']:.4f}, log loss "
                                    f"{c['log_loss_before']:.4f} -> {c['log_loss_after']:.4f}"))
    if "selection" in s.notes:
        measure = "mean average precision" if s.metrics.get("multi_label") else "accuracy"
        pairs.append(("chosen", f"by out-of-fold {measure} on train among "
                                f"{', '.join(s.notes.get('compared', []))}"))
    if "search" in s.notes:
        found = s.notes["search"]
        pairs.append(("search", f"best {found['param']} = {found['best']} "
                                f"({found['folds']}-fold CV over {found['grid']})"))
    return "\n".join([head, _rows(pairs), *_class_table(s.metrics)])


def compare_summary(r) -> str:
    """`featcache compare`: the leaderboard, the winner and where things were written."""
    multi = r.multi_label
    if multi:  # (column title, row key, format)
        columns = [("cv mAP", "cv_map", "7.4f"), ("val micro F1", "val_micro_f1", "12.4f"),
                   ("macro F1", "val_macro_f1", "8.4f"), ("val mAP", "val_map", "7.4f"),
                   ("exact sets", "val_exact_sets", "10.3f")]
    else:
        columns = [("cv acc", "cv_accuracy", "7.4f"), ("val acc", "val_accuracy", "7.4f"),
                   ("macro F1", "val_macro_f1", "8.4f"), ("log loss", "val_log_loss", "8.4f"),
                   ("ECE", "val_ece", "6.3f")]
    lines = [f"featcache compare: {r.cache} ({r.folds}-fold CV on train, grouped by image"
             + ("; multi-label" if multi else "") + f"; {r.seconds:.1f} s)",
             f"  {'#':>2}  {'head':<14} "
             + " ".join(title.rjust(int(fmt.split('.')[0])) for title, _, fmt in columns)
             + f" {'fit s':>7} {'ms/1k':>7} {'bytes':>9}  chosen"]

    def num(value, fmt):
        return format(value, fmt) if value is not None else "-".rjust(int(fmt.split(".")[0]))

    for row in r.rows:
        if row["status"] != "ok":
            lines.append(f"  {'':>2}  {row['head']:<14} {row['status']} "
                         f"(after {row.get('fit_seconds', 0):.1f} s)")
            continue
        chosen = " ".join(f"{k}={v}" for k, v in (row.get("selected") or {}).items())
        lines.append(f"  {row['rank']:>2}  {row['head']:<14} "
                     + " ".join(num(row.get(key), fmt) for _, key, fmt in columns)
                     + f" {row['fit_seconds']:7.1f} {row['predict_ms_per_1000']:7.1f} "
                     f"{row['model_bytes']:9d}  {chosen}")
    measure = "mean average precision" if multi else "accuracy"
    lines.append(f"winner: {r.winner} (best out-of-fold {measure} on train) -> {r.winner_dir}")
    lines.append(f"wrote: {', '.join(os.path.basename(f) for f in r.files)} in {r.out}")
    lines.append(f"next: featcache predict --model {r.winner_dir} IMAGES")
    return "\n".join(lines)


def audit_summary(r, listed: int = 3) -> str:
    """`featcache audit`: counts per kind, leaks first, the top few of each, and the files."""
    from .data_audit.kinds import KIND_TITLES, KINDS

    lines = [f"featcache audit: {r.cache} ({_splits(r.images)}; {r.seconds:.1f} s, from cached "
             f"features; near duplicates at cosine similarity >= {r.threshold:.2f})"]
    for kind in KINDS:
        lines.append(f"  {r.counts[kind]:>6}  {KIND_TITLES[kind]}")
        for f in r.top(kind, listed if kind.startswith("cross-split") or kind == "label-issue" else 0):
            first = f["images"][0]
            if kind == "label-issue":
                lines.append(f"          {first['path']} labelled {first['label']}, head says "
                             f"{f['suggested']} ({f['suggested_probability']:.2f})")
            else:
                lines.append("          " + " = ".join(f"{i['split']}/{i['path']}"
                                                        if not i["path"].startswith(i["split"] + "/")
                                                        else i["path"] for i in f["images"][:2])
                             + f" ({f['score']:.3f})")
    lines.extend(f"note: {n}" for n in r.notes)
    if r.counts["cross-split-exact"] or r.counts["cross-split-near"]:
        lines.append("leaks inflate every validation figure: remove one copy of each pair, then "
                     "extract again")
    if r.files:
        lines.append(f"wrote: {', '.join(os.path.basename(f) for f in r.files)} in {r.out}")
        lines.append(f"open: {r.files[0]}")
    return "\n".join(lines)


def finetune_summary(s) -> str:
    """One screen for `featcache finetune`."""
    epochs = f"epochs {s.first_epoch}-{s.first_epoch + s.epochs_run - 1}" if s.epochs_run else "no epochs"
    resumed = f", resumed after epoch {s.first_epoch + s.resumed_from - 1}" if s.resumed_from else ""
    unfrozen = (f"{len(s.trainable_layers)} backbone layer(s) unfrozen from {s.trainable_layers[0]}"
                if s.trainable_layers else "head only (backbone frozen)")
    head = f"featcache finetune: {unfrozen}, {epochs}{resumed}"
    accuracy = (f"{s.val_accuracy:.4f} on val" if s.val_accuracy is not None else "no validation split")
    if s.head_val_accuracy is not None:
        accuracy += f" (the head alone, frozen features: {s.head_val_accuracy:.4f})"
    pairs = [("accuracy", accuracy)]
    before = getattr(s, "before_finetune", None)
    if before:
        pairs.append(("before tuning", f"{before['val_accuracy']:.4f} on val, loss {before['val_loss']:.4f}"))
    kept = getattr(s, "best_epoch", None)
    if kept is not None:
        pairs.append(("kept", "the starting weights (no epoch beat their validation accuracy)"
                      if kept == 0 else f"fine-tuning epoch {kept} (best validation accuracy, "
                                        "ties: lower loss)"))
    timing = f"{s.seconds:.1f} s"
    if getattr(s, "seconds_per_epoch", None):
        timing += (f", {s.seconds_per_epoch:.1f} s per epoch, {s.images_per_second:.1f} training "
                   f"images/s ({s.precision})")
    pairs.append(("training", timing))
    pixels = getattr(s, "pixels", None) or {}
    if pixels.get("memory_bytes") or pixels.get("file_bytes"):
        where = []
        if pixels["memory_bytes"]:
            where.append(f"{human_bytes(pixels['memory_bytes'])} in memory")
        if pixels["file_bytes"]:
            where.append(f"{human_bytes(pixels['file_bytes'])} in a temporary file in {pixels['file']}")
        pairs.append(("pixels", "decoded once, kept for the run: " + " and ".join(where)))
    pairs.append(("wrote", f"{s.out}: model.keras, metrics.json, history.json, history.png, "
                           "confusion_matrix.png"))
    return "\n".join([head, _rows(pairs), *_class_table(s.metrics)])


def info_summary(path: str, manifest: dict) -> str:
    """`featcache info`: the cache folder, then what it holds (see `cache_info`)."""
    return f"featcache cache {path}\n{cache_info(manifest)}"


def evaluate_summary(metrics: dict, cache: str, split: str) -> str:
    """`featcache evaluate`: the head's scores on one split of a cache."""
    return metrics_text(metrics, f"featcache evaluate: {metrics['head']} on {cache} [{split}]")


def merge_summary(s) -> str:
    """`featcache merge`: one line on the slices joined into the cache."""
    return (f"featcache merge: {s.slices} slices, {s.shards} shards into {s.cache} "
            f"({_splits(s.splits)}); {s.linked} linked, {s.copied} copied"
            + ("; parts/ removed" if s.parts_removed else ""))


def fuse_summary(s) -> str:
    """`featcache fuse`: one line on the fused cache and what to do with it."""
    return (f"featcache fuse: {s.feature_shape[0]} features per row ({_splits(s.splits)}) in "
            f"{s.cache}; train heads on it with featcache train-head --cache {s.cache}")


def verify_summary(r) -> str:
    """`featcache verify`: shards and rows checked, each damaged shard, notes."""
    lines = [f"featcache verify: {r.cache}: {r.shards} shard(s), {r.rows} rows"]
    for d in r.damaged:
        state = "repaired" if d["file"] in r.repaired else "DAMAGED"
        lines.append(f"  {state}: {d['file']} ({d['split']}, {d['rows']} rows): "
                     + "; ".join(d["problems"]))
    lines.extend(f"  note: {note}" for note in r.notes)
    if r.ok:
        lines.append("  ok" if not r.damaged else "  ok after repair")
    return "\n".join(lines)


def verify_failure(r) -> str:
    """The stderr line of a `featcache verify` that found damage it did not repair."""
    return (f"featcache: {len(r.damaged)} damaged shard(s) in {r.cache}; "
            "run featcache verify --repair to re-extract them")


def backbones_table(listing) -> str:
    """`featcache backbones`: one row per backbone, with its offline weights (a `BackboneListing`)."""
    lines = [f"{'name':<18} {'builder':<36} {'prep':<6} {'size':>4}  {'offline weights':<15}  "
             "fine-tunes (top block)"]
    for row in listing.backbones:
        found = "found" if row["offline_weights"] else ("missing" if listing.weights_dir else "-")
        lines.append(f"{row['name']:<18} {row['builder']:<36} {row['preprocess']:<6} "
                     f"{row['input_size']:>4}  {found:<15}  {row.get('top_block', '')}")
    if not listing.weights_dir:
        lines.append("\n(set --weights-dir or FEATCACHE_WEIGHTS_DIR to check for offline weight files)")
    return "\n".join(lines)


def hardware_text(info: dict) -> str:
    """`featcache hardware`: the CPU and its flags, GPUs, and which precisions run natively."""
    cpu = info["cpu"]
    lines = [f"CPU      {cpu['model']} ({cpu['cores']} cores)",
             f"flags    {' '.join(cpu['flags']) or '(none of the ones that matter)'}",
             f"GPUs     {', '.join(info['gpus']) or 'none'}"
             + (f" (Keras backend: {info['keras_backend']})" if info.get("keras_backend") else "")]
    for name, p in info["precisions"].items():
        state = "native" if p["native"] else "emulated (slower than float32)"
        if name == "int8":
            vnni = {"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu["flags"])
            state = ("with --runtime openvino, opt-in (quantized on your images, its feature "
                     f"error measured); {'VNNI/AMX int8 here' if vnni else 'no VNNI here'}")
        lines.append(f"{name:<9}{state}")
    runtimes = info.get("runtimes") or ["keras"]
    lines.append(f"runtimes {', '.join(runtimes)} installed"
                 + ("" if "openvino" in runtimes else ' (OpenVINO: pip install "featcache[openvino]")'))
    if info.get("auto_runtime"):
        lines.append(f"-> extract runs the backbone with {info['auto_runtime']} here "
                     "(--runtime auto, the default)")
    gains = info.get("bfloat16_gain") or {}
    native_bf16 = info["precisions"]["bfloat16"]["native"]
    if gains and native_bf16:
        shown = ", ".join(f"{name} {gain:.2f}x" for name, gain in gains.items())
        lines.append(f"\nbfloat16 against float32 on such CPUs (measured): {shown}")
    best = [name for name, gain in gains.items() if gain >= 1.3]
    if native_bf16 and best:
        lines.append(f"-> extract {', '.join(best)} with --precision bfloat16 here")
    elif not native_bf16 and not info["gpus"]:
        lines.append("-> keep --precision float32 here (no native bfloat16 or float16)")
    return "\n".join(lines)


def layers_table(listing) -> str:
    """`featcache layers`: a backbone's layers and output shapes (a `LayerListing`)."""
    lines = [f"{listing.backbone} at {listing.image_size}x{listing.image_size} "
             f"({len(listing.layers)} layers; the last conv output is the default tap)"]
    for row in listing.layers:
        shape = "x".join("?" if d is None else str(d) for d in row["output_shape"])
        note = "  (full network only)" if row["needs_top"] else ""
        lines.append(f"  {row['name']:<32} {row['type']:<24} {shape}{note}")
    return "\n".join(lines)


def heads_table(rows: list[dict]) -> str:
    """`featcache heads`: name, kind, description and whether it streams or exports."""
    lines = []
    for row in rows:
        flags = ", ".join(f for f, on in (("streams", row["streams_from_disk"]),
                                           ("exports", row["exportable"])) if on)
        lines.append(f"{row['name']:<14} {row['kind']:<8} {row['description']}"
                     + (f"  [{flags}]" if flags else ""))
    return "\n".join(lines)


def predictions(results: list[dict]) -> str:
    """`featcache predict`: per image, its top classes with scores, or why it failed."""
    lines = []
    for row in results:
        if "error" in row:
            lines.append(f"{printable(row['path'])}: ERROR {row['error']}")
        elif "labels" in row:  # multi-label: the labels over their thresholds, then the top scores
            chosen = ", ".join(row["labels"]) or "(no label over its threshold)"
            ranked = "  ".join(f"{c['label']} {c['score']:.3f}" for c in row["top_k"])
            lines.append(f"{printable(row['path'])}: {chosen}   [{ranked}]")
        else:
            ranked = "  ".join(f"{c['label']} {c['score']:.3f}" for c in row["top_k"])
            lines.append(f"{printable(row['path'])}: {ranked}")
    return "\n".join(lines)


def unreadable_files(failed: int, total: int) -> str:
    """The stderr line of a `featcache predict` that could not read some files."""
    return f"featcache: {failed} of {total} file(s) could not be read"


def export_summary(info: dict) -> str:
    """`featcache export`: the model written and where its classes are."""
    p = info["parity"]
    kind = info.get("format", "keras") + ("" if info.get("quantize", "none") == "none"
                                          else f", {info['quantize']}")
    check = (f"agrees with featcache predict on {p['agreeing']} of {p['count']} images "
             f"({p['agreement']:.1%}), largest probability difference {p['max_abs_difference']:.2g}"
             + ("" if p["passed"] else " -- BELOW the required agreement, kept by --force"))
    return "\n".join([
        f"featcache export: wrote {info['model']} ({kind}; {info['backbone']} + {info['head']}, "
        f"{len(info['class_names'])} classes)",
        _rows([("check", check), ("sidecar", f"{info['sidecar']} (classes, input format)"),
               ("report", info["parity_report"])])])


def feature_export_summary(r) -> str:
    """`featcache export-features`: the file and its rows."""
    return (f"featcache export-features: wrote {r.out} ({r.format}, {human_bytes(r.bytes)}): "
            f"{r.rows} rows ({_splits(r.splits)}), features {shape_text(r.feature_shape)} float32")


def demo_intro(data: str | None) -> str:
    """The demo's first stderr line: what it is about to do."""
    images = f"your images in {data}" if data else "400 CIFAR-10 images shipped with featcache"
    return (f"featcache demo: MobileNet runs once over {images}; then several heads train and "
            "are compared on the cached features")


def demo_summary(result) -> str:
    """`featcache demo`: extraction, leaderboard, time saved, sample predictions, what next."""
    cmp_, winner = result.comparison, result.comparison.winner_dir
    lines = [extract_summary(result.extraction), "", compare_summary(cmp_), ""]
    if result.saved:
        s = result.saved
        lines.append(
            f"time saved (estimate): the {len([r for r in cmp_.rows if r['status'] == 'ok'])} heads "
            f"trained in {s.heads_seconds:.1f} s on cached features; the same {s.passes} passes "
            f"with the frozen base inside model.fit would take about {s.in_fit_seconds:.0f} s "
            f"({s.images} images at the {s.backbone_images_per_second:.0f} img/s the backbone ran "
            "during extraction)")
    lines.append(f"sample predictions of the winner ({cmp_.winner}):")
    for row in result.predictions:
        name = os.path.relpath(row["path"], result.data)
        if "error" in row:
            lines.append(f"  {name}: {row['error']}")
            continue
        top = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["top_k"])
        lines.append(f"  {name} (true: {row['true_label']}): {top}")
    lines += [f"report: {result.report}", f"total: {result.seconds:.1f} s", "",
              f"Next: which head won and why: {cmp_.out}/leaderboard.csv",
              f"  classify your own images: featcache predict --model {winner} IMAGE_OR_FOLDER",
              "  run the demo on your own folder: featcache demo --data YOUR_FOLDER"]
    return "\n".join(lines)


_RESUME_HINTS = {
    "extract": " Finished shards are kept; run the same command again to resume.",
    "demo": " Finished shards are kept; run it again to resume.",
    "finetune": " Finished epochs are checkpointed; add --resume to continue.",
}


def interrupted(command: str) -> str:
    """The stderr line after Ctrl-C: how to pick up where `command` stopped."""
    return f"featcache: interrupted.{_RESUME_HINTS.get(command, '')}"


def deprecated_flag(old: str, new: str) -> str:
    """The stderr note for a flag spelling that still works but is going away."""
    return f"featcache: WARNING: {old} is deprecated and will be removed; use {new}."


def error_line(message: str) -> str:
    """The one stderr line of a failed command (`message` from `FeatcacheError.cli_message`)."""
    return f"featcache: error: {printable(message)}"
