"""Make the demo model: a yolo26n trained on synthetic shapes, exported to ONNX twice.

No weights or data sets can be downloaded here, so the data is drawn: circles, squares and
triangles on noisy gradient backgrounds with distractor strokes. Training runs on the CPU
(about 45 minutes on 2 cores for the defaults). Outputs, written to ``models/``:

- ``demo.pt``            the trained ultralytics checkpoint
- ``demo-e2e.onnx``      end-to-end export, output (1, 300, 6): boxes, score, class (no NMS needed)
- ``demo-raw.onnx``      raw export, output (1, 4+nc, anchors): needs NMS
- ``samples/*.jpg|png``  held-out images the Test page offers
- ``metrics.json``       validation metrics the model card quotes (README.md's rows, via model_card.py)

Run: ``python models/tools/train_demo_model.py [--epochs 100] [--train 300] [--val 60]``. Shapes, sizes and
colours follow ``--seed``; PIL's background noise is not seeded, so a re-run gives a similar model, not the
same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle")
MODELS_DIR = Path(__file__).resolve().parents[1]


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def _contrast(rng: random.Random, bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """A colour far enough from the background to be visible."""
    while True:
        c = _colour(rng)
        if sum(abs(a - b) for a, b in zip(c, bg, strict=True)) > 180:
            return c


def _background(rng: random.Random, w: int, h: int) -> Image.Image:
    a, b = _colour(rng), _colour(rng)
    grad = Image.linear_gradient("L").resize((w, h)).rotate(rng.choice([0, 90, 180, 270]), expand=False)
    img = Image.composite(Image.new("RGB", (w, h), a), Image.new("RGB", (w, h), b), grad)
    noise = Image.effect_noise((w, h), rng.uniform(10, 40)).convert("RGB")
    img = Image.blend(img, noise, rng.uniform(0.05, 0.25))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(0, 6)):  # distractor strokes that are not objects
        pts = [(rng.randint(0, w), rng.randint(0, h)) for _ in range(2)]
        draw.line(pts, fill=_colour(rng), width=rng.randint(1, 4))
    return img


def _overlaps(box: tuple[float, float, float, float], boxes: list[tuple[float, float, float, float]]) -> bool:
    x1, y1, x2, y2 = box
    for a1, b1, a2, b2 in boxes:
        iw, ih = min(x2, a2) - max(x1, a1), min(y2, b2) - max(y1, b1)
        if iw > 0 and ih > 0 and iw * ih > 0.1 * min((x2 - x1) * (y2 - y1), (a2 - a1) * (b2 - b1)):
            return True
    return False


def draw_scene(rng: random.Random) -> tuple[Image.Image, list[tuple[int, float, float, float, float]]]:
    """One image and its labels as (class, x1, y1, x2, y2) in pixels."""
    w, h = rng.randint(320, 640), rng.randint(240, 480)
    img = _background(rng, w, h)
    bg = img.getpixel((w // 2, h // 2))
    draw = ImageDraw.Draw(img)
    labels: list[tuple[int, float, float, float, float]] = []
    for _ in range(rng.randint(1, 5)):
        for _attempt in range(20):
            cls = rng.randrange(len(CLASSES))
            size = rng.uniform(0.08, 0.3) * min(w, h)
            cx, cy = rng.uniform(size, w - size), rng.uniform(size, h - size)
            r = size / 2
            if cls == 0:
                pts = None
                box = (cx - r, cy - r, cx + r, cy + r)
            elif cls == 1:
                angle = rng.uniform(0, math.pi / 2)
                pts = [(cx + r * math.sqrt(2) * math.cos(angle + k * math.pi / 2),
                        cy + r * math.sqrt(2) * math.sin(angle + k * math.pi / 2)) for k in range(4)]
            else:
                angle = rng.uniform(0, 2 * math.pi)
                pts = [(cx + r * 1.2 * math.cos(angle + k * 2 * math.pi / 3),
                        cy + r * 1.2 * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
            if pts is not None:
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                box = (min(xs), min(ys), max(xs), max(ys))
            box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
            if _overlaps(box, [lb[1:] for lb in labels]):
                continue
            fill = _contrast(rng, bg)
            if pts is None:
                draw.ellipse(box, fill=fill)
            else:
                draw.polygon(pts, fill=fill)
            labels.append((cls, *box))
            break
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return img, labels


def write_split(root: Path, split: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img, labels = draw_scene(rng)
        w, h = img.size
        img.save(root / "images" / split / f"{i:05d}.jpg", quality=rng.randint(70, 95))
        lines = [f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                 for c, x1, y1, x2, y2 in labels]
        (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")


def write_samples(out: Path, seed: int) -> None:
    """Held-out images for the Test page, drawn with a seed the training set never used."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(4):
        img, _ = draw_scene(rng)
        if i % 2:
            img.save(out / f"shapes-{i + 1}.png")
        else:
            img.save(out / f"shapes-{i + 1}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/yolo-fleet-shapes"))
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--val", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=MODELS_DIR, help="where the model files go (default: models/)")
    args = ap.parse_args()

    from ultralytics import YOLO  # dev-only dependency (requirements-ml.txt)

    root = args.data_dir
    shutil.rmtree(root, ignore_errors=True)
    write_split(root, "train", args.train, args.seed)
    write_split(root, "val", args.val, args.seed + 1)
    data = root / "data.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")

    started = time.time()
    model = YOLO("yolo26n.yaml")  # architecture only: random initial weights, nothing downloaded
    model.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=16, workers=2, device="cpu",
                plots=False, amp=False, seed=args.seed, project=str(root / "runs"), name="demo", exist_ok=True,
                verbose=False)
    minutes = (time.time() - started) / 60
    best = YOLO(str(root / "runs" / "demo" / "weights" / "best.pt"))
    metrics = best.val(data=str(data), imgsz=args.imgsz, device="cpu", plots=False, verbose=False)

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "runs" / "demo" / "weights" / "best.pt", out / "demo.pt")
    e2e = Path(YOLO(str(out / "demo.pt")).export(format="onnx", imgsz=args.imgsz, dynamic=True, nms=False))
    e2e.replace(out / "demo-e2e.onnx")
    # nms left unset: the raw head, (1, 4+nc, anchors), that needs NMS in the server
    raw = Path(YOLO(str(out / "demo.pt")).export(format="onnx", imgsz=args.imgsz, dynamic=True))
    raw.replace(out / "demo-raw.onnx")
    write_samples(out / "samples", args.seed + 1000)

    summary = {
        "classes": list(CLASSES), "train_images": args.train, "val_images": args.val, "epochs": args.epochs,
        "imgsz": args.imgsz, "seed": args.seed, "train_minutes": round(minutes, 1),
        "mAP50": round(float(metrics.box.map50), 3), "mAP50-95": round(float(metrics.box.map), 3),
        "precision": round(float(metrics.box.mp), 3), "recall": round(float(metrics.box.mr), 3),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if (out / "README.md").is_file():  # the model card quotes these figures (model_card.py)
        from model_card import main as write_card  # models/tools/ is this script's sys.path[0]

        write_card(["--card", str(out / "README.md"), "--metrics", str(out / "metrics.json")])


if __name__ == "__main__":
    main()
