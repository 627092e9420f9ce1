"""A whole benchmark run: per-person records appended to records.jsonl (resumable), then results.json.

records.jsonl starts with a header line holding the config fingerprint; a resumed run only
reuses records written under the same settings.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..anchors import AnchorGallery

from ..errors import BadOptionError
from ..optimise.precision import bf16_convolutions_on
from .harness import Harness, Log, Variant
from .protocol import EvalConfig
from .summary import summarise

SCHEMA = "facecloak-eval/1"
RECORDS = "records.jsonl"
RESULTS = "results.json"
LPIPS_NOTE = ("not measured: no package ships LPIPS weights usable offline here (the `lpips` package loads its "
              "AlexNet/VGG backbone through torchvision, which has no working CPU build on these machines, "
              "and downloads the backbone weights at run time)")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in ("facecloak", "torch", "onnxruntime", "opencv-python-headless", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _git_commit() -> str:
    """The checkout's commit (+ "-dirty" if its code differs), to tie records to the code that made them."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here.parent, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty.strip() else "")


def shard_records_name(shard: tuple[int, int]) -> str:
    """File one shard appends to, so parallel shard processes never write the same file."""
    index, count = shard
    return f"records-{index}-of-{count}.jsonl"


def load_records(path: Path, cfg: EvalConfig) -> list[dict]:
    """Records of a previous run with the same settings; an error if the file holds another run's."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    header = json.loads(lines[0]) if lines else {}
    if header.get("fingerprint") != cfg.fingerprint():
        raise BadOptionError(f"{path} was written with other settings; use another --output folder")
    return [json.loads(line) for line in lines[1:] if line.strip()]


def load_all_records(out_dir: Path, cfg: EvalConfig) -> list[dict]:
    """Records from records.jsonl and every shard file in ``out_dir``, one per person."""
    by_person: dict[str, dict] = {}
    for path in sorted(out_dir.glob("records*.jsonl")):
        for record in load_records(path, cfg):
            by_person.setdefault(record["person"], record)
    return list(by_person.values())


def run_eval(cfg: EvalConfig, out_dir: Path, resume: bool = False, log: Log = lambda msg: None,
             on_person: Callable[[int, dict, list[Variant]], None] | None = None,
             anchors: AnchorGallery | None = None, threads: int = 1,
             shard: tuple[int, int] | None = None) -> dict | None:
    """Evaluate every person not yet recorded, then write and return results.json's content.

    ``on_person(index, record, variants)`` is called after each newly evaluated person (examples figure).
    With ``shard=(k, n)`` only people whose index is k mod n are run, into their own records file,
    and nothing is summarised (returns None): a later run with ``resume`` merges every shard.
    """
    cfg.validate()
    # Records name the precision they were computed in: the core's hardware default becomes an explicit value.
    cfg = replace(cfg, bf16_convolutions=bf16_convolutions_on(cfg.bf16_convolutions))
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise BadOptionError(f"shard must be K/N with 0 <= K < N, got {shard[0]}/{shard[1]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (RECORDS if shard is None else shard_records_name(shard))
    if not resume:  # a fresh unsharded run starts from nothing; a fresh shard only from its own file
        for old in (out_dir.glob("records*.jsonl") if shard is None else [path]):
            old.unlink(missing_ok=True)
    records = load_all_records(out_dir, cfg)
    if not path.exists():
        path.write_text(json.dumps({"schema": SCHEMA, "fingerprint": cfg.fingerprint(), "commit": _git_commit()}) + "\n")
    header = json.loads(path.read_text().splitlines()[0])
    started = time.time()
    harness = Harness(cfg, log=log, anchors=anchors, threads=threads)
    done = {r["person"] for r in records}
    for index, person in enumerate(harness.dataset.people):
        if person.name in done or (shard is not None and index % shard[1] != shard[0]):
            continue
        t0 = time.perf_counter()
        record, variants = harness.run_person(person)
        record["threads"] = threads  # a resumed run reports the threads each person was computed with, not its own
        with path.open("a") as fh:  # one line per person: a killed run keeps every finished person
            fh.write(json.dumps(record) + "\n")
        records.append(record)
        log(f"[{len(records)}/{cfg.people}] {person.name}: {time.perf_counter() - t0:.0f}s "
            + " ".join(f"{k}={v:.0f}s" for k, v in record["seconds"].items()))
        if on_person:
            on_person(index, record, variants)
    if shard is not None:
        return None
    results = build_results(cfg, harness, records, time.time() - started)
    results["environment"].update(threads=recorded_threads(records), commit_at_start=header.get("commit"))
    (out_dir / RESULTS).write_text(json.dumps(results, indent=1) + "\n")
    return results


def recorded_threads(records: list[dict]) -> int | str:
    """The CPU threads the records were computed with: one count, or e.g. "1-2" for a run resumed with
    another count ("unknown" for records written before they kept it)."""
    counts = sorted({r["threads"] for r in records if "threads" in r})
    if len(counts) == 1 and all("threads" in r for r in records):
        return counts[0]
    parts = ([f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else str(counts[0])] if counts else [])
    return ", ".join(parts + (["unknown"] if any("threads" not in r for r in records) else []))


def build_results(cfg: EvalConfig, harness: Harness, records: list[dict], seconds: float) -> dict:
    thresholds = {m: t for m, (t, _) in harness.thresholds.items()}
    ds = harness.dataset
    order = {p.name: i for i, p in enumerate(ds.people)}
    records = sorted(records, key=lambda r: order.get(r["person"], len(order)))
    return {
        "schema": SCHEMA,
        "config": asdict(cfg),
        "fingerprint": cfg.fingerprint(),
        "environment": _versions(),
        "dataset": {
            "people": [r["person"] for r in records],
            "probes_per_person": cfg.probes,
            "gallery": {"identities": len(harness.gallery.identities), "photos": len(harness.gallery.keys),
                        "lfw_people": len(ds.gallery_people), "distractors": len(ds.attacker_distractors)},
            "anchors": {"source": cfg.anchor_source, "identities": len(harness.anchors.names)},
            "apply_failed": sum(sum(r["apply_failed"]) for r in records),
        },
        "thresholds": {m: {"far": cfg.far, "threshold": round(t, 4), "impostor_pairs": n}
                       for m, (t, n) in harness.thresholds.items()},
        "lpips": LPIPS_NOTE,
        "rows": summarise(records, cfg, thresholds),
        "seconds": {"total": round(seconds, 1),
                    "per_person": {r["person"]: r["seconds"] for r in records}},
    }
