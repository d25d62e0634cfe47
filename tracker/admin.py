"""Admin console for tracking data.

History stays as it happened: param values, artifact hashes and storage
keys, token hashes, stage timestamps and metric summaries are read-only;
metric points are never added or edited by hand.
"""

from django.contrib import admin

from tracker.models import ApiToken, Artifact, Experiment, Membership, MetricSeries, Param, Run, RunTag, Workspace


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "member_count", "created_at"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]
    inlines = [MembershipInline]

    @admin.display(description="members")
    def member_count(self, obj):
        return obj.memberships.count()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__name", "workspace__slug"]
    list_select_related = ["user", "workspace"]
    autocomplete_fields = ["user", "workspace"]


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "archived", "created_by", "created_at", "updated_at"]
    list_filter = ["archived", "workspace"]
    search_fields = ["name", "description", "workspace__name"]
    list_select_related = ["workspace", "created_by"]
    autocomplete_fields = ["workspace", "created_by"]
    readonly_fields = ["created_at", "updated_at"]
    date_hierarchy = "created_at"


class ParamInline(admin.TabularInline):
    """Params are immutable once set: shown, never changed or removed here."""

    model = Param
    extra = 0
    fields = ["key", "value"]
    readonly_fields = ["key", "value"]
    can_delete = False

    def has_change_permission(self, request, obj=None):
        return False


class RunTagInline(admin.TabularInline):
    model = RunTag
    extra = 1
    fields = ["key", "value"]


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0
    fields = ["path", "size", "sha256", "content_type", "created_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


STAGE_FIELDS = ["queued_at", "preparing_at", "scaling_at", "running_at", "post_processing_at", "start_time", "end_time"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["display_name", "experiment", "workspace_name", "status", "created_by", "created_at", "end_time"]
    list_filter = ["status", "experiment__workspace", "created_at"]
    search_fields = ["id", "name", "experiment__name", "created_by__username", "source_note"]
    list_select_related = ["experiment__workspace", "created_by"]
    autocomplete_fields = ["experiment", "created_by", "parent_run"]
    readonly_fields = ["id", "created_at", *STAGE_FIELDS, "progress_current", "progress_total",
                       "progress_updated_at"]
    fieldsets = [
        (None, {"fields": ["id", "experiment", "name", "status", "status_reason", "created_by", "parent_run",
                           "source_note"]}),
        ("Stages", {"fields": ["created_at", *STAGE_FIELDS]}),
        ("Progress", {"fields": ["progress_current", "progress_total", "progress_updated_at"]}),
    ]
    inlines = [ParamInline, RunTagInline, ArtifactInline]
    date_hierarchy = "created_at"

    @admin.display(description="name", ordering="name")
    def display_name(self, obj):
        return obj.display_name

    @admin.display(description="workspace", ordering="experiment__workspace__name")
    def workspace_name(self, obj):
        return obj.experiment.workspace.name


@admin.register(Param)
class ParamAdmin(admin.ModelAdmin):
    """Read-only: a param is history. Adding one for a run that lacks it is allowed."""

    list_display = ["key", "value_short", "run"]
    search_fields = ["key", "value", "run__name", "run__id"]
    list_select_related = ["run"]
    autocomplete_fields = ["run"]

    def get_readonly_fields(self, request, obj=None):
        return ["run", "key", "value"] if obj else []

    @admin.display(description="value")
    def value_short(self, obj):
        return obj.value if len(obj.value) <= 80 else obj.value[:79] + "…"


@admin.register(RunTag)
class RunTagAdmin(admin.ModelAdmin):
    list_display = ["key", "value", "run"]
    search_fields = ["key", "value", "run__name"]
    list_select_related = ["run"]
    autocomplete_fields = ["run"]


@admin.register(MetricSeries)
class MetricSeriesAdmin(admin.ModelAdmin):
    """Summaries follow the stored points (tracker.metric_store): viewable and deletable, never typed in."""

    list_display = ["key", "run", "count", "last_step", "last_value", "min_value", "max_value", "nonfinite_count"]
    search_fields = ["key", "run__name", "run__id"]
    list_filter = ["run__experiment__workspace"]
    list_select_related = ["run"]
    readonly_fields = ["run", "key", "count", "nonfinite_count", "last_step", "last_value", "last_timestamp",
                       "last_epoch", "min_value", "max_value", "first_timestamp", "max_step"]

    def has_add_permission(self, request):
        return False


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["path", "run", "size", "content_type", "created_at"]
    search_fields = ["path", "run__name", "run__id", "sha256"]
    list_select_related = ["run"]
    readonly_fields = ["run", "path", "size", "sha256", "storage_key", "content_type", "created_at"]

    def has_add_permission(self, request):
        return False  # bytes arrive through the API or a job, which store the file first


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "hint", "run", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at", "created_at"]
    search_fields = ["name", "user__username", "hint"]
    list_select_related = ["user", "run"]
    readonly_fields = ["user", "token_hash", "hint", "run", "created_at", "last_used_at"]
    actions = ["revoke_tokens"]

    def has_add_permission(self, request):
        return False  # tokens are minted on the tokens page or by jobs, so the secret is shown once

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset):
        count = 0
        for token in queryset.filter(revoked_at__isnull=True):
            token.revoke()
            count += 1
        self.message_user(request, f"Revoked {count} token(s).")
