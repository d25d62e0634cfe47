"""Settings of the MLflow-compatible API, read from the environment when used (so a change needs no restart)."""

from config.env import env_str

# Workspace (slug) that MLflow objects land in; unset: the token owner's first workspace.
WORKSPACE_ENV = "TORCHLIGHT_MLFLOW_WORKSPACE"

DEFAULT_EXPERIMENT_NAME = "Default"

# Paging limits, as MLflow has them.
SEARCH_RUNS_DEFAULT = 1000
SEARCH_RUNS_MAX = 50_000
SEARCH_EXPERIMENTS_DEFAULT = 1000
SEARCH_EXPERIMENTS_MAX = 50_000
HISTORY_PAGE_DEFAULT = 25_000
HISTORY_PAGE_MAX = 100_000
LOGGED_MODELS_DEFAULT = 100
LOGGED_MODELS_MAX = 1000

# One log-batch request: MLflow's own client splits at 1000 metrics / 100 params / 100 tags.
MAX_BATCH_METRICS = 50_000
MAX_BATCH_PARAMS = 1000
MAX_BATCH_TAGS = 1000


def workspace_slug():
    return env_str(WORKSPACE_ENV, "").strip()
