"""An MLflow-compatible REST API: the stock `mlflow` client (3.x) logs into Torchlight unchanged.

MLflow experiments are Torchlight experiments (id = primary key, "0" = the
workspace's "Default"), runs are runs (id = the run's UUID in hex), metrics
go through the metric store, artifacts through the artifact proxy
(`mlflow-artifacts:/...`), registered models through the registry. See
docs/mlflow.md.
"""
