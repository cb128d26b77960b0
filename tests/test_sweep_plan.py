"""Trial plans: seeded, independent of the trial count, disjoint region and holdout."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE_HOLDOUT, SAMPLE_MODEL

from chainx.errors import ChainxError
from chainx.scoring.settings import OptimiseSettings
from chainx.sweep.plan import SweepConfig, plan_trials


def labelled_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i:03d}.png").write_bytes(b"")
    return root


def config(data: Path, **kwargs: object) -> SweepConfig:
    return SweepConfig(model=SAMPLE_MODEL, data=data, **kwargs)


def test_trials_draw_classes_and_images_reproducibly(tmp_path: Path) -> None:
    data = labelled_folder(tmp_path / "data", {c: 12 for c in "abcde"})
    specs = plan_trials(config(data, classes=2, per_class=4, holdout_per_class=5), 6)
    assert [s.index for s in specs] == list(range(6))
    for spec in specs:
        assert len(spec.classes) == 2
        assert len(spec.region) == 8 and len(spec.holdout) == 10
        region_files = {path for path, _ in spec.region}
        assert not region_files & {path for path, _ in spec.holdout}
        assert all(path.parent.name == label for path, label in spec.region + spec.holdout)
        assert {label for _, label in spec.region} == set(spec.classes)
    assert len({s.classes for s in specs}) > 1
    assert len({s.seed for s in specs}) == 6
    # Trial i is the same whether 6 or 3 trials are planned, and for the same seed.
    assert plan_trials(config(data, classes=2, per_class=4, holdout_per_class=5), 3) == specs[:3]
    other = plan_trials(config(data, classes=2, per_class=4, holdout_per_class=5, seed=1), 3)
    assert [s.region for s in other] != [s.region for s in specs[:3]]


def test_holdout_defaults_to_every_other_image_of_the_classes(tmp_path: Path) -> None:
    data = labelled_folder(tmp_path / "data", {"a": 7, "b": 9})
    (spec,) = plan_trials(config(data, classes=2, per_class=3), 1)
    assert len(spec.holdout) == 4 + 6


def test_holdout_data_supplies_the_same_classes(tmp_path: Path) -> None:
    data = labelled_folder(tmp_path / "train", {"a": 5, "b": 5})
    held = labelled_folder(tmp_path / "val", {"a": 3, "b": 4, "c": 2})
    (spec,) = plan_trials(config(data, holdout_data=held, per_class=5), 1)
    assert {path.parent.parent for path, _ in spec.holdout} == {held}
    assert len(spec.holdout) == 7


def test_the_sample_folder_plans_a_two_class_trial() -> None:
    (spec,) = plan_trials(config(SAMPLE_HOLDOUT), 1)
    assert spec.classes == ("3", "8")
    assert len(spec.region) == 20 and len(spec.holdout) == 60


@pytest.mark.parametrize(
    ("counts", "kwargs", "message"),
    [
        ({"a": 5}, {"classes": 2}, "has only 1 class folders"),
        ({"a": 5, "b": 2}, {"per_class": 3}, "b have fewer images"),
        ({}, {}, "no images found"),
    ],
)
def test_a_data_folder_that_cannot_give_the_trials_is_refused(
    tmp_path: Path, counts: dict[str, int], kwargs: dict, message: str
) -> None:
    data = labelled_folder(tmp_path / "data", counts)
    data.mkdir(exist_ok=True)
    with pytest.raises(ChainxError, match=message):
        plan_trials(config(data, **kwargs), 1)


def test_a_flat_folder_has_no_labels(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ChainxError, match="one sub-folder per class"):
        plan_trials(config(tmp_path), 1)


def test_holdout_data_must_have_every_class(tmp_path: Path) -> None:
    data = labelled_folder(tmp_path / "train", {"a": 5, "b": 5})
    held = labelled_folder(tmp_path / "val", {"a": 3})
    with pytest.raises(ChainxError, match="no folder for the classes b"):
        plan_trials(config(data, holdout_data=held, per_class=2), 1)


def test_a_sweep_recorded_before_a_setting_existed_resumes_at_its_default(tmp_path: Path) -> None:
    data = labelled_folder(tmp_path / "data", {"a": 5, "b": 5})
    recorded = config(data).to_json()
    del recorded["optimise"]["finetune_patience"], recorded["strict"]
    assert config(data).differences(recorded) == []
    assert config(data, optimise=OptimiseSettings(finetune_patience=5)).differences(recorded) == [
        "optimise"
    ]
