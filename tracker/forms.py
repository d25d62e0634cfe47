from django import forms

from tracker.models import Experiment


def parse_tag_lines(text):
    """'key: value' (or key=value) lines -> dict; raises ValidationError naming the bad line."""
    tags = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        for separator in (":", "="):
            if separator in line:
                key, value = line.split(separator, 1)
                break
        else:
            key, value = line, ""
        key, value = key.strip(), value.strip()
        if not key:
            raise forms.ValidationError(f"Line {number}: a tag needs a key before the ':'.")
        if len(key) > 100:
            raise forms.ValidationError(f"Line {number}: tag keys are at most 100 characters.")
        if len(value) > 1000:
            raise forms.ValidationError(f"Line {number}: tag values are at most 1000 characters.")
        tags[key] = value
    if len(tags) > 50:
        raise forms.ValidationError("At most 50 tags.")
    return tags


def format_tag_lines(tags):
    return "\n".join(f"{key}: {value}" for key, value in (tags or {}).items())


class ExperimentForm(forms.ModelForm):
    tags_text = forms.CharField(
        label="Tags",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "dataset: mnist\nteam: vision"}),
        help_text="One tag per line, as key: value.",
    )

    class Meta:
        model = Experiment
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, workspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        if self.instance.pk and not self.is_bound:
            self.fields["tags_text"].initial = format_tag_lines(self.instance.tags)

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("An experiment needs a name.")
        clash = Experiment.objects.filter(workspace=self.workspace, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(f"An experiment named “{name}” already exists in this workspace.")
        return name

    def clean_tags_text(self):
        return parse_tag_lines(self.cleaned_data.get("tags_text"))

    def save(self, commit=True):
        experiment = super().save(commit=False)
        experiment.workspace = self.workspace
        experiment.tags = self.cleaned_data["tags_text"]
        if commit:
            experiment.save()
        return experiment


class RunTagForm(forms.Form):
    key = forms.CharField(max_length=250)
    value = forms.CharField(required=False, widget=forms.TextInput)

    def clean_key(self):
        key = self.cleaned_data["key"].strip()
        if not key:
            raise forms.ValidationError("A tag needs a key.")
        return key
