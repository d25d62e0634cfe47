from django.contrib import admin

from jobs.models import ClusterNode, ComputeCluster, Environment, Job, JobNode


@admin.register(ComputeCluster)
class ComputeClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "kind", "min_nodes", "max_nodes", "gpus_per_node"]
    list_filter = ["kind"]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "requirements_hash", "created_at"]


class JobNodeInline(admin.TabularInline):
    model = JobNode
    extra = 0
    readonly_fields = ["node_rank", "attempt", "status", "worker", "claimed_at", "heartbeat_at", "exit_code", "reason"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["pk", "run", "cluster", "node_count", "procs_per_node", "backend", "created_at"]
    list_select_related = ["run", "cluster"]
    raw_id_fields = ["run", "resume_from"]
    inlines = [JobNodeInline]


@admin.register(ClusterNode)
class ClusterNodeAdmin(admin.ModelAdmin):
    list_display = ["name", "cluster", "hostname", "pid", "status", "last_heartbeat", "managed"]
    list_filter = ["status"]
