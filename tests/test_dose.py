"""Dosimetric evaluation with pyRadPlan (extra ``medsynth[dose]``): plan on a phantom CT, recompute, compare.

One photon and one proton plan are optimised on a small phantom head (32×36×32 voxels of 5 mm) and
recomputed, unchanged, on the CT itself and on the CT with +60 HU added inside the body. Measured
(this file's plans; ``python benchmarks/bench_dose.py --shape 32 36 32 --spacing 5 --seed 3``): the CT
against itself gives gamma 100 % and every difference exactly 0; with +60 HU the photon plan keeps gamma
2%/2 mm at 100 % (1%/1 mm 96.0 %), a mean body difference of 0.12 % of the prescription and ΔD50 −1.4 %,
while the proton plan drops to 87.9 % (81.4 %), its fields stop 1.8 mm short and the target's D98 falls
by 13 % of the prescription.
"""

from __future__ import annotations

import csv
import json
import math
import socket

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("pyRadPlan", reason="the dose extra is not installed (docs/evaluation.md)")
pytest.importorskip("pymedphys", reason="the dose extra is not installed (docs/evaluation.md)")

import medsynth.cli.evaluate  # noqa: F401  (registers the command)
from medsynth.cli.app import app
from medsynth.dose.evaluate import compare_doses, dose_metric_names
from medsynth.dose.metrics import distal_falloff_mm
from medsynth.dose.planning import BeamAxis, make_plan, recompute
from medsynth.dose.protocol import DoseSettings, Modality, PatientFrame, default_target
from medsynth.io import ImageMeta, write_ct, write_image
from medsynth.phantom import make_head

SHAPE, SPACING = (32, 36, 32), 5.0
SETTINGS = DoseSettings()


@pytest.fixture(scope="module")
def head():
    return make_head((3, 0), SHAPE, SPACING)


@pytest.fixture(scope="module")
def compared(head):
    """Per plan kind: metrics of the CT against itself and of the CT + 60 HU in the body, planned with no network."""
    frame = PatientFrame.of(head.affine)
    ct, body = frame.forward(head.ct.astype(np.float64)), frame.forward(head.mask > 0)
    target = default_target(body, frame.spacing)
    results = {}
    with pytest.MonkeyPatch.context() as patch:  # any attempt to reach the network fails the test
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket, "create_connection", _no_network)
        for kind in ("photon", "proton"):
            plan = make_plan(kind, ct, body, target, frame.spacing, SETTINGS)
            same = compare_doses(plan, recompute(plan, ct), body, target, SETTINGS)[0]
            shifted = compare_doses(plan, recompute(plan, ct + 60.0 * body), body, target, SETTINGS)[0]
            results[kind] = (same, shifted, plan)
    return results


def _no_network(*args, **kwargs):
    raise AssertionError("dose evaluation tried to use the network")


def test_ct_against_itself_gives_gamma_100_and_no_difference(compared):
    for kind, (same, _, _) in compared.items():
        names = dose_metric_names(Modality(kind), SETTINGS)
        assert set(same) == set(names)
        for name in names:
            expected = 100.0 if "gamma" in name else 0.0
            assert same[name] == expected, (name, same[name])


def test_plus_60_hu_spares_photons_and_shifts_proton_ranges(compared):
    _, photon, _ = compared["photon"]
    _, proton, plan = compared["proton"]
    assert photon["photon_gamma_2_2"] >= 99.0
    assert photon["photon_mad_body"] < 0.5
    assert abs(photon["photon_d50"]) < 3.0
    # Denser tissue stops protons earlier: every field falls off millimetres short, the gamma drops.
    shifts = [proton[f"proton_range_{i + 1}"] for i in range(len(plan.axes))]
    assert all(-3.0 < s < -1.2 for s in shifts), shifts
    assert proton["proton_gamma_2_2"] < photon["photon_gamma_2_2"] - 5.0
    assert proton["proton_gamma_1_1"] < photon["photon_gamma_1_1"] - 10.0
    assert proton["proton_mad_body"] > 2 * photon["photon_mad_body"]
    assert proton["proton_d98"] < -5.0 < photon["photon_d98"]


def test_plans_reach_the_prescription_on_the_ct(compared, head):
    frame = PatientFrame.of(head.affine)
    target = default_target(frame.forward(head.mask > 0), frame.spacing)
    for _, _, plan in compared.values():
        dose = plan.reference.total
        assert np.median(dose[target]) == pytest.approx(SETTINGS.prescription_gy, rel=1e-6)
        assert np.percentile(dose[target], 2) > 0.85 * SETTINGS.prescription_gy
        assert dose[~frame.forward(head.mask > 0)].max() == 0.0  # no dose is scored outside the body


def test_distal_falloff_follows_a_shifted_profile():
    """A peak moved 3.5 mm along the beam (sampled every 2 mm) gives a fall-off 3.5 mm deeper, at the 80 % point."""
    depth = np.arange(40) * 2.0  # mm along x
    axis = BeamAxis(90.0, np.array([0.0, 2.0, 2.0]), np.array([1.0, 0.0, 0.0]))

    def profile(peak: float) -> np.ndarray:
        dose = np.exp(-0.5 * ((depth - peak) / 4.0) ** 2)
        return np.broadcast_to(dose[:, None, None], (40, 5, 5)).copy()

    near, far = (distal_falloff_mm(profile(p), axis, (2.0, 2.0, 2.0)) for p in (30.0, 33.5))
    assert near == pytest.approx(30.0 + 4.0 * np.sqrt(2 * np.log(1.25)), abs=0.2)  # relative to the isocentre at 0
    assert far - near == pytest.approx(3.5, abs=0.2)
    assert math.isnan(distal_falloff_mm(np.zeros((40, 5, 5)), axis, (2.0, 2.0, 2.0)))


def test_cli_dose_table_csv_json_figure_and_a_failed_case(tmp_path, head):
    """Photon only; case_b has no target mask, so it fails alone while case_a is scored and drawn."""
    meta = ImageMeta.from_affine(head.affine, SHAPE)
    frame = PatientFrame.of(head.affine)
    target = frame.backward(default_target(frame.forward(head.mask > 0), frame.spacing))
    for case in ("case_a", "case_b"):
        write_ct(tmp_path / "ref" / f"{case}.nii.gz", head.ct, meta)
        write_ct(tmp_path / "pred" / f"{case}.nii.gz", head.ct + 60.0 * (head.mask > 0), meta)
    write_image(tmp_path / "target" / "case_a.nii.gz", target.astype(np.uint8), meta, np.uint8)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--dose",
                                      "--modality", "photon", "--target", str(tmp_path / "target"),
                                      "--figures", str(out), "--csv", str(out / "m.csv"),
                                      "--json", str(out / "m.json")])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())  # Rich wraps titles and headings at the test terminal's 80 columns
    assert "photon plan" in text and "2%/2mm" in text and "proton" not in text
    assert "case_b" in result.stderr and "--target" in result.stderr
    rows = {row["case"]: row for row in csv.DictReader((out / "m.csv").open())}
    assert float(rows["case_a"]["photon_gamma_2_2"]) >= 99.0 and float(rows["case_a"]["mae"]) > 0
    assert math.isnan(float(rows["case_b"]["photon_gamma_2_2"])) and "--target" in rows["case_b"]["error"]
    document = json.loads((out / "m.json").read_text())
    assert document["summary"]["photon_gamma_2_2"]["n"] == 1
    assert (out / "case_a_dose.png").stat().st_size > 0 and not (out / "case_b_dose.png").exists()
