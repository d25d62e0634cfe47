from django import forms

from registry.models import Flavour, InputDtype, validate_alias_name, validate_model_name

TRUST_LABEL = "I trust this file: loading it runs code"


class VersionFieldsForm(forms.Form):
    name = forms.CharField(max_length=200, validators=[validate_model_name], help_text="New or existing model name.")
    flavour = forms.ChoiceField(choices=Flavour.choices, initial=Flavour.STATE_DICT)
    architecture = forms.CharField(
        max_length=300, required=False,
        help_text='For state dicts: "torchvision:resnet18" or "module:Class" from the run\'s source.',
    )
    arch_args = forms.CharField(
        max_length=2000, required=False, label="Architecture arguments",
        help_text="KEY=VALUE, comma separated: num_classes=2, dropout=0.1",
    )
    input_shape = forms.CharField(max_length=100, required=False, help_text="Batch first, e.g. 1,3,224,224")
    input_dtype = forms.ChoiceField(choices=InputDtype.choices, initial=InputDtype.FLOAT32)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    trust = forms.BooleanField(required=False, label=TRUST_LABEL)

    def clean(self):
        data = super().clean()
        if data.get("flavour") == Flavour.FULL_PICKLE and not data.get("trust"):
            self.add_error("trust", "A full pickle runs code when it is loaded: tick the box to register it.")
        return data

    def arch_kwargs(self):
        text = self.cleaned_data.get("arch_args") or ""
        return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]

    def version_options(self):
        data = self.cleaned_data
        return {
            "flavour": data["flavour"],
            "architecture": data.get("architecture", ""),
            "arch_kwargs": self.arch_kwargs(),
            "input_shape": data.get("input_shape") or None,
            "input_dtype": data["input_dtype"],
            "description": data.get("description", ""),
            "trusted": bool(data.get("trust")),
        }


class RunRegisterForm(VersionFieldsForm):
    path = forms.CharField(max_length=1024, help_text="A file or folder under the run's outputs.")
    field_order = ["path", "name"]


class UploadRegisterForm(VersionFieldsForm):
    file = forms.FileField(help_text="Weights file: .pt, .pth, .onnx, .safetensors, .pt2")
    field_order = ["file", "name"]


class AliasForm(forms.Form):
    alias = forms.CharField(max_length=63, validators=[validate_alias_name])
    version = forms.IntegerField(min_value=1)


class ExportForm(forms.Form):
    opset = forms.IntegerField(min_value=7, max_value=23, initial=18)
    cluster = forms.ModelChoiceField(queryset=None, empty_label=None)

    def __init__(self, *args, workspace, **kwargs):
        super().__init__(*args, **kwargs)
        from jobs.models import ComputeCluster

        self.fields["cluster"].queryset = ComputeCluster.objects.filter(workspace=workspace)


class TryForm(forms.Form):
    input = forms.FileField(help_text="A JSON tensor (.json) or an image")
    cluster = forms.ModelChoiceField(queryset=None, empty_label=None)

    def __init__(self, *args, workspace, **kwargs):
        super().__init__(*args, **kwargs)
        from jobs.models import ComputeCluster

        self.fields["cluster"].queryset = ComputeCluster.objects.filter(workspace=workspace)
