"""The Python API: make a phantom, train a small vox2vox, translate a volume, evaluate it.

    python examples/translate_api.py /tmp/medsynth-example
"""

import sys
from pathlib import Path

from medsynth.phantom.kinds import write_phantom
from medsynth.services.evaluate import evaluate_folders
from medsynth.services.translate import TranslateOptions, translate
from medsynth.training import train

out = Path(sys.argv[1] if len(sys.argv) > 1 else "medsynth-example")
write_phantom("paired", out / "data", cases=6, shape=(48, 56, 48), spacing=3.5, seed=0)
write_phantom("paired", out / "test", cases=1, shape=(48, 56, 48), spacing=3.5, seed=1)

result = train(
    "pix2pix", out / "data", out / "run",
    train_options={"steps": 200, "batch_size": 2, "device": "cpu", "val_every": 100},
    model_options={"patch_size": [32, 32, 32], "channels": [16, 32, 64, 128], "lr": 1e-3},
)
print("model:", result.model_path, "validation:", result.validation)

report = translate(result.model_path, out / "test" / "mr" / "case_000.nii.gz", out / "sct", TranslateOptions())
print(report.count("written"), "volume(s) written to", out / "sct")

evaluation = evaluate_folders(out / "sct", out / "test" / "ct", out / "test" / "mask")
print({name: f"{s.mean:.3g}" for name, s in evaluation.summary().items()})
