"""Train a small CNN on scikit-learn's digits (1,797 real 8×8 images): offline, seconds on CPU, CUDA when present.

    python train.py --epochs 3 --lr 0.001 --batch-size 64

Inside a Torchlight job `tl.active_run()` finds the run from TORCHLIGHT_URL /
TORCHLIGHT_RUN_ID / TORCHLIGHT_TOKEN; outside one it trains without logging.
Under torchrun (WORLD_SIZE > 1) it uses DistributedDataParallel and only
rank 0 logs and writes ./outputs. Resume: --resume PATH, or the checkpoint
Torchlight hands over in TORCHLIGHT_RESUME_FROM.
"""

import argparse
import gzip
import importlib.util
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from model import DigitsCNN
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

try:
    import tracker.client as tl
except ImportError:  # not installed next to Torchlight: train anyway, log nothing
    tl = None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--resume", default=os.environ.get("TORCHLIGHT_RESUME_FROM", ""), help="checkpoint.pt to continue from")
    parser.add_argument("--outputs", default="outputs")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (a model this small runs best on 1)")
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or not 0 < args.val_fraction < 1 or args.lr <= 0:
        parser.error("--epochs and --batch-size must be >= 1, --lr > 0 and 0 < --val-fraction < 1")
    return args


def setup_distributed():
    """(rank, world_size, device); joins the process group when torchrun started several processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def read_digits():
    """(images N×1×8×8 in [0, 1], labels N): scikit-learn's bundled digits, read from its CSV.

    Same data as sklearn.datasets.load_digits(), without importing scikit-learn
    (seconds of start-up saved on every run); falls back to load_digits().
    """
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.exists():
        with gzip.open(csv, "rt") as f:
            rows = [[int(float(v)) for v in line.split(",")] for line in f if line.strip()]
        data = torch.tensor(rows, dtype=torch.float32)
        return data[:, :64].reshape(-1, 1, 8, 8) / 16.0, data[:, 64].long()
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0, torch.tensor(digits.target)


def load_data(val_fraction, seed):
    images, labels = read_digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(labels) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[val], labels[val])


def open_tracking(rank):
    """The Torchlight run to log to (rank 0 inside a job), or None."""
    if tl is None or rank != 0 or not os.environ.get("TORCHLIGHT_RUN_ID"):
        if rank == 0:
            print("tracking: off (not running inside a Torchlight job)", flush=True)
        return None
    return tl.active_run()


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
    return total_loss / seen, correct / seen


def main():
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rank, world_size, device = setup_distributed()
    torch.manual_seed(args.seed)
    train_set, val_set = load_data(args.val_fraction, args.seed)
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, seed=args.seed) if world_size > 1 else None
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler)
    val_loader = DataLoader(val_set, batch_size=256)

    model = DigitsCNN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_epoch, step = 0, 0
    if args.resume:
        checkpoint = torch.load(args.resume, map_location=device, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, step = checkpoint["epoch"], checkpoint["step"]
        print(f"resumed from {args.resume} at epoch {start_epoch}, step {step}", flush=True)
    net = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    loss_fn = nn.CrossEntropyLoss()

    run = open_tracking(rank)
    if run is not None:
        run.log_params({"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "world_size": world_size,
                        "device": device.type, "train_images": len(train_set), "val_images": len(val_set)})
    if rank == 0:
        print(f"training on {device} with {world_size} process(es): {len(train_set)} train / {len(val_set)} val images",
              flush=True)

    total_epochs = start_epoch + args.epochs
    for epoch in range(start_epoch, total_epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        began = time.time()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            logits = net(images)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            step += 1
            if run is not None:
                accuracy = (logits.argmax(1) == labels).float().mean().item()
                run.log_metrics({"train/loss": loss.item(), "train/accuracy": accuracy}, step=step)
        if rank == 0:
            val_loss, val_acc = evaluate(model, val_loader, device, loss_fn)
            print(f"epoch {epoch + 1}/{total_epochs}: loss {loss.item():.4f}  val_loss {val_loss:.4f}  "
                  f"val_accuracy {val_acc:.4f}  ({time.time() - began:.1f} s)", flush=True)
            if run is not None:
                run.log_metrics({"val/loss": val_loss, "val/accuracy": val_acc, "epoch": epoch + 1}, step=step)
                run.set_progress(epoch + 1, total_epochs)

    if rank == 0:
        outputs = Path(args.outputs)
        outputs.mkdir(parents=True, exist_ok=True)
        model.cpu()
        torch.save(model.state_dict(), outputs / "model.pt")
        torch.save(model, outputs / "model_full.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": total_epochs, "step": step},
                   outputs / "checkpoint.pt")
        print(f"saved {outputs / 'model.pt'}, {outputs / 'model_full.pt'} and {outputs / 'checkpoint.pt'}", flush=True)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
