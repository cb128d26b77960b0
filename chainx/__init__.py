"""chainx: extract the local inference chain of a deep network as a standalone ONNX graph.

`chainx.extract(model, images, ...)` runs the pipeline of `chainx extract` and returns an
`ExtractResult`: the verified chain (`.chain`), its checks (`.verification`), `.metrics`,
`.layers`, `.to_json()` and `.save(out)`. The README's "From Python" has an example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chainx.chain.result import ExtractResult, LayerResult
from chainx.errors import ChainxError, UnfaithfulChainError
from chainx.scoring.settings import OptimiseSettings
from chainx.settings import ExtractSettings, ReadSettings
from chainx.version import __version__

__all__ = [
    "ChainxError",
    "ExtractResult",
    "ExtractSettings",
    "LayerResult",
    "OptimiseSettings",
    "ReadSettings",
    "UnfaithfulChainError",
    "__version__",
    "extract",
]


def extract(
    model: str | Path,
    images: str | Path,
    holdout: str | Path | None = None,
    *,
    out: str | Path | None = None,
    force: bool = False,
    **options: Any,  # noqa: ANN401
) -> ExtractResult:
    """Extract the chain of `model` on the region `images` (a folder of images, flat or one
    sub-folder per class); `holdout`, unseen images of the same region, measures fidelity.

    Every `chainx extract` option is a keyword named as its flag in snake_case: `size`,
    `resize`, `mean`, `std` (sequences of floats), `keep_ratio`, `steps`, `finetune_steps`,
    `hold_margin`, `filter_images`, `seed`, `device`, `input`, `output`, ... Nothing is
    written unless `out` is given (or `result.save(...)` is called). A bad input raises
    ChainxError with the message the CLI prints, and so does a chain that keeps half or
    fewer of the region's predictions (UnfaithfulChainError). The result is returned even when the
    verification fails: check `result.verification.passed`.
    """
    from chainx.extraction import extract as run_pipeline

    return run_pipeline(
        model,
        images,
        holdout,
        settings=ExtractSettings.from_options(**options),
        out=out,
        force=force,
    )
