"""Registry settings, read from the environment with working defaults."""

from config.env import env_bool, env_int

# Seconds a validation subprocess (loading a model on register) may take.
VALIDATE_TIMEOUT = env_int("TORCHLIGHT_REGISTRY_VALIDATE_TIMEOUT", 300)
# Seconds an ONNX export subprocess may take.
EXPORT_TIMEOUT = env_int("TORCHLIGHT_REGISTRY_EXPORT_TIMEOUT", 1800)
# Seconds a "try it" prediction may take.
INFERENCE_TIMEOUT = env_int("TORCHLIGHT_REGISTRY_INFERENCE_TIMEOUT", 300)
# Largest "try it" upload (bytes).
TRY_MAX_BYTES = env_int("TORCHLIGHT_REGISTRY_TRY_MAX_BYTES", 20 * 1024 * 1024)
DEFAULT_OPSET = env_int("TORCHLIGHT_ONNX_OPSET", 18)
# Load models in children of a warm loader process (torch imported once) instead of a fresh interpreter each time.
USE_ZYGOTE = env_bool("TORCHLIGHT_REGISTRY_ZYGOTE", True)
# Seconds to wait for the warm loader to start (it imports torch); past that, a plain subprocess is used.
ZYGOTE_START_TIMEOUT = env_int("TORCHLIGHT_REGISTRY_ZYGOTE_START_TIMEOUT", 120)
