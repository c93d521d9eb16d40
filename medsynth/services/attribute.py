"""``attribute``: VA-GAN abnormality maps of a folder (or one volume) of patient images, on each input's grid.

Per case, in OUT_DIR:
- ``<case>_map.nii.gz``: float32, the input's units and geometry. The map is M(x), the change that
  makes the image look healthy, so it correlates with −effect (effect = patient − control): positive
  (red in the overlay) where the patient is darker than healthy, negative (blue) where brighter.
- ``<case>_healthy.nii.gz``: the healthy-looking image y = x + map.
- ``<case>_overlay.png``: the map over the image in the three mid planes, one colour scale for all.
With an effect folder, NCC(map, −effect) per case and its mean ± sd go into the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsynth.engine.runtime import pick_amp_dtype, pick_device, precision_name, process_rank
from medsynth.errors import InputError
from medsynth.families.registry import Capability, families_that
from medsynth.inference.attribution import MapGenerator
from medsynth.inference.predictor import network_device
from medsynth.io.cases import list_images
from medsynth.io.formats import image_name
from medsynth.io.grids import read_mask
from medsynth.io.image import Volume, model_ndim, read_image, write_image
from medsynth.io.outputs import no_empty_folder_on_refusal, prepare_output_dir, write_text_atomically
from medsynth.metrics.report import MetricSummary, summarise
from medsynth.metrics.similarity import ncc
from medsynth.modelfile import ModelFile, load_model, model_fingerprint
from medsynth.services.batch import (
    BatchReport,
    CaseStatus,
    Provenance,
    case_masks,
    is_single_input,
    made_by,
    mask_of,
    output_stamp,
    report_name,
    run_batch,
    select_cases,
)
from medsynth.services.options import AttributeOptions
from medsynth.viz import auto_window, mid_slices, overlay_signed_map, save_grid

_OVERLAY_PIXELS = 256  # overlays are enlarged to about this many pixels across


@dataclass
class AttributionReport(BatchReport):
    """The batch report plus NCC(map, −effect) per case when effect maps were given."""

    ncc: dict[str, float] = field(default_factory=dict)

    def ncc_summary(self) -> MetricSummary:
        """Mean and sample sd over the cases whose NCC is defined."""
        return summarise(list(self.ncc.values()))

    def write_json(self, path: Path) -> Path:
        super().write_json(path)
        if not self.ncc:
            return path
        summary = self.ncc_summary()
        document = json.loads(path.read_text())
        document["ncc"] = {"sign": "NCC(map, -effect)", "mean": _number(summary.mean), "sd": _number(summary.sd),
                           "n": summary.n, "cases": {case: _number(v) for case, v in sorted(self.ncc.items())}}
        return write_text_atomically(path, json.dumps(document, indent=2, allow_nan=False))


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def load_map_generator(model: ModelFile, options: AttributeOptions) -> MapGenerator:
    """Rebuild M and its preprocessing from a VA-GAN model file, on the device the options ask for."""
    device = pick_device(options.device)
    return MapGenerator.from_model(model, device, options.overlap, options.sw_batch_size,
                                   pick_amp_dtype(device, options.amp, options.cpu_bf16))


def write_overlay(path: Path, volume: Volume, change: np.ndarray) -> Path:
    """The map (red > 0 > blue) over the image in the axial, coronal and sagittal mid planes."""
    images = mid_slices(volume.array, volume.meta.affine)
    maps = mid_slices(change, volume.meta.affine)
    limit = float(np.percentile(np.abs(change), 99.9)) or 1.0  # one colour scale for the three planes
    panels = [overlay_signed_map(auto_window(i), m, limit) for i, m in zip(images, maps, strict=True)]
    scale = max(1, _OVERLAY_PIXELS // max(max(p.shape[:2]) for p in panels))
    titles = ["axial (red: M adds)", "coronal", "sagittal"]
    return save_grid(path, [panels], titles=titles, scale=scale)


def attribute(model_path: Path, input_path: Path, out_dir: Path, options: AttributeOptions) -> AttributionReport:
    """Write map, healthy image and overlay of every case of ``input_path`` into ``out_dir``."""
    model = load_model(model_path, families_that(Capability.ATTRIBUTE))
    generator = load_map_generator(model, options)
    out_dir = Path(out_dir)

    def outputs_of(case: str) -> list[Path]:
        return [out_dir / image_name(f"{case}_map", options.format),
                out_dir / image_name(f"{case}_healthy", options.format), out_dir / f"{case}_overlay.png"]

    ranks = process_rank()
    cases = select_cases(Path(input_path), (0, 1), ranks, outputs_of=outputs_of)
    masks = case_masks(options.mask)
    created = not out_dir.exists()
    prepare_output_dir(out_dir, [input_path, model.path, model.path.parent, options.mask, options.effect],
                       cases.values())
    fingerprint = model_fingerprint(model.path)
    stamp = output_stamp(fingerprint, f"{model.family} {model.path.parent.name}")

    def process(case: str, volume: Volume) -> list[Path]:
        mask = None if masks is None else read_mask(mask_of(case, masks, options.mask), volume)
        change, healthy = generator(volume, mask)
        map_path, healthy_path, overlay_path = outputs_of(case)
        return [write_image(map_path, change, volume.meta, np.float32, stamp),
                write_image(healthy_path, healthy, volume.meta, np.float32, stamp),
                write_overlay(overlay_path, volume, change)]

    ndim = model_ndim(generator.predictor.dims)
    with no_empty_folder_on_refusal(out_dir, created):
        batch = run_batch(cases, outputs_of, process, options.overwrite, "attribute",
                          load=lambda path: read_image(path, ndim, series=options.series),
                          single=is_single_input(input_path, cases), provenance=Provenance(fingerprint, made_by),
                          device=network_device(generator.network),
                          precision=precision_name(generator.predictor.amp_dtype))
    report = AttributionReport(batch.results, model=fingerprint)
    if options.effect is not None:
        score_against_effects(report, Path(options.effect), lambda case: outputs_of(case)[0])
    report.write_json(out_dir / report_name("attribute", None, ranks))
    return report


def score_against_effects(report: AttributionReport, effect_dir: Path, map_path_of: Callable[[str], Path]) -> None:
    """NCC(map, −effect) on the input grid for every written or skipped case; a case whose effect map is
    missing, unreadable or on another grid fails (its outputs stay)."""
    effects = list_images(effect_dir)
    for result in report.results:
        if result.status is CaseStatus.FAILED:
            continue
        try:
            if result.case not in effects:
                raise InputError(f"{effect_dir}: holds no effect map for case '{result.case}'; add it or drop "
                                 "--effect.")
            # (2, 3): the maps of 2D images are 2D, and so are their effects.
            effect = read_image(effects[result.case], (2, 3), check_values=False)
            change = read_image(map_path_of(result.case), (2, 3), check_values=False)
            report.ncc[result.case] = ncc(change.array, -effect.array)
        except InputError as error:
            result.status, result.reason = CaseStatus.FAILED, str(error)
