"""Run the full protection benchmark (resumable) and publish its report into docs/eval/.

    nice -n 10 python bench/eval_full.py --people 30          # any `facecloak eval` option passes through
    python bench/eval_full.py --publish-only                  # copy an existing run's report

The run folder keeps records.jsonl, so an interrupted run continues where it stopped (--resume is
always on here); `--people K` with K = people already done just rebuilds results.json and the report.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

from facecloak.assets import cache_dir
from facecloak.cli import main as facecloak_main

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ("results.json", "report.md", "psr_vs_budget.png", "psr_vs_jpeg.png", "examples.png")


def publish(run_dir: Path, docs_dir: Path) -> None:
    """Copy the report files; PNGs are re-saved palette-quantised to keep the repository small."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED:
        src = run_dir / name
        if not src.exists():
            continue
        if src.suffix == ".png":
            Image.open(src).convert("RGB").quantize(colors=256).save(docs_dir / name, optimize=True)
        else:
            shutil.copyfile(src, docs_dir / name)
        print(f"published {docs_dir / name} ({(docs_dir / name).stat().st_size // 1024} KiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default=str(cache_dir() / "eval-full"), help="where records and results live")
    parser.add_argument("--docs-dir", default=str(ROOT / "docs" / "eval"))
    parser.add_argument("--publish-only", action="store_true")
    args, passthrough = parser.parse_known_args(argv)
    run_dir = Path(args.run_dir)
    if not args.publish_only:
        code = facecloak_main(["eval", "-o", str(run_dir), "--resume", *passthrough])
        if code:
            return code
    publish(run_dir, Path(args.docs_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
