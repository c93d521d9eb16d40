"""``evaluate`` pairs predictions with references by case id, leaves side products (``_std`` maps,
previews) out and says so, and warns about a "prediction" that cannot be a CT in HU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.io.image import ImageMeta, write_ct, write_image
from medsynth.phantom.anatomy import make_head
from medsynth.services.evaluate import not_ct_warning

SHAPE = (20, 20, 20)
META = ImageMeta.from_affine(np.diag([10.0, 10.0, 10.0, 1.0]), SHAPE)
runner = CliRunner()


def _study(root: Path) -> tuple[Path, Path]:
    """References a, b; predictions a, b (CT + 30 HU) with what translate --uncertainty writes beside them."""
    for case, seed in (("a", 1), ("b", 2)):
        ct = make_head(seed, SHAPE, 16.0).ct
        write_ct(root / "ct" / f"{case}.nii.gz", ct, META)
        write_ct(root / "sct" / f"{case}.nii.gz", ct + 30.0, META)
        write_image(root / "sct" / f"{case}_std.nii.gz", np.full(SHAPE, 12.0, np.float32), META)
        (root / "sct" / f"{case}_std.png").write_bytes(b"\x89PNG")
    (root / "sct" / "translate_report.json").write_text("{}")
    return root / "sct", root / "ct"


def test_std_maps_beside_the_predictions_are_ignored_and_named(tmp_path):
    pred, ref = _study(tmp_path)
    result = runner.invoke(app, ["evaluate", str(pred), str(ref), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "ignored 2 side products" in result.stdout and "a_std, b_std" in result.stdout
    report = json.loads((tmp_path / "m.json").read_text())
    assert [c["case"] for c in report["cases"]] == ["a", "b"] and report["failures"] == []
    assert report["ignored"] == ["a_std", "b_std"]
    assert [round(c["mae"]) for c in report["cases"]] == [30, 30]


def test_a_prediction_without_reference_that_is_no_side_product_still_fails(tmp_path):
    pred, ref = _study(tmp_path)
    write_ct(pred / "c.nii.gz", make_head(3, SHAPE, 16.0).ct, META)
    result = runner.invoke(app, ["evaluate", str(pred), str(ref)])
    assert result.exit_code == 1
    assert "c: no reference" in result.stderr.replace("\n", " ")


def test_an_mr_given_as_prediction_is_scored_with_a_warning(tmp_path):
    pred, ref = _study(tmp_path)
    write_image(pred / "b.nii.gz", make_head(2, SHAPE, 16.0).mr, META)
    result = runner.invoke(app, ["evaluate", str(pred), str(ref), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: b:") and "not look like a CT" in warnings[0]
    assert [w["case"] for w in json.loads((tmp_path / "m.json").read_text())["warnings"]] == ["b"]


def test_the_not_ct_rule_on_ct_mr_and_normalised_values():
    head = make_head(4, SHAPE, 16.0)
    assert not_ct_warning(head.ct + 50.0, head.ct) is None            # a poor CT is still a CT
    assert not_ct_warning(np.clip(head.ct, -1024, 3071), head.ct) is None
    assert not_ct_warning(head.mr, head.ct) is not None               # an MR: no air below -200
    assert not_ct_warning(head.ct / 1000.0, head.ct) is not None      # CT in the wrong units
    body = np.full(SHAPE, 40.0, np.float32)
    assert not_ct_warning(head.mr, body) is None                      # no air in the reference: no judgement
