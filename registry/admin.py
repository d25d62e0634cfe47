from django.contrib import admin

from registry.models import (
    AliasEvent,
    InferenceRequest,
    ModelAlias,
    ModelFile,
    ModelVersion,
    OnnxExport,
    RegisteredModel,
)


class ModelFileInline(admin.TabularInline):
    model = ModelFile
    extra = 0
    can_delete = False
    readonly_fields = ("path", "size", "sha256", "storage_key")


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "workspace", "created_at")
    list_filter = ("workspace",)
    search_fields = ("name",)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("model", "version", "flavour", "framework", "created_at")
    list_filter = ("flavour", "framework")
    inlines = [ModelFileInline]

    def get_readonly_fields(self, request, obj=None):
        # Versions are immutable: only the description and tags stay editable.
        if obj is None:
            return ()
        return [f.name for f in self.model._meta.fields if f.name not in ModelVersion.EDITABLE_FIELDS]


admin.site.register(ModelAlias)
admin.site.register(AliasEvent)


@admin.register(OnnxExport)
class OnnxExportAdmin(admin.ModelAdmin):
    list_display = ("source_version", "status", "opset", "cluster", "created_at")
    list_filter = ("status",)


admin.site.register(InferenceRequest)
