"""Compute clusters, environments and training jobs."""

from django.db import models
from django.utils import timezone

from tracker.models import Workspace


class ClusterKind(models.TextChoices):
    LOCAL = "local", "Local (the supervisor runs its nodes on this machine)"
    EXTERNAL = "external", "External (workers started on other machines)"


class ComputeCluster(models.Model):
    """A named pool of nodes with one RQ queue; jobs and exports run on its workers."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="clusters")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=ClusterKind.choices, default=ClusterKind.LOCAL)
    vm_size = models.CharField(max_length=100, blank=True, help_text="Free text, like Azure's vm_size.")
    cpus_per_node = models.PositiveIntegerField(default=1)
    memory_gb_per_node = models.FloatField(default=4)
    gpus_per_node = models.PositiveIntegerField(default=0)
    gpu_type = models.CharField(max_length=100, blank=True)
    min_nodes = models.PositiveIntegerField(default=0)
    max_nodes = models.PositiveIntegerField(default=2)
    idle_seconds_before_scaledown = models.PositiveIntegerField(default=120)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_cluster_name_per_workspace")]

    def __str__(self):
        return self.name

    @property
    def queue_name(self):
        """The RQ queue this cluster's workers listen on."""
        return f"torchlight.cluster.{self.pk}"
