"""Demo data for the browser tests and screenshots: real metric points through the metric store."""

import io
import math

from tracker import metric_store, services
from tracker.models import Experiment, Param, Run, RunStatus, RunTag


def metric_points(steps, offset=0.0):
    points = []
    for step in range(steps):
        points.append({"key": "train/loss", "value": 2.0 * math.exp(-step / 80) + 0.05 * math.sin(step / 3) + offset,
                       "step": step, "timestamp": 1_700_000_000 + step, "epoch": step / 100})
        points.append({"key": "val/acc", "value": 1 - math.exp(-step / 120) * 0.9 - offset / 4,
                       "step": step, "timestamp": 1_700_000_000 + step, "epoch": step / 100})
    return points


def make_experiment(workspace, owner, runs=3, steps=300, name="cifar10-resnet"):
    experiment = Experiment.objects.create(
        workspace=workspace, name=name, created_by=owner,
        description="ResNet-18 on CIFAR-10, sweeping the learning rate and optimizer.",
        tags={"dataset": "cifar10", "team": "vision"},
    )
    made = []
    for i in range(runs):
        status = RunStatus.COMPLETED if i else RunStatus.RUNNING
        run = Run.objects.create(experiment=experiment, name=f"resnet18-lr{0.1 / (i + 1):g}", created_by=owner,
                                 status=status, source_note="git 3f9c2e1 (main)")
        run.move_to(RunStatus.RUNNING)
        Param.objects.bulk_create([
            Param(run=run, key="lr", value=f"{0.1 / (i + 1):g}"),
            Param(run=run, key="optimizer", value="sgd" if i % 2 else "adam"),
            Param(run=run, key="batch_size", value="128"),
            Param(run=run, key="epochs", value="3"),
        ])
        RunTag.objects.create(run=run, key="stage", value="sweep")
        result = metric_store.ingest(run, metric_points(steps, offset=i * 0.1))
        assert not result.errors, result.errors
        if i:
            run.finish(RunStatus.COMPLETED)
        else:
            run.set_progress(180, 300)
        services.store_artifact(run, "outputs/metrics.csv",
                                io.BytesIO(b"epoch,loss,acc\n1,1.2,0.61\n2,0.8,0.74\n3,0.55,0.83\n"))
        services.store_artifact(run, "outputs/config.json", io.BytesIO(b'{"lr": 0.1, "optimizer": "adam"}'))
        services.store_artifact(run, "logs/train.log", io.BytesIO(b"epoch 1 loss 1.2\nepoch 2 loss 0.8\n"))
        made.append(run)
    return experiment, made
