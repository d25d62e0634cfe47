"""Export a loaded model to ONNX and measure parity with onnxruntime. No Django, no ORM.

    python -m registry.onnx_export SPEC.json

The spec is what registry.loading reads plus `opset` and `output_dir`.
Progress goes to stdout as `PROGRESS <fraction> <stage>` lines, anything
else is the export log, and the last line is `RESULT {json}`.

The TorchScript-based exporter (`dynamo=False`) is tried first: it covers
the most ops and is the fastest; when it fails the dynamo exporter is tried,
and the report records which one produced the file.
"""

import json
import sys
import time
import traceback
import warnings
from pathlib import Path

from registry.loading import LoadError, _first_line, load_model, run_model, sample_input

ATOL = 1e-4
RTOL = 1e-3


class ExportError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def progress(fraction, stage):
    print(f"PROGRESS {fraction:.2f} {stage}", flush=True)


def log(message):
    print(message, flush=True)


def export_model(model, sample, path, opset):
    """Write `model` to `path` as ONNX with a dynamic batch axis; returns the exporter name used."""
    import torch

    errors = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (sample,), str(path), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        return "torchscript"
    except Exception as exc:
        errors.append(f"torchscript exporter: {_first_line(exc)}")
        log(f"the TorchScript-based exporter failed: {_first_line(exc)}; trying the dynamo exporter")
        Path(path).unlink(missing_ok=True)
    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.onnx.export(
            model, (sample,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["output"],
            dynamic_shapes=({0: batch},), external_data=False, report=False, verbose=False,
        )
        program.save(str(path), external_data=False)
        return "dynamo"
    except Exception as exc:
        errors.append(f"dynamo exporter: {_first_line(exc)}")
    raise ExportError("export_failed", "torch.onnx.export failed — " + " | ".join(errors))


def parity(model, kind, onnx_path, shape, dtype, seed=0):
    """Run PyTorch and onnxruntime on the same random input; max abs and rel differences."""
    import numpy as np
    import onnxruntime

    x = sample_input(shape, dtype, batch=2, seed=seed)
    expected = run_model(model, kind, x)
    providers = ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=providers)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if len(got) != len(expected):
        raise ExportError("parity_failed", f"ONNX returned {len(got)} outputs, PyTorch {len(expected)}")
    max_abs = max_rel = 0.0
    passed = True
    for ref, out in zip(expected, got, strict=True):
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            raise ExportError("parity_failed", f"ONNX output shape {list(out.shape)} differs from PyTorch {list(ref.shape)}")
        diff = np.abs(ref - out)
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float((diff / np.maximum(np.abs(ref), 1e-12)).max()))
            passed = passed and bool(np.allclose(out, ref, atol=ATOL, rtol=RTOL))
    return {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "atol": ATOL,
        "rtol": RTOL,
        "passed": passed,
        "input_shape": list(x.shape),
        "input_dtype": dtype,
        "seed": seed,
        "outputs": len(expected),
        "output_shape": [None] + list(expected[0].shape[1:]) if expected else None,
        "onnxruntime_version": onnxruntime.__version__,
        "providers": providers,
    }


def run(spec):
    started = time.monotonic()
    import onnx
    import onnxruntime  # noqa: F401  (imported here so the timings below show the import cost)
    import torch

    timings = {"import": round(time.monotonic() - started, 3)}
    mark = time.monotonic()
    out_dir = Path(spec["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    progress(0.05, "loading")
    log(f"loading the {spec['flavour']} model (torch {torch.__version__})")
    model, kind = load_model(spec, spec["files_dir"])
    timings["load"], mark = round(time.monotonic() - mark, 3), time.monotonic()
    if kind != "module":
        raise ExportError("not_exportable", "only PyTorch models can be exported")
    if hasattr(model, "eval"):
        model.eval()
    shape, dtype = spec["input_shape"], spec.get("input_dtype", "float32")
    sample = sample_input(shape, dtype, batch=1, seed=1)
    progress(0.2, "exporting")
    log(f"exporting with opset {spec['opset']}, input {['batch'] + list(shape[1:])} {dtype}")
    exporter = export_model(model, sample, onnx_path, int(spec["opset"]))
    timings["export"], mark = round(time.monotonic() - mark, 3), time.monotonic()
    log(f"exported with the {exporter} exporter in {timings['export']:.2f} s")
    progress(0.6, "checking")
    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except Exception as exc:
        raise ExportError("checker_failed", f"onnx.checker rejected the exported model: {_first_line(exc)}") from None
    log("onnx.checker: passed")
    timings["check"], mark = round(time.monotonic() - mark, 3), time.monotonic()
    progress(0.75, "parity")
    report = parity(model, kind, onnx_path, shape, dtype)
    timings["parity"] = round(time.monotonic() - mark, 3)
    log(f"parity on input {report['input_shape']}: max abs diff {report['max_abs_diff']:.3g}, max rel diff {report['max_rel_diff']:.3g}")
    report.update(
        exporter=exporter, opset=int(spec["opset"]), checker="passed",
        torch_version=torch.__version__.split("+")[0], onnx_version=onnx.__version__,
        seconds=round(time.monotonic() - started, 3), timings=timings,
    )
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    progress(0.9, "storing")
    return {"parity": report, "files": files}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m registry.onnx_export SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = run(spec)
        print("RESULT " + json.dumps({"ok": True, **result}), flush=True)
    except (LoadError, ExportError) as exc:
        print("RESULT " + json.dumps({"ok": False, "code": exc.code, "message": exc.message}), flush=True)
    except Exception as exc:
        traceback.print_exc()
        print("RESULT " + json.dumps({"ok": False, "code": "export_failed", "message": f"{type(exc).__name__}: {_first_line(exc)}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
