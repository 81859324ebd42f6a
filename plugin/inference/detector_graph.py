"""YOLOX as one ONNX graph behind the detector contract, for Triton's stock onnxruntime backend (no Python in Triton).

The graph takes the contract's `images_u8` UINT8 [batch,S,S,3] (BGR, letterboxed top-left, pad 114) and returns
`boxes` FP32 [batch,K,4], `scores` FP32 [batch,K], `classes` INT32 [batch,K] and `count` INT32 [batch,1], exactly as
the CPU flavour's python-backend `model.py` does: the cast and HWC->CHW transpose YOLOX expects (BGR 0-255, no
scaling), the original network, the grid decode, class scores as objectness x class probability, the best class per
cell, a score threshold, class-aware greedy NMS (each class's boxes moved to their own region of the plane, as
model.py does, through ONNX NonMaxSuppression) and the K best kept rows, padded with zeros and class -1.

Built with the `onnx` package from the pinned source model by `storesight models fetch`; thresholds and sizes come
from the flavour's config.pbtxt `parameters` and are recorded in the graph's metadata, so a graph that no longer
matches its config (or its source) is rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from plugin.errors import ModelError
from plugin.inference.naive import YoloxSettings

METADATA_KEY = "storesight.detector_graph"
OPSET = 11  # the YOLOX export's own opset; every operator used below exists there


def _recipe(source_name: str, source_sha256: str, settings: YoloxSettings) -> dict[str, Any]:
    """What a built graph is a function of; stored in its metadata and compared before reuse."""
    return {
        "source": source_name,
        "sha256": source_sha256,
        "input_size": settings.input_size,
        "strides": list(settings.strides),
        "score_threshold": settings.score_threshold,
        "nms_iou": settings.nms_iou,
        "max_detections": settings.max_detections,
        "classes": len(settings.class_names),
    }


def graph_recipe(path: Path) -> dict[str, Any] | None:
    """The recipe recorded in a built graph, or None (not a graph of ours, unreadable)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError):
        return None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                value: dict[str, Any] = json.loads(prop.value)
            except json.JSONDecodeError:
                return None
            return value
    return None


def is_current(path: Path, source_name: str, source_sha256: str, settings: YoloxSettings) -> bool:
    """Whether `path` is a graph built from this source with these settings."""
    return path.is_file() and graph_recipe(path) == _recipe(source_name, source_sha256, settings)


def _grid(input_size: int, strides: tuple[int, ...]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Cell offsets [1,N,2] and per-cell stride [1,N,1] in the order YOLOX concatenates its heads (as model.py)."""
    cells, row_strides = [], []
    for stride in strides:
        n = input_size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        row_strides.append(np.full((n * n, 1), stride))
    return (
        np.concatenate(cells).astype(np.float32)[None],
        np.concatenate(row_strides).astype(np.float32)[None],
    )


def build_detector_graph(source: Path, source_sha256: str, settings: YoloxSettings, dest: Path) -> Path:
    """Write the end-to-end detector graph for `source` (a YOLOX export: `images` f32 [1,3,S,S] -> [1,N,5+C]) to
    `dest`, checked by onnx's checker and shape inference."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ModelError(
            f"{dest.name}: building the detector graph needs the onnx package (pip install 'storesight[models]')"
        ) from None
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(source))
    except DecodeError as exc:
        raise ModelError(f"{source.name} is not a readable ONNX file ({exc})") from None
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelError(f"{source.name}: expected one input and one output (a YOLOX export), got "
                         f"{len(graph.input)} and {len(graph.output)}")  # fmt: skip
    net_in, net_out = graph.input[0].name, graph.output[0].name
    size, k = settings.input_size, settings.max_detections
    n_cells = sum((size // s) ** 2 for s in settings.strides)
    n_classes = len(settings.class_names)
    if n_classes == 0:
        raise ModelError(f"{dest.name}: the model config publishes no class_names")
    if k > n_cells:
        raise ModelError(f"{dest.name}: max_detections {k} is more than the {n_cells} cells at input_size {size}")
    cells, strides = _grid(size, settings.strides)
    # python-backend model.py keeps scores >= threshold; NonMaxSuppression keeps scores > its threshold. The largest
    # float32 below the threshold makes "greater than it" the same test as "at least the threshold".
    below = float(np.nextafter(np.float32(settings.score_threshold), np.float32(-np.inf)))

    def const(name: str, value: Any, dtype: Any) -> None:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name=name))

    const("ss_cells", cells, np.float32)
    const("ss_strides", strides, np.float32)
    const("ss_half", 0.5, np.float32)
    const("ss_class_offset", 4.0 * size, np.float32)  # model.py's offset between classes' regions
    const("ss_zero", 0.0, np.float32)
    const("ss_size", float(size), np.float32)
    const("ss_minus_half", -0.5, np.float32)
    const("ss_no_class", -1, np.int32)
    const("ss_k", [k], np.int64)
    const("ss_max_out", [k], np.int64)
    const("ss_iou", [settings.nms_iou], np.float32)
    const("ss_score_thr", [below], np.float32)
    const("ss_tile4", [1, 1, 4], np.int64)
    const("ss_batch_box", [0, 2], np.int64)
    for name, start, end in (("xy", 0, 2), ("wh", 2, 4), ("obj", 4, 5), ("cls", 5, 5 + n_classes)):
        const(f"ss_{name}_start", [start], np.int64)
        const(f"ss_{name}_end", [end], np.int64)
    const("ss_axis2", [2], np.int64)

    nodes = [
        # normalisation: uint8 BGR HWC -> float32 CHW, values kept 0-255 as YOLOX was trained
        helper.make_node("Cast", ["images_u8"], ["ss_images_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["ss_images_f"], [net_in], perm=[0, 3, 1, 2]),
    ]
    post = [
        # grid decode: centre = (raw + cell) * stride, size = exp(raw) * stride
        *[
            helper.make_node("Slice", [net_out, f"ss_{n}_start", f"ss_{n}_end", "ss_axis2"], [f"ss_raw_{n}"])
            for n in ("xy", "wh", "obj", "cls")
        ],
        helper.make_node("Add", ["ss_raw_xy", "ss_cells"], ["ss_xy_cells"]),
        helper.make_node("Mul", ["ss_xy_cells", "ss_strides"], ["ss_centre"]),
        helper.make_node("Exp", ["ss_raw_wh"], ["ss_wh_exp"]),
        helper.make_node("Mul", ["ss_wh_exp", "ss_strides"], ["ss_wh"]),
        helper.make_node("Mul", ["ss_wh", "ss_half"], ["ss_half_wh"]),
        helper.make_node("Sub", ["ss_centre", "ss_half_wh"], ["ss_x1y1"]),
        helper.make_node("Add", ["ss_centre", "ss_half_wh"], ["ss_x2y2"]),
        helper.make_node("Concat", ["ss_x1y1", "ss_x2y2"], ["ss_boxes_all"], axis=2),  # [B,N,4]
        # class score = objectness x class probability; the best class per cell
        helper.make_node("Mul", ["ss_raw_cls", "ss_raw_obj"], ["ss_probs"]),  # [B,N,C]
        helper.make_node("ReduceMax", ["ss_probs"], ["ss_score_all"], axes=[2], keepdims=0),  # [B,N]
        helper.make_node("ArgMax", ["ss_probs"], ["ss_class_all"], axis=2, keepdims=0),  # [B,N] int64
        # class-aware NMS in one pass: each class's boxes shifted to their own region, one NMS "class"
        helper.make_node("Cast", ["ss_class_all"], ["ss_class_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ss_class_f", "ss_class_offset"], ["ss_offset"]),
        helper.make_node("Unsqueeze", ["ss_offset"], ["ss_offset3"], axes=[2]),
        helper.make_node("Add", ["ss_boxes_all", "ss_offset3"], ["ss_nms_boxes"]),
        helper.make_node("Unsqueeze", ["ss_score_all"], ["ss_nms_scores"], axes=[1]),  # [B,1,N]
        helper.make_node(
            "NonMaxSuppression",
            ["ss_nms_boxes", "ss_nms_scores", "ss_max_out", "ss_iou", "ss_score_thr"],
            ["ss_selected"],  # [M,3]: batch, class (0), cell
            center_point_box=0,
        ),
        # the kept cells' scores into a [B,N] matrix of -1 elsewhere; its top K are the rows, best first
        helper.make_node("Gather", ["ss_selected", "ss_batch_box"], ["ss_sel_bn"], axis=1),  # [M,2]
        helper.make_node("GatherND", ["ss_score_all", "ss_sel_bn"], ["ss_sel_scores"]),
        helper.make_node("Shape", ["ss_score_all"], ["ss_score_shape"]),
        helper.make_node(
            "ConstantOfShape",
            ["ss_score_shape"],
            ["ss_unkept"],
            value=numpy_helper.from_array(np.asarray([-1.0], np.float32)),
        ),
        helper.make_node("ScatterND", ["ss_unkept", "ss_sel_bn", "ss_sel_scores"], ["ss_kept_scores"]),
        helper.make_node("TopK", ["ss_kept_scores", "ss_k"], ["ss_top_scores", "ss_top_cells"], axis=1),
        helper.make_node("Greater", ["ss_top_scores", "ss_minus_half"], ["ss_valid"]),  # [B,K] bool
        helper.make_node("Unsqueeze", ["ss_valid"], ["ss_valid3"], axes=[2]),
        helper.make_node("Unsqueeze", ["ss_top_cells"], ["ss_top_cells3"], axes=[2]),
        helper.make_node("Tile", ["ss_top_cells3", "ss_tile4"], ["ss_top_cells4"]),
        helper.make_node("GatherElements", ["ss_boxes_all", "ss_top_cells4"], ["ss_top_boxes"], axis=1),
        helper.make_node("Clip", ["ss_top_boxes", "ss_zero", "ss_size"], ["ss_top_boxes_clipped"]),
        helper.make_node("GatherElements", ["ss_class_all", "ss_top_cells"], ["ss_top_classes64"], axis=1),
        helper.make_node("Cast", ["ss_top_classes64"], ["ss_top_classes"], to=TensorProto.INT32),
        # padding rows: zero box, zero score, class -1 (model.py's padding)
        helper.make_node("Where", ["ss_valid3", "ss_top_boxes_clipped", "ss_zero"], ["boxes"]),
        helper.make_node("Where", ["ss_valid", "ss_top_scores", "ss_zero"], ["scores"]),
        helper.make_node("Where", ["ss_valid", "ss_top_classes", "ss_no_class"], ["classes"]),
        helper.make_node("Cast", ["ss_valid"], ["ss_valid_i32"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", ["ss_valid_i32"], ["count"], axes=[1], keepdims=1),  # [B,1]
    ]
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *body, *post])
    del graph.input[:]
    del graph.output[:]
    del graph.value_info[:]  # the export's batch-1 annotations: inferred again below
    graph.input.append(helper.make_tensor_value_info("images_u8", TensorProto.UINT8, ["batch", size, size, 3]))
    graph.output.extend(
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", k, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", k]),
            helper.make_tensor_value_info("classes", TensorProto.INT32, ["batch", k]),
            helper.make_tensor_value_info("count", TensorProto.INT32, ["batch", 1]),
        ]
    )
    graph.name = "storesight_yolox_detector"
    recipe = _recipe(source.name, source_sha256, settings)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(recipe, sort_keys=True))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"{dest.name}: the detector graph does not check: {str(exc).splitlines()[0]}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    onnx.save(model, str(tmp))
    tmp.replace(dest)
    return dest
