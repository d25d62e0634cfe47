"""Load a registered model by flavour. Runs only in subprocesses (never in the web process).

No Django here: the caller writes a spec JSON and a work dir holding the
version's files (and the producing run's source, for `module:Class`
architectures and full pickles), then runs

    python -m registry.loading inspect SPEC.json    # validate on register
    python -m registry.loading predict SPEC.json    # "try it"

and reads one JSON line starting with RESULT from stdout.

State dicts are read with `torch.load(weights_only=True)`; a full pickle
is loaded only when the spec says the version is trusted.
"""

import importlib
import json
import os
import struct
import sys
import traceback
from pathlib import Path

TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".tar")
FLAVOUR_SUFFIXES = {
    "state_dict": WEIGHT_SUFFIXES,
    "full_pickle": WEIGHT_SUFFIXES,
    "torchscript": (".pt", ".pth", ".ts", ".jit", ".zip"),
    "torch_export": (".pt2", ".pt", ".ep"),
    "onnx": (".onnx",),
    "safetensors": (".safetensors",),
}
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


class LoadError(Exception):
    """A model could not be loaded; `code` says why (not_pytorch_file, key_mismatch, …)."""

    def __init__(self, code, message, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


def looks_like_torch_file(head):
    """True if the first bytes are a torch zip archive or a legacy pickle."""
    return any(head.startswith(m) for m in TORCH_MAGIC)


def primary_file(files, flavour):
    """The file of a version that holds the model (a version may be a folder)."""
    suffixes = FLAVOUR_SUFFIXES.get(flavour, WEIGHT_SUFFIXES)
    candidates = [f for f in files if f.lower().endswith(suffixes)]
    if not candidates:
        if len(files) == 1:
            return files[0]
        raise LoadError("no_model_file", f"no {flavour} file ({', '.join(suffixes)}) among the version's files")
    candidates.sort(key=lambda f: (0 if "model" in f.rsplit("/", 1)[-1].lower() else 1, f.count("/"), f))
    return candidates[0]


def parse_architecture(text):
    kind, sep, name = (text or "").partition(":")
    if not sep or not name or kind == "":
        raise LoadError("architecture_error", f"architecture {text!r} is not 'torchvision:<name>' or 'module:Class'")
    return kind, name


def build_architecture(architecture, kwargs, source_dir=None):
    """An nn.Module from 'torchvision:<name>' (weights=None always) or 'module:Class' in the run's source."""
    kind, name = parse_architecture(architecture)
    kwargs = dict(kwargs or {})
    if kind == "torchvision":
        import torchvision

        kwargs.pop("weights", None)
        kwargs.pop("pretrained", None)
        try:
            return torchvision.models.get_model(name, weights=None, **kwargs)
        except ValueError as exc:
            raise LoadError("architecture_error", f"torchvision has no model {name!r}: {exc}") from None
        except TypeError as exc:
            raise LoadError("architecture_error", f"torchvision:{name} does not take these arguments: {exc}") from None
    module_name, class_name = kind, name
    if source_dir and str(source_dir) not in sys.path:
        sys.path.insert(0, str(source_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        where = "the run's source" if source_dir else "the run's source (none was found for this run)"
        raise LoadError("architecture_error", f"cannot import module {module_name!r} from {where}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise LoadError("architecture_error", f"module {module_name!r} has no {class_name!r}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise LoadError("architecture_error", f"{architecture}({_kwargs_text(kwargs)}) failed: {exc}") from None


def _kwargs_text(kwargs):
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _check_head(path):
    size = os.path.getsize(path)
    if size == 0:
        raise LoadError("not_pytorch_file", f"{Path(path).name} is not a PyTorch file (it is empty)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not looks_like_torch_file(head):
        raise LoadError("not_pytorch_file", f"{Path(path).name} is not a PyTorch file (unrecognised content)")


def load_safetensors(path):
    """Read a .safetensors file (header + raw little-endian tensors) without the safetensors package."""
    import torch

    dtypes = {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
        "BOOL": torch.bool,
    }
    with open(path, "rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise LoadError("not_safetensors_file", "not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > 100 * 1024 * 1024:
            raise LoadError("not_safetensors_file", "not a safetensors file (header too large)")
        try:
            header = json.loads(fh.read(header_len))
        except ValueError:
            raise LoadError("not_safetensors_file", "not a safetensors file (bad header)") from None
        data = fh.read()
    tensors = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        if meta["dtype"] not in dtypes or end > len(data):
            raise LoadError("not_safetensors_file", f"safetensors entry {key!r} is truncated or of an unknown dtype")
        tensor = torch.frombuffer(bytearray(data[begin:end]), dtype=dtypes[meta["dtype"]]) if end > begin else torch.empty(0, dtype=dtypes[meta["dtype"]])
        tensors[key] = tensor.reshape(meta["shape"])
    return tensors


def load_state_dict_file(path):
    import torch

    _check_head(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, unsupported globals, …
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise LoadError(
                "not_a_state_dict",
                "the file holds Python objects, not just tensors (a full pickle?): register it as full_pickle and trust it, or save model.state_dict()",
            ) from None
        raise LoadError("not_pytorch_file", f"{Path(path).name} is not a PyTorch file ({message})") from None
    return _unwrap_checkpoint(obj)


def _unwrap_checkpoint(obj):
    import torch

    if isinstance(obj, dict) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LoadError("not_a_state_dict", f"the file holds a {type(obj).__name__}, not a state dict of tensors")
    return obj


def apply_state_dict(model, state_dict):
    """Load weights strictly, turning key/shape mismatches into a LoadError that lists them."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    # Weights saved from a DataParallel/DDP model carry a "module." prefix.
    if missing and unexpected and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        missing = sorted(k for k in own if k not in state_dict)
        unexpected = sorted(k for k in state_dict if k not in own)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:20])}{' …' if len(missing) > 20 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:20])}{' …' if len(unexpected) > 20 else ''}")
        raise LoadError(
            "key_mismatch",
            "the state dict does not match the architecture: " + "; ".join(parts),
            {"missing_keys": missing, "unexpected_keys": unexpected},
        )
    wrong = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise LoadError(
            "shape_mismatch",
            "the state dict's tensor shapes do not match the architecture: " + "; ".join(wrong[:10]),
            {"shape_mismatches": wrong},
        )
    model.load_state_dict(state_dict, strict=True)
    return model


def build_with_weights(architecture, kwargs, source_dir, state_dict):
    """Build on the meta device (no random init: seconds saved on big models) and assign the weights;
    an architecture whose buffers are not all in the state dict is built normally instead."""
    import itertools

    import torch

    try:
        with torch.device("meta"):
            model = build_architecture(architecture, kwargs, source_dir)
    except LoadError:
        raise
    except Exception:
        model = None
    if model is not None:
        own = model.state_dict()
        if set(own) == set(state_dict) and all(tuple(own[k].shape) == tuple(state_dict[k].shape) for k in own):
            model.load_state_dict(state_dict, strict=True, assign=True)
            if not any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
                return model
    model = build_architecture(architecture, kwargs, source_dir)
    return apply_state_dict(model, state_dict)


def load_model(spec, files_dir):
    """(model, kind) for a spec; kind is 'module', 'onnx' (an onnxruntime session) or 'state_dict' (no architecture)."""
    import torch

    flavour = spec["flavour"]
    path = Path(files_dir) / primary_file(spec["files"], flavour)
    source_dir = spec.get("source_dir")
    if flavour in ("state_dict", "safetensors"):
        state_dict = load_safetensors(path) if flavour == "safetensors" else load_state_dict_file(path)
        if not spec.get("architecture"):
            return state_dict, "state_dict"
        return build_with_weights(spec["architecture"], spec.get("arch_kwargs"), source_dir, state_dict).eval(), "module"
    if flavour == "torchscript":
        _check_head(path)
        try:
            return torch.jit.load(str(path), map_location="cpu").eval(), "module"
        except Exception as exc:
            raise LoadError("not_torchscript_file", f"{path.name} is not a TorchScript file ({_first_line(exc)})") from None
    if flavour == "torch_export":
        _check_head(path)
        try:
            return torch.export.load(str(path)).module(), "module"
        except Exception as exc:
            raise LoadError("not_torch_export_file", f"{path.name} is not a torch.export program ({_first_line(exc)})") from None
    if flavour == "full_pickle":
        if not spec.get("trusted"):
            raise LoadError("untrusted_pickle", "a full pickle is loaded only when the version is trusted")
        _check_head(path)
        if source_dir and str(source_dir) not in sys.path:
            sys.path.insert(0, str(source_dir))
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise LoadError("not_pytorch_file", f"{path.name} could not be unpickled ({_first_line(exc)})") from None
        if not isinstance(obj, torch.nn.Module):
            raise LoadError("not_a_module", f"the pickle holds a {type(obj).__name__}, not a torch.nn.Module")
        return obj.eval(), "module"
    if flavour == "onnx":
        import onnx
        import onnxruntime

        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:
            raise LoadError("not_onnx_file", f"{path.name} is not a valid ONNX model ({_first_line(exc)})") from None
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]), "onnx"
    raise LoadError("unknown_flavour", f"unknown flavour {flavour!r}")


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def sample_input(shape, dtype, batch=2, seed=0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    full = [batch] + [int(d) for d in shape[1:]]
    torch_dtype = getattr(torch, dtype)
    if torch_dtype.is_floating_point:
        return torch.randn(full, generator=generator, dtype=torch.float32).to(torch_dtype)
    return torch.randint(0, 10, full, generator=generator, dtype=torch_dtype)


def run_model(model, kind, x):
    """Outputs as a list of numpy arrays."""
    import torch

    if kind == "onnx":
        name = model.get_inputs()[0].name
        return [o for o in model.run(None, {name: x.numpy()})]
    with torch.no_grad():
        out = model(x)
    if isinstance(out, dict):
        out = list(out.values())
    if not isinstance(out, (list, tuple)):
        out = [out]
    return [o.detach().cpu().numpy() for o in out if isinstance(o, torch.Tensor)]


def inspect(spec):
    """Validate a version on register: it loads, and (with a signature) runs on a sample input."""
    import torch

    model, kind = load_model(spec, spec["files_dir"])
    info = {"torch_version": torch.__version__.split("+")[0]}
    if kind == "state_dict":
        info["tensors"] = len(model)
        info["parameters"] = int(sum(t.numel() for t in model.values()))
        return info
    if kind == "module":
        info["parameters"] = int(sum(p.numel() for p in model.parameters())) if hasattr(model, "parameters") else None
    if spec.get("input_shape"):
        try:
            outputs = run_model(model, kind, sample_input(spec["input_shape"], spec.get("input_dtype", "float32"), batch=1))
        except Exception as exc:
            raise LoadError(
                "signature_error",
                f"the model does not run on an input of shape {spec['input_shape']}: {_first_line(exc)}",
            ) from None
        info["output_shape"] = [[None] + list(o.shape[1:]) for o in outputs][0] if outputs else None
    return info


def predict(spec):
    """Run a version on one uploaded input (a JSON tensor or an image) for "try it"."""
    import numpy as np
    import torch

    model, kind = load_model(spec, spec["files_dir"])
    if kind == "state_dict":
        raise LoadError("architecture_error", "a state dict without an architecture cannot be run")
    shape = spec.get("input_shape")
    dtype = spec.get("input_dtype", "float32")
    input_path = spec["input_path"]
    if spec["input_kind"] == "image":
        x = image_tensor(input_path, shape)
    else:
        try:
            data = json.loads(Path(input_path).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise LoadError("bad_input", f"the input is not JSON: {exc}") from None
        if isinstance(data, dict) and "inputs" in data:
            data = data["inputs"]
        try:
            arr = np.asarray(data, dtype=np.dtype(dtype))
        except (ValueError, TypeError) as exc:
            raise LoadError("bad_input", f"the JSON is not a numeric tensor: {exc}") from None
        if shape and arr.ndim == len(shape) - 1:
            arr = arr[None]
        if shape and (arr.ndim != len(shape) or list(arr.shape[1:]) != [int(d) for d in shape[1:]]):
            raise LoadError("bad_input", f"the tensor has shape {list(arr.shape)}; the signature is {['batch'] + list(shape[1:])}")
        x = torch.from_numpy(arr)
    outputs = run_model(model, kind, x)
    if not outputs:
        raise LoadError("bad_output", "the model returned no tensor")
    out = outputs[0]
    result = {"output_shape": list(out.shape), "input_shape": list(x.shape)}
    flat = out.reshape(out.shape[0], -1) if out.ndim >= 1 else out.reshape(1, 1)
    if out.ndim == 2 and out.shape[1] > 1:
        logits = torch.from_numpy(np.asarray(flat[0], dtype=np.float64))
        probs = logits.softmax(0) if (logits.min() < 0 or abs(float(logits.sum()) - 1) > 1e-3) else logits
        top = torch.topk(probs, k=min(5, probs.numel()))
        result["top"] = [{"class": int(i), "score": float(s)} for s, i in zip(top.values, top.indices, strict=True)]
    result["output"] = np.asarray(flat[0][:100], dtype=np.float64).round(6).tolist()
    return result


def image_tensor(path, shape):
    """An image file as a (1, C, H, W) float tensor in [0, 1], resized to the signature."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if not shape or len(shape) != 4:
        raise LoadError("bad_input", "an image needs a (batch, channels, height, width) signature")
    channels, height, width = (int(d) for d in shape[1:])
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((width, height))
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise LoadError("bad_input", f"the upload is not an image: {exc}") from None
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))[None]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("inspect", "predict"):
        print("usage: python -m registry.loading inspect|predict SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    try:
        info = (inspect if argv[0] == "inspect" else predict)(spec)
        print("RESULT " + json.dumps({"ok": True, "info": info}), flush=True)
    except LoadError as exc:
        print("RESULT " + json.dumps({"ok": False, "code": exc.code, "message": exc.message, "details": exc.details}), flush=True)
    except Exception as exc:
        traceback.print_exc()
        print("RESULT " + json.dumps({"ok": False, "code": "load_failed", "message": f"{type(exc).__name__}: {_first_line(exc)}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
