"""Read dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) into numpy.

The file is dlib's own serialization of the network declared in dlib's
`examples/dnn_face_recognition_ex.cpp`:

    anet_type = loss_metric<fc_no_bias<128, avg_pool_everything<
                alevel0<alevel1<alevel2<alevel3<alevel4<
                max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

    ares<N>      = relu<add_prev1<affine<con<N,3,3,1,1, relu<affine<con<N,3,3,1,1, tag1<x>>>>>>>>>
    ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<
                     affine<con<N,3,3,1,1, relu<affine<con<N,3,3,2,2, tag1<x>>>>>>>>>>>>
    alevel0 = ares_down<256>             alevel1 = ares<256, ares<256, ares_down<256>>>
    alevel2 = ares<128, ares<128, ares_down<128>>>
    alevel3 = ares<64, ares<64, ares<64, ares_down<64>>>>   alevel4 = ares<32, ares<32, ares<32>>>

How dlib writes it (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, loss.h, tensor.h):
- integers: one byte whose low nibble is the byte count and bit 7 the sign, then the magnitude
  little-endian; strings: a length integer then the bytes; bools: the characters '1'/'0';
  float/double scalars: an integer mantissa and an integer exponent (value = m * 2**e);
- tensors: version 2, then n, k, nr, nc, then n*k*nr*nc little-endian IEEE float32;
- a network nests: each layer writes its version, then its whole subnetwork, then itself. So the
  file holds the loss layer, then one version number per nested layer from the outside in, then the
  layer bodies from the input outwards. Tag and skip layers write only their version.

The loader checks the whole layer sequence against `anet_type` above and refuses anything else,
because a file that parses but is wired differently would give silently wrong descriptors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

# Residual blocks of anet_type from the input outwards: (filters, downsample). alevel4, then
# alevel3 ... alevel0, each level read from its innermost block.
ANET_BLOCKS: Final[tuple[tuple[int, bool], ...]] = (
    ((32, False),) * 3
    + ((64, True),) + ((64, False),) * 3
    + ((128, True),) + ((128, False),) * 2
    + ((256, True),) + ((256, False),) * 2
    + ((256, True),)
)
DESCRIPTOR_DIM: Final = 128

# float_details' exponent markers for values that have no mantissa/exponent form.
_FLOAT_SPECIAL: Final = {32000: float("inf"), 32001: float("-inf"),
                         32002: float("nan"), 32003: float("nan")}


class DlibModelError(ValueError):
    """The file is not the dlib face-recognition ResNet this module knows how to read."""


@dataclass(frozen=True)
class Conv:
    """A convolution with the affine layer that follows it folded in (dlib's `con` + `affine`).

    dlib trains with batch norm and ships `affine` (a per-channel scale and shift) in its place;
    directly after a convolution that is just a rescaled kernel and bias, so both backends run one
    layer instead of two. Folding changes the float32 rounding by ~1e-7, far below the 1e-3 the
    descriptors are held to.
    """

    weight: F32  # (out_channels, in_channels, kernel, kernel), dlib's own order
    bias: F32  # (out_channels,)
    stride: int
    padding: int

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[2])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def out_size(self, size: int) -> int:
        """Output rows for `size` input rows, by dlib's rule (floor, no partial windows)."""
        return (size + 2 * self.padding - self.kernel) // self.stride + 1


@dataclass(frozen=True)
class ResidualBlock:
    """`ares` (identity shortcut) or `ares_down` (shortcut through a 2x2/2 average pool).

    out = relu(shortcut + conv2(relu(conv1(x)))). dlib's add_prev sums tensors of different
    shapes by zero-extending both to the larger one, aligned at channel 0 and row/column 0: that
    happens where the channel count grows (the pooled shortcut has fewer channels) and in alevel1,
    where the strided 3x3 conv of an 8x8 input gives 3x3 but the 2x2 pool gives 4x4.
    """

    conv1: Conv
    conv2: Conv
    downsample: bool


@dataclass(frozen=True)
class ResNetWeights:
    """Everything needed to run the network, in input-to-output order."""

    mean_rgb: F32  # (3,) subtracted from the 0-255 pixel values
    input_scale: float  # then multiplied by this (dlib: 1/256)
    chip_size: int  # the 150x150 aligned face chip
    stem: Conv  # 7x7/2, no padding
    stem_pool: tuple[int, int]  # max pool (size, stride), no padding
    blocks: tuple[ResidualBlock, ...]
    fc: F32  # (256, 128): descriptor = mean over rows and columns of the last block @ fc


class _Reader:
    """dlib's serialization primitives over an in-memory file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibModelError(f"file ends at byte {len(self.data)}, wanted {n} more "
                                 f"at byte {self.pos}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        head = self._take(1)[0]
        size = head & 0x0F
        if size > 8:
            raise DlibModelError(f"bad integer header 0x{head:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if head & 0x80 else value

    def string(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def boolean(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibModelError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        return float(mantissa) * 2.0**exponent

    def tensor(self) -> F32:
        if (version := self.integer()) != 2:
            raise DlibModelError(f"tensor version {version}, expected 2")
        shape = tuple(self.integer() for _ in range(4))
        count = shape[0] * shape[1] * shape[2] * shape[3]
        values = np.frombuffer(self._take(4 * count), dtype="<f4")
        return values.astype(np.float32).reshape(shape)  # copy: native order, writable

    def alias_tensor(self) -> tuple[int, int, int, int]:
        if (version := self.integer()) != 1:
            raise DlibModelError(f"alias_tensor version {version}, expected 1")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return n, k, nr, nc

    def expect(self, *names: str) -> str:
        name = self.string()
        if name not in names:
            raise DlibModelError(f"found layer {name!r} at byte {self.pos}, expected "
                                 + " or ".join(repr(n) for n in names))
        return name


# --- the layers of anet_type, input first ------------------------------------------------------

# Layer kinds as they nest, innermost first. "tag"/"skip" write no body.
_ARES: Final = ("tag", "con", "affine", "relu", "con", "affine", "add_prev", "relu")
_ARES_DOWN: Final = ("tag", "con", "affine", "relu", "con", "affine", "tag", "skip", "avg_pool",
                     "add_prev", "relu")


def _anet_layer_kinds() -> list[str]:
    kinds = ["con", "affine", "relu", "max_pool"]  # the con is the add_layer over the input
    for _, down in ANET_BLOCKS:
        kinds.extend(_ARES_DOWN if down else _ARES)
    kinds.extend(("avg_pool", "fc"))
    return kinds


@dataclass
class _Layer:
    kind: str
    params: F32 | None = None
    ints: tuple[int, ...] = ()


def _read_con(r: _Reader) -> _Layer:
    r.expect("con_4")
    params = r.tensor().reshape(-1)
    num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
    filters, biases = r.alias_tensor(), r.alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.real()
    n_w = filters[0] * filters[1] * filters[2] * filters[3]
    if (filters[0], filters[2], filters[3]) != (num_filters, nr, nc) or \
            params.size != n_w + num_filters or biases[1] != num_filters:
        raise DlibModelError(f"inconsistent con_ layer: {filters} {biases} {params.size}")
    return _Layer("con", params, (num_filters, filters[1], nr, nc, stride_y, stride_x,
                                  pad_y, pad_x))


def _read_affine(r: _Reader) -> _Layer:
    r.expect("affine_")
    params = r.tensor().reshape(-1)
    gamma, beta = r.alias_tensor(), r.alias_tensor()
    if (mode := r.integer()) != 0:  # 0 = CONV_MODE: one gamma/beta per channel
        raise DlibModelError(f"affine_ layer in mode {mode}, expected CONV_MODE")
    if gamma != beta or params.size != 2 * gamma[1]:
        raise DlibModelError(f"inconsistent affine_ layer: {gamma} {beta} {params.size}")
    return _Layer("affine", params)


def _read_fc(r: _Reader) -> _Layer:
    r.expect("fc_2")
    num_outputs, num_inputs = r.integer(), r.integer()
    params = r.tensor()
    r.alias_tensor()  # weights and biases views into params
    r.alias_tensor()
    if (bias_mode := r.integer()) != 1:  # 1 = FC_NO_BIAS
        raise DlibModelError(f"fc_ layer with bias mode {bias_mode}, expected fc_no_bias")
    for _ in range(4):
        r.real()
    if params.size != num_inputs * num_outputs:
        raise DlibModelError(f"inconsistent fc_ layer: {params.shape}")
    # dlib stores the matrix as (inputs, outputs) and computes x @ W.
    return _Layer("fc", params.reshape(num_inputs, num_outputs), (num_outputs, num_inputs))


def _read_pool(kind: str) -> Callable[[_Reader], _Layer]:
    def read(r: _Reader) -> _Layer:
        r.expect(f"{kind}_2")
        return _Layer(kind, None, tuple(r.integer() for _ in range(6)))
    return read


def _read_plain(kind: str) -> Callable[[_Reader], _Layer]:
    def read(r: _Reader) -> _Layer:
        r.expect(f"{kind}_")
        return _Layer(kind)
    return read


_LAYER_READERS: Final[dict[str, Callable[[_Reader], _Layer]]] = {
    "con": _read_con, "affine": _read_affine, "fc": _read_fc,
    "max_pool": _read_pool("max_pool"), "avg_pool": _read_pool("avg_pool"),
    "relu": _read_plain("relu"), "add_prev": _read_plain("add_prev"),
}


def _read_add_layer_state(r: _Reader, version: int, *, bottom: bool) -> None:
    """Skip what add_layer saves besides its layer: flags and (empty) training buffers."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output disabled
        r.boolean()
    tensors = 3 if bottom or version >= 2 else 2  # x_grad, cached_output, params_grad/grad_final
    for _ in range(tensors):
        r.tensor()
    if bottom and version >= 3:
        r.integer()  # _sample_expansion_factor


def _fold(con: _Layer, affine: _Layer) -> Conv:
    assert con.params is not None
    assert affine.params is not None
    num_filters, channels, nr, nc, stride_y, stride_x, pad_y, pad_x = con.ints
    if nr != nc or stride_y != stride_x or pad_y != pad_x:
        raise DlibModelError(f"non-square convolution {con.ints}")
    n_w = num_filters * channels * nr * nc
    weight = con.params[:n_w].reshape(num_filters, channels, nr, nc)
    bias = con.params[n_w:]
    gamma, beta = np.split(affine.params, 2)
    if gamma.size != num_filters:
        raise DlibModelError(f"affine_ of {gamma.size} channels after con_ of {num_filters}")
    return Conv(weight=(weight * gamma[:, None, None, None]).astype(np.float32),
                bias=(bias * gamma + beta).astype(np.float32),
                stride=stride_x, padding=pad_x)


def _expect_pool(layer: _Layer, want: tuple[int, ...]) -> None:
    if layer.ints != want:
        raise DlibModelError(f"{layer.kind} with (nr, nc, stride_y, stride_x, pad_y, pad_x) = "
                             f"{layer.ints}, expected {want}")


def parse_resnet(data: bytes) -> ResNetWeights:
    """Parse the bytes of `dlib_face_recognition_resnet_model_v1.dat`."""
    r = _Reader(data)
    if (version := r.integer()) != 1:
        raise DlibModelError(f"loss layer version {version}, expected 1")
    r.expect("loss_metric_2")
    r.real()  # margin and distance threshold: training only
    r.real()

    kinds = _anet_layer_kinds()  # innermost first; versions are written outermost first
    versions = [r.integer() for _ in kinds][::-1]
    for i, (kind, version) in enumerate(zip(kinds, versions, strict=True)):
        allowed = {1} if kind in ("tag", "skip") else ({2, 3} if i == 0 else {1, 2})
        if version not in allowed:
            raise DlibModelError(f"layer {len(kinds) - 1 - i} ({kind}) has version {version}: "
                                 "the file is not dlib's face-recognition ResNet (anet_type)")

    r.expect("input_rgb_image_sized")
    mean_rgb = np.array([r.real(), r.real(), r.real()], dtype=np.float32)
    chip_rows, chip_cols = r.integer(), r.integer()
    if chip_rows != chip_cols:
        raise DlibModelError(f"input of {chip_rows}x{chip_cols}, expected a square chip")

    layers: list[_Layer] = []
    for i, (kind, version) in enumerate(zip(kinds, versions, strict=True)):
        if kind in ("tag", "skip"):
            continue
        layers.append(_LAYER_READERS[kind](r))
        _read_add_layer_state(r, version, bottom=i == 0)
    if r.pos != len(data):
        raise DlibModelError(f"{len(data) - r.pos} unread bytes after the last layer")
    return _assemble(layers, mean_rgb, chip_rows)


def _assemble(layers: list[_Layer], mean_rgb: F32, chip_size: int) -> ResNetWeights:
    it: Iterator[_Layer] = iter(layers)  # kinds already match _anet_layer_kinds()
    stem = _fold(next(it), next(it))
    next(it)  # relu
    pool = next(it)
    if pool.ints[0] != pool.ints[1] or pool.ints[2] != pool.ints[3] or pool.ints[4:] != (0, 0):
        raise DlibModelError(f"unexpected stem max_pool {pool.ints}")
    channels = stem.out_channels
    blocks: list[ResidualBlock] = []
    for filters, down in ANET_BLOCKS:
        conv1 = _fold(next(it), next(it))
        next(it)  # relu
        conv2 = _fold(next(it), next(it))
        if down:
            _expect_pool(next(it), (2, 2, 2, 2, 0, 0))
        next(it)  # add_prev
        next(it)  # relu
        if (conv1.out_channels, conv2.out_channels) != (filters, filters) or \
                conv1.weight.shape[1] != channels or conv1.stride != (2 if down else 1) or \
                conv2.stride != 1 or conv2.padding != 1:
            raise DlibModelError(f"residual block {len(blocks)} does not match anet_type")
        blocks.append(ResidualBlock(conv1, conv2, down))
        channels = filters
    _expect_pool(next(it), (0, 0, 1, 1, 0, 0))  # avg_pool_everything
    fc = next(it)
    assert fc.params is not None
    if fc.ints != (DESCRIPTOR_DIM, channels):
        raise DlibModelError(f"fc layer {fc.ints}, expected ({DESCRIPTOR_DIM}, {channels})")
    return ResNetWeights(mean_rgb=mean_rgb, input_scale=1.0 / 256.0, chip_size=chip_size,
                         stem=stem, stem_pool=(pool.ints[0], pool.ints[2]),
                         blocks=tuple(blocks), fc=fc.params)


def load_resnet(path: Path) -> ResNetWeights:
    """Load the network from dlib's .dat file (about 22 MB; well under a second)."""
    return parse_resnet(path.read_bytes())
