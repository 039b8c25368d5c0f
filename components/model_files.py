"""The stack's model files, checked before anything is declared: in the repository, ONNX, a task the server serves.

Every endpoint loads its model file from the image at start-up; a file that is missing, outside the
repository, not ONNX, or a task the server refuses would only show as services that never become ready.
Here it stops the plan instead, naming the stack file, the model entry, the file and the reason.

The ONNX metadata is read with the protobuf runtime the plan already has (pulumi depends on it), through
the four fields of onnx.proto's ModelProto this needs, declared below: the `onnx` package would add a
~16 MB native wheel to `make plan` for three fields, and the real protobuf parser (not a hand-written one)
decides what is well-formed. Field numbers and types are onnx.proto's (IR version 3 onwards).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from components.errors import FleetError
from components.stack_config import ModelSpec
from inference_service.metadata import DEFAULT_TASK, SUPPORTED_TASKS, literal

_F = descriptor_pb2.FieldDescriptorProto


class ModelFileError(FleetError):
    """A model's `file` cannot be deployed."""


class NotOnnx(ValueError):
    """The file does not parse as an ONNX ModelProto."""


class Refused(ValueError):
    """Why one model file cannot be served (one line of a ModelFileError)."""


@dataclass(frozen=True)
class ModelFile:
    """One model entry's file, with what its ultralytics metadata says (None where the export says nothing)."""

    name: str
    file: str
    task: str
    imgsz: tuple[int, int] | None
    classes: int | None
    end2end: bool | None


@functools.cache
def _model_proto() -> type[message.Message]:
    """onnx.proto's ModelProto, reduced to ir_version (1), graph (7), opset_import (8) and metadata_props (14).

    graph and opset_import are kept as bytes (the same wire type as their messages): their contents don't matter
    here, only that a model has them. Other fields parse as unknown fields.
    """
    proto = descriptor_pb2.FileDescriptorProto(name="yolo_fleet_onnx_subset.proto", package="yolo_fleet_onnx",
                                               syntax="proto2")
    entry = proto.message_type.add(name="StringStringEntryProto")
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    model = proto.message_type.add(name="ModelProto")
    model.field.add(name="ir_version", number=1, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    model.field.add(name="graph", number=7, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    model.field.add(name="opset_import", number=8, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED)
    model.field.add(name="metadata_props", number=14, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                    type_name=".yolo_fleet_onnx.StringStringEntryProto")
    # a pool of its own: the default pool is the process's (pulumi's messages live there)
    return message_factory.GetMessages([proto], pool=descriptor_pool.DescriptorPool())["yolo_fleet_onnx.ModelProto"]


def onnx_metadata(data: bytes) -> dict[str, str]:
    """An ONNX model's metadata_props; NotOnnx unless `data` is a ModelProto with an IR version, opsets and a graph."""
    model: Any = _model_proto()()
    try:
        model.ParseFromString(data)
    except message.DecodeError:
        hint = " (a zip archive: a PyTorch checkpoint?)" if data.startswith(b"PK") else ""
        raise NotOnnx(f"it does not parse as an ONNX protobuf{hint}") from None
    missing = [what for what, present in (("IR version", model.ir_version > 0),
                                          ("opset import", len(model.opset_import) > 0),
                                          ("graph", len(model.graph) > 0)) if not present]
    if missing:
        raise NotOnnx(f"it has no {', '.join(missing)} (every ONNX model has them)")
    return {p.key: p.value for p in model.metadata_props}


def describe_model(name: str, file: str, metadata: dict[str, str]) -> ModelFile:
    """What the server will make of this export (the same defaults and literal parsing as inference_service)."""
    imgsz = literal(metadata.get("imgsz"), None)
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    names = literal(metadata.get("names"), None)
    end2end = metadata.get("end2end")
    return ModelFile(
        name=name, file=file, task=metadata.get("task", DEFAULT_TASK),
        imgsz=(imgsz[0], imgsz[1]) if isinstance(imgsz, list | tuple) and len(imgsz) == 2
        and all(isinstance(v, int) for v in imgsz) else None,
        classes=len(names) if isinstance(names, dict | list) else None,
        end2end=end2end.lower() == "true" if end2end is not None else None,
    )


def read_model_file(name: str, file: str, root: Path) -> ModelFile:
    """`file` (relative to the repository `root`) as the plan shows it; Refused with the reason it can't be served."""
    path = PurePosixPath(file)
    if path.is_absolute():
        raise Refused(f"'{file}' is an absolute path; give a path relative to the repository root "
                      "(e.g. models/my-model.onnx): the image is built from the repository")
    if ".." in path.parts:
        raise Refused(f"'{file}' contains '..'; model files must be inside the repository, which the image is "
                      "built from")
    root = root.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise Refused(f"'{file}' is a symlink to {target}, outside the repository; copy the model into the "
                      "repository (the image is built from it)")
    if not target.exists():
        raise Refused(f"'{file}' not found in the repository (the image bakes each model file in)")
    if not target.is_file():
        raise Refused(f"'{file}' is not a file")
    try:
        described = describe_model(name, file, onnx_metadata(target.read_bytes()))
    except NotOnnx as error:
        raise Refused(f"'{file}' is not an ONNX model: {error}; export one with "
                      "`yolo export model=... format=onnx`") from None
    if described.task not in SUPPORTED_TASKS:
        raise Refused(f"'{file}' is a '{described.task}' model (its ONNX metadata's task); the server serves "
                      f"{', '.join(SUPPORTED_TASKS)} models only")
    return described


def check_model_files(models: Sequence[ModelSpec], root: Path, source: str) -> list[ModelFile]:
    """Each model's file as the plan shows it; ModelFileError with one line per bad file otherwise."""
    found, problems = [], []
    for model in models:
        try:
            found.append(read_model_file(model.name, model.file, root))
        except Refused as reason:
            problems.append(f"{source}: models[{model.name}].file: {reason}")
        if model.rollout:  # the new file of a rollout is served like `file`, beside it
            try:
                read_model_file(model.name, model.rollout.to, root)
            except Refused as reason:
                problems.append(f"{source}: models[{model.name}].rollout.to: {reason}")
    if problems:
        raise ModelFileError("\n".join(problems))
    return found
