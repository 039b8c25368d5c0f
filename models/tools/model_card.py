"""The demo model card's figures (models/README.md) from metrics.json, so the card cannot drift from the model.

``python models/tools/model_card.py`` rewrites the card's generated table rows (Classes, Input, Validation,
Training) from ``metrics.json``; ``--check`` changes nothing and exits 1 if the card differs (the test suite
checks the same). ``train_demo_model.py`` runs it after writing ``metrics.json``. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parents[1]
CARD, METRICS = MODELS_DIR / "README.md", MODELS_DIR / "metrics.json"


def rows(metrics: dict[str, Any]) -> dict[str, str]:
    """The generated table rows, keyed by their first cell's leading word."""
    classes = ", ".join(f"{i} `{name}`" for i, name in enumerate(metrics["classes"]))
    return {
        "Classes": f"| Classes | {classes} |",
        "Input": f"| Input | RGB, imgsz {metrics['imgsz']} (stride 32); ONNX input is dynamic `batch,3,height,width` |",
        "Validation": (f"| Validation ({metrics['val_images']} held-out images, `metrics.json`) | "
                       f"mAP50 {metrics['mAP50']}, mAP50-95 {metrics['mAP50-95']}, "
                       f"precision {metrics['precision']}, recall {metrics['recall']} |"),
        "Training": (f"| Training | {metrics['train_images']} synthetic images, {metrics['epochs']} epochs, CPU, "
                     f"{metrics['train_minutes']} min |"),
    }


def render(card: str, metrics: dict[str, Any]) -> str:
    """``card`` with its generated rows rewritten; ValueError if one of them is missing from the card."""
    generated, seen, out = rows(metrics), set(), []
    for line in card.split("\n"):
        key = line.split("|")[1].strip().split(" ")[0] if line.startswith("| ") else None
        if key in generated:
            line = generated[key]
            seen.add(key)
        out.append(line)
    if missing := sorted(set(generated) - seen):
        raise ValueError(f"no table row starting '| {missing[0]}' in the model card")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the card differs from metrics.json")
    ap.add_argument("--card", type=Path, default=CARD)
    ap.add_argument("--metrics", type=Path, default=METRICS)
    args = ap.parse_args(argv)
    card = args.card.read_text()
    try:
        updated = render(card, json.loads(args.metrics.read_text()))
    except KeyError as e:
        print(f"{args.metrics}: no {e} entry, which the model card quotes", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"{args.card}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if updated != card:
            print(f"{args.card} differs from {args.metrics}: run python models/tools/model_card.py", file=sys.stderr)
            return 1
        return 0
    args.card.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
