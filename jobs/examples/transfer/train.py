"""Fine-tune torchvision's ResNet-18 on an ImageFolder dataset (train/ and val/ class folders): offline, CPU or CUDA.

    python train.py --data data --epochs 3

`--data` is a folder (or a .zip of one) inside the job's source holding
train/<class>/*.jpg and val/<class>/*.jpg. Pretrained ImageNet weights are
used only when they are already in the torch cache; nothing is downloaded.
"""

import argparse
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from model import build_model
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

try:
    import tracker.client as tl
except ImportError:  # not installed next to Torchlight: train anyway, log nothing
    tl = None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="folder or .zip with train/ and val/ class folders")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--no-pretrained", action="store_true", help="train from scratch even if weights are cached")
    parser.add_argument("--freeze", action="store_true", help="train only the new head (when pretrained)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--outputs", default="outputs")
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or args.image_size < 32 or args.lr <= 0:
        parser.error("--epochs and --batch-size must be >= 1, --image-size >= 32 and --lr > 0")
    return args


def dataset_root(data):
    """The folder holding train/ and val/: `data` itself, or a zip unpacked (members checked) into a temp dir."""
    path = Path(data)
    if path.suffix == ".zip" and path.is_file():
        target = Path(tempfile.mkdtemp(prefix="imagefolder-"))
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                out = (target / info.filename).resolve()
                if not out.is_relative_to(target.resolve()):
                    raise SystemExit(f"{data}: member {info.filename!r} would leave the dataset folder")
            archive.extractall(target)
        path = target
    # A zip of a folder often holds one top folder: look one level down.
    if not (path / "train").is_dir():
        children = [c for c in path.iterdir() if c.is_dir()] if path.is_dir() else []
        if len(children) == 1 and (children[0] / "train").is_dir():
            path = children[0]
    if not (path / "train").is_dir() or not (path / "val").is_dir():
        raise SystemExit(
            f"no ImageFolder dataset at {data!r}: expected {data}/train/<class>/*.jpg and {data}/val/<class>/*.jpg"
        )
    return path


def loaders(root, image_size, batch_size, workers):
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.6, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    val_tf = transforms.Compose([
        transforms.Resize(int(image_size * 1.14)),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    train_set = datasets.ImageFolder(root / "train", train_tf)
    val_set = datasets.ImageFolder(root / "val", val_tf)
    if train_set.classes != val_set.classes:
        raise SystemExit(f"train/ has classes {train_set.classes} but val/ has {val_set.classes}")
    return (
        DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=workers),
        DataLoader(val_set, batch_size=batch_size, num_workers=workers),
        train_set.classes,
    )


def evaluate(model, loader, device, loss_fn):
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            total_loss += loss_fn(logits, labels).item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
    model.train()
    return total_loss / max(seen, 1), correct / max(seen, 1)


def main():
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = dataset_root(args.data)
    train_loader, val_loader, classes = loaders(root, args.image_size, args.batch_size, args.workers)
    model, note = build_model(len(classes), pretrained=not args.no_pretrained)
    print(note, flush=True)
    pretrained = note.startswith("using")
    if args.freeze and pretrained:
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith("fc.")
    model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    run = tl.active_run() if tl is not None and os.environ.get("TORCHLIGHT_RUN_ID") else None
    if run is None:
        print("tracking: off (not running inside a Torchlight job)", flush=True)
    else:
        run.log_params({"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "image_size": args.image_size,
                        "classes": ",".join(classes), "pretrained": pretrained, "device": device.type})
        run.set_tag("weights", note)
    print(f"training on {device}: {len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, "
          f"classes {classes}", flush=True)

    step = 0
    for epoch in range(args.epochs):
        began = time.time()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            logits = model(images)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            step += 1
            if run is not None:
                accuracy = (logits.argmax(1) == labels).float().mean().item()
                run.log_metrics({"train/loss": loss.item(), "train/accuracy": accuracy}, step=step)
        val_loss, val_acc = evaluate(model, val_loader, device, loss_fn)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}  val_loss {val_loss:.4f}  "
              f"val_accuracy {val_acc:.4f}  ({time.time() - began:.1f} s)", flush=True)
        if run is not None:
            run.log_metrics({"val/loss": val_loss, "val/accuracy": val_acc, "epoch": epoch + 1}, step=step)
            run.set_progress(epoch + 1, args.epochs)

    outputs = Path(args.outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    torch.save(model.cpu().state_dict(), outputs / "model.pt")
    (outputs / "classes.json").write_text(json.dumps(classes))
    print(f"saved {outputs / 'model.pt'} and {outputs / 'classes.json'}", flush=True)


if __name__ == "__main__":
    main()
