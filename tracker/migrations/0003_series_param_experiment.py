"""MetricSeries and Param copy their run's experiment, with indexes for experiment-wide sorts and filters.

The column is added nullable, filled from the runs (one UPDATE per table, the same
SQL on SQLite and PostgreSQL), then made required. Reversing drops it again.
"""

import django.db.models.deletion
from django.db import migrations, models

FILL = (
    "UPDATE {table} SET experiment_id = "
    "(SELECT tracker_run.experiment_id FROM tracker_run WHERE tracker_run.id = {table}.run_id)"
)


def fill_experiments(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for table in ("tracker_metricseries", "tracker_param"):
            cursor.execute(FILL.format(table=table))
        if schema_editor.connection.vendor == "postgresql":
            # The new foreign key is checked at commit (DEFERRABLE); run those checks now, or
            # the ALTER ... SET NOT NULL below fails with "pending trigger events".
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):

    dependencies = [
        ("tracker", "0002_metric_buckets_ingest_batches"),
    ]

    operations = [
        migrations.AddField(
            model_name="metricseries",
            name="experiment",
            field=models.ForeignKey(db_index=False, editable=False, null=True,
                                    on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                    to="tracker.experiment"),
        ),
        migrations.AddField(
            model_name="param",
            name="experiment",
            field=models.ForeignKey(db_index=False, editable=False, null=True,
                                    on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                    to="tracker.experiment"),
        ),
        migrations.RunPython(fill_experiments, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(
            model_name="metricseries",
            name="experiment",
            field=models.ForeignKey(db_index=False, editable=False,
                                    on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                    to="tracker.experiment"),
        ),
        migrations.AlterField(
            model_name="param",
            name="experiment",
            field=models.ForeignKey(db_index=False, editable=False,
                                    on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                    to="tracker.experiment"),
        ),
        migrations.AddIndex(
            model_name="metricseries",
            index=models.Index(fields=["experiment", "key", "last_value", "run"], name="series_experiment_key_value"),
        ),
        migrations.AddIndex(
            model_name="param",
            index=models.Index(fields=["experiment", "key", "run"], name="param_experiment_key_run"),
        ),
    ]
