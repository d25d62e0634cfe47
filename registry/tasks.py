"""RQ entry points of the registry, run by a cluster's workers. Arguments are ids.

Each task claims its row (Queued → Running, a conditional update) and exits
if it cannot, so a duplicate delivery is harmless; each records its own
failure on the row instead of raising, and runs the model only in a
subprocess (`registry.onnx_export`, `registry.loading predict`).
"""

import logging
import tempfile
import time
from pathlib import Path

from django.db import close_old_connections, connection

from registry import conf
from registry.models import Flavour, Framework, InferenceRequest, OnnxExport
from registry.workdir import SubprocessFailed, place_blob, place_run_source, place_version_files, run_loader

logger = logging.getLogger("torchlight.registry")


def _fresh_connection():
    # A worker may hold a connection that went stale between jobs (never inside a test's transaction).
    if not connection.in_atomic_block:
        close_old_connections()


def _source_dir(version, tmp):
    needs_source = version.flavour == Flavour.FULL_PICKLE or (
        version.architecture and not version.architecture.startswith("torchvision:")
    )
    if not needs_source:
        return None
    return place_run_source(version.run, Path(tmp) / "source")


def export_onnx(export_id):
    """Export a version to ONNX in a subprocess; the result is a new ModelVersion with the parity report."""
    from registry.services import FileSource, RegistrationError, register_version

    _fresh_connection()
    export = OnnxExport.objects.select_related("source_version__model__workspace", "source_version__run").filter(pk=export_id).first()
    if export is None or not export.claim():
        return None
    source = export.source_version
    try:
        with tempfile.TemporaryDirectory(prefix="tl-onnx-") as tmp:
            files_dir = Path(tmp) / "files"
            files_dir.mkdir()
            place_version_files(source, files_dir)
            source_dir = _source_dir(source, tmp)
            spec = source.spec()
            spec.update(
                files_dir=str(files_dir), source_dir=str(source_dir) if source_dir else None,
                opset=export.opset, output_dir=str(Path(tmp) / "out"),
            )
            last_write = [0.0]

            def on_line(line):
                if line.startswith("PROGRESS "):
                    _, fraction, stage = line.split(" ", 2)
                    export.report_progress(float(fraction), stage, log_line=f"[{stage}]")
                    last_write[0] = time.monotonic()
                else:
                    export.log = (export.log + line + "\n")[-200_000:]
                    if time.monotonic() - last_write[0] > 0.5:
                        OnnxExport.objects.filter(pk=export.pk).update(log=export.log)
                        last_write[0] = time.monotonic()

            result = run_loader("registry.onnx_export", None, spec, tmp, conf.EXPORT_TIMEOUT, on_line=on_line)
            OnnxExport.objects.filter(pk=export.pk).update(log=export.log)
            if not result["ok"]:
                export.fail(result["message"])
                return None
            out_dir = Path(spec["output_dir"])
            files = [
                FileSource(path=name, open=(lambda p=out_dir / name: open(p, "rb")))
                for name in result["files"]
            ]
            parity = result["parity"]
            version = register_version(
                workspace=source.model.workspace,
                name=source.model.name,
                user=export.requested_by,
                files=files,
                flavour=Flavour.ONNX,
                framework=Framework.ONNX,
                framework_version=f"opset {export.opset}",
                input_shape=source.input_shape,
                input_dtype=source.input_dtype,
                output_shape=parity.get("output_shape"),
                description=f"ONNX export of v{source.version} (opset {export.opset}, {parity['exporter']} exporter)",
                run=source.run,
                source_version=source,
                parity=parity,
                validate=False,  # checked and run in onnxruntime by the export subprocess
            )
        export.report_progress(1.0, "done")
        message = "" if parity["passed"] else (
            f"Parity outside tolerance: max abs diff {parity['max_abs_diff']:.3g} (atol {parity['atol']}, rtol {parity['rtol']})."
        )
        export.complete(message, result_version=version, progress=1.0)
        return version.pk
    except (SubprocessFailed, RegistrationError) as exc:
        export.fail(str(exc))
    except Exception as exc:  # record our own failure; the source version is untouched
        logger.exception("ONNX export %s failed", export_id)
        export.fail(f"{type(exc).__name__}: {exc}")
    return None


def run_inference(request_id):
    """Run a "try it" request in a subprocess and store its output on the row."""
    from tracker import storage

    _fresh_connection()
    request = InferenceRequest.objects.select_related("version__model", "version__run").filter(pk=request_id).first()
    if request is None or not request.claim():
        return None
    version = request.version
    try:
        with tempfile.TemporaryDirectory(prefix="tl-try-") as tmp:
            files_dir = Path(tmp) / "files"
            files_dir.mkdir()
            place_version_files(version, files_dir)
            input_path = place_blob(tmp, "input/" + ("input.json" if request.input_kind == "json" else "input.img"), request.input_key)
            source_dir = _source_dir(version, tmp)
            spec = version.spec()
            spec.update(
                files_dir=str(files_dir), source_dir=str(source_dir) if source_dir else None,
                input_kind=request.input_kind, input_path=str(input_path),
            )
            result = run_loader("registry.loading", "predict", spec, tmp, conf.INFERENCE_TIMEOUT)
        if result["ok"]:
            request.complete("", result=result["info"])
        else:
            request.fail(result["message"])
    except Exception as exc:
        logger.exception("inference request %s failed", request_id)
        request.fail(f"{type(exc).__name__}: {exc}")
    finally:
        if request.input_key:
            storage.delete_blob(request.input_key)
    return request.pk
