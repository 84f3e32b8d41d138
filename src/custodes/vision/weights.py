"""Where the face models live: inside the `face-recognition-models` package, never downloaded.

The package's own helpers (`face_recognition_models.face_recognition_model_location()`) import
`pkg_resources`, which setuptools deprecates (a warning, an error under our pytest settings) and
has removed in recent releases. Finding the package directory with `importlib.util.find_spec`
does not execute the package, so it works whatever setuptools is installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "face_recognition_models"


class ModelFilesMissing(RuntimeError):
    """The face-recognition-models package (or a file in it) is not installed."""


@dataclass(frozen=True)
class FaceModelFiles:
    # dlib's ResNet face descriptor (128-d); dlib documents no use restriction for it.
    resnet: Path
    # 5-point landmarks for alignment. The 68-point model in the same package is restricted to
    # non-commercial use by its training data, so custodes never uses it.
    shape_predictor_5: Path


def face_model_files() -> FaceModelFiles:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesMissing(f"the {PACKAGE} package is not installed "
                                "(pip install face-recognition-models)")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = FaceModelFiles(resnet=models / "dlib_face_recognition_resnet_model_v1.dat",
                           shape_predictor_5=models / "shape_predictor_5_face_landmarks.dat")
    for path in (files.resnet, files.shape_predictor_5):
        if not path.is_file():
            raise ModelFilesMissing(f"{path} is missing from the {PACKAGE} package")
    return files
