"""dlib's face-recognition ResNet as an ONNX graph, run by ONNX Runtime on the CPU.

The graph is built in memory from the weights parsed out of dlib's .dat file each time a model
is loaded (a few hundred milliseconds), so no converted model file is shipped, cached or
downloaded: the only weights are the ones in face-recognition-models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
from onnx import TensorProto, helper, numpy_helper

from custodes.vision.dlib_resnet import DESCRIPTOR_DIM, Conv, ResNetWeights

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

# Opset 17 / IR 8: old enough for any onnxruntime of the last years, has every op used here.
OPSET = 17
IR_VERSION = 8
INPUT = "chips"
OUTPUT = "descriptors"


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, value: npt.NDArray[np.float32] | npt.NDArray[np.int64], prefix: str) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x: str, conv: Conv) -> str:
        k, p = conv.kernel, conv.padding
        return self.op("Conv", [x, self.const(conv.weight, "w"), self.const(conv.bias, "b")],
                       kernel_shape=[k, k], strides=[conv.stride, conv.stride],
                       pads=[p, p, p, p])

    def zero_extend(self, x: str, shape: tuple[int, int, int],
                    target: tuple[int, int, int]) -> str:
        """Pad at the end of channels, rows and columns: dlib's add_prev on unequal shapes."""
        if shape == target:
            return x
        pads = np.array([0, 0, 0, 0, 0, *(t - s for s, t in zip(shape, target, strict=True))],
                        dtype=np.int64)
        return self.op("Pad", [x, self.const(pads, "pads")])


def build_model(weights: ResNetWeights) -> onnx.ModelProto:
    """The network as an ONNX model: uint8 (n, 150, 150, 3) RGB -> float32 (n, 128)."""
    g = _GraphBuilder()
    size = weights.chip_size
    x = g.op("Cast", [INPUT], to=TensorProto.FLOAT)
    x = g.op("Sub", [x, g.const(weights.mean_rgb, "mean_rgb")])
    x = g.op("Mul", [x, g.const(np.array(weights.input_scale, np.float32), "scale")])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])  # NHWC (as images come) -> NCHW (as dlib)
    x = g.op("Relu", [g.conv(x, weights.stem)])
    rows = weights.stem.out_size(size)
    pool, stride = weights.stem_pool
    x = g.op("MaxPool", [x], kernel_shape=[pool, pool], strides=[stride, stride])
    shape = (weights.stem.out_channels, (rows - pool) // stride + 1, (rows - pool) // stride + 1)
    for block in weights.blocks:
        y = g.op("Relu", [g.conv(x, block.conv1)])
        y = g.conv(y, block.conv2)
        y_rows = block.conv2.out_size(block.conv1.out_size(shape[1]))
        y_shape = (block.conv2.out_channels, y_rows, y_rows)
        if block.downsample:
            x = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
            shape = (shape[0], (shape[1] - 2) // 2 + 1, (shape[2] - 2) // 2 + 1)
        target = (max(shape[0], y_shape[0]), max(shape[1], y_shape[1]),
                  max(shape[2], y_shape[2]))
        x = g.op("Relu", [g.op("Add", [g.zero_extend(x, shape, target),
                                       g.zero_extend(y, y_shape, target)])])
        shape = target
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.nodes.append(helper.make_node("MatMul", [x, g.const(weights.fc, "fc")], [OUTPUT]))
    graph = helper.make_graph(
        g.nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["n", size, size, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["n", DESCRIPTOR_DIM])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="custodes")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


class OnnxResNet:
    """Callable: (n, 150, 150, 3) uint8 RGB chips -> (n, 128) float32 descriptors."""

    def __init__(self, weights: ResNetWeights, *, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        # None: one thread per physical core (onnxruntime's default). A recorder running
        # decoders and detectors beside the embedder may want 1.
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # the graph is a chain: nothing to run side by side
        # onnxruntime's pool threads busy-wait for work by default; on a small shared box that
        # burns a core between faces for almost no gain in latency.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(build_model(weights).SerializeToString(), options,
                                             providers=["CPUExecutionProvider"])
        self._size = weights.chip_size

    def __call__(self, chips: U8) -> F32:
        if chips.ndim != 4 or chips.shape[1:] != (self._size, self._size, 3):
            raise ValueError(f"chips must be (n, {self._size}, {self._size}, 3), "
                             f"got {chips.shape}")
        out = self._session.run([OUTPUT], {INPUT: np.ascontiguousarray(chips, np.uint8)})[0]
        return np.asarray(out, dtype=np.float32)
