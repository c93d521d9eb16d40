"""The CLI starts at once, says what it does truthfully, and parses the command lines the README writes."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.cli.app import spread_multi_value_options

HEAVY = ("torch", "monai", "numpy", "scipy", "SimpleITK", "nibabel", "skimage")


def test_the_cli_imports_no_heavy_library():
    code = f"import sys, medsynth.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""


def test_version_answers_without_loading_torch():
    code = ("import sys; from typer.testing import CliRunner; from medsynth.cli import app; "
            "r = CliRunner().invoke(app, ['--version']); print(r.exit_code, r.stdout.strip(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "0" and out[1] == "medsynth" and out[-1] == "False"


def _help_screens() -> dict[str, str]:
    group = get_command(app)
    screens = {"medsynth": CliRunner().invoke(app, ["--help"]).stdout}
    for name in group.commands:
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0, name
        screens[name] = result.stdout
    return screens


def test_help_screens_show_flags_as_flags_and_ship_no_missing_document():
    for name, text in _help_screens().items():
        assert "<bool>" not in text, name
        for document in re.findall(r"(docs/[\w./-]+\.md)", text):
            assert (__import__("pathlib").Path(__file__).parents[1] / document).is_file(), (name, document)


def test_train_help_states_the_families_real_defaults():
    from medsynth.cli.train import BATCH_HELP, DIMS_HELP, PATCH_HELP, STEPS_HELP
    from medsynth.engine.config import TrainConfig, build_config
    from medsynth.training import family_classes

    trained = {}
    for family in ("pix2pix", "cyclegan", "vagan", "fastgan"):
        family_cls, config_cls = family_classes(family)
        trained[family] = (build_config(TrainConfig, family_cls.train_defaults), config_cls())
    assert {t.steps for t, _ in trained.values()} == {int(re.search(r"Default: (\d+)", STEPS_HELP)[1])}
    assert trained["pix2pix"][0].batch_size == int(re.search(r"Default: (\d+)", BATCH_HELP)[1])
    assert trained["fastgan"][0].batch_size == int(re.search(r"fastgan: (\d+)", BATCH_HELP)[1])
    patch = int(re.search(r"Default: (\d+) per axis", PATCH_HELP)[1])
    for family in ("pix2pix", "cyclegan"):
        assert trained[family][1].patch_size == (patch,) * 3
    assert trained["vagan"][1].patch_size is None and "vagan: whole images" in PATCH_HELP
    assert {trained[f][1].dims for f in ("pix2pix", "cyclegan", "vagan")} == {int(DIMS_HELP.split("Default: ")[1][0])}
    train_help = CliRunner().invoke(app, ["train", "--help"]).stdout
    assert "Default: 2000" in train_help and "P [P P]" in train_help


def test_phantom_help_states_the_library_defaults():
    from medsynth.cli.phantom import CASES_HELP, SHAPE_HELP, SPACING_HELP
    from medsynth.phantom.anatomy import DEFAULT_SHAPE, DEFAULT_SPACING
    from medsynth.phantom.kinds import DEFAULT_CASES

    assert SHAPE_HELP.endswith("Default: " + " ".join(map(str, DEFAULT_SHAPE)) + ".")
    assert SPACING_HELP.endswith(f"Default: {DEFAULT_SPACING}.")
    assert CASES_HELP.endswith(f"Default: {DEFAULT_CASES}.")


def test_info_lists_every_declared_dependency():
    result = CliRunner().invoke(app, ["info"], terminal_width=200)
    assert result.exit_code == 0
    for requirement in requires("medsynth") or []:
        assert re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0] in result.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["--patch-size", "32", "32", "16"], ["--patch-size", "32", "--patch-size", "32", "--patch-size", "16"]),
    (["--patch-size", "32", "--steps", "2"], ["--patch-size", "32", "--steps", "2"]),
    (["--patch-size", "8", "8", "DATA"], ["--patch-size", "8", "--patch-size", "8", "DATA"]),
    (["--", "--patch-size", "1", "2"], ["--", "--patch-size", "1", "2"]),
])
def test_multi_value_options_are_spread(args, expected):
    assert spread_multi_value_options(args) == expected


@pytest.fixture
def captured_train(monkeypatch):
    """The library call behind ``train``, replaced by a recorder: these tests are about parsing."""
    import medsynth.training

    calls = []

    def record(family, data, out, train_options, model_options, config, resume, note=None, announce=None, init=None):
        calls.append({"family": family, "model": model_options, "train": train_options})
        raise medsynth.training.UsageError("recorded")

    monkeypatch.setattr(medsynth.training, "train", record)
    return calls


def test_patch_size_as_the_readme_writes_it(captured_train, tmp_path):
    result = CliRunner().invoke(app, ["train", "pix2pix", str(tmp_path), "--out", str(tmp_path / "r"),
                                      "--patch-size", "32", "32", "16", "--steps", "3"])
    assert result.exit_code == 2 and captured_train[0]["model"]["patch_size"] == [32, 32, 16]
    assert captured_train[0]["train"]["steps"] == 3


def test_family_names_ignore_case(captured_train, tmp_path):
    CliRunner().invoke(app, ["train", "CycleGAN", str(tmp_path), "--out", str(tmp_path / "r")])
    assert captured_train[0]["family"] == "cyclegan"


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    for args in (["train", "pix2pix", str(tmp_path), "--out", str(tmp_path / "r"), "--bogus"],
                 ["train", "nofamily", str(tmp_path), "--out", str(tmp_path / "r")],
                 ["translate"], ["nocommand"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, result.stderr)


def test_bare_medsynth_shows_the_help_with_the_exit_code_of_a_usage_error():
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2 and "Usage: medsynth" in result.stdout and not result.stderr


def test_the_cli_uses_only_typers_public_api():
    # A private module (typer._click) pinned typer below its next release; the public names suffice.
    cli = Path(__file__).parents[1] / "medsynth" / "cli"
    for source in cli.glob("*.py"):
        assert not re.search(r"\b(typer|click)\._", source.read_text()), source.name


def test_help_reads_right():
    """Meaningful metavars, defaults in one style, one example per command."""
    for name, text in _help_screens().items():
        assert not re.search(r"<str>|<list\[|\[default:|\(default:|; default:", text), name
        if name != "medsynth":
            assert f"Example: medsynth {name}" in text, name


def test_each_commands_example_is_a_command_line_it_accepts(tmp_path, monkeypatch):
    # Parsed by the command's own parser: options, choices and the paths it checks (made here).
    monkeypatch.chdir(tmp_path)
    for name, command in get_command(app).commands.items():
        words = shlex.split(command.epilog.removeprefix("Example: "))
        assert words[:2] == ["medsynth", name], command.epilog
        for word in words[2:]:
            if not word.startswith("-"):
                Path(word).mkdir(parents=True, exist_ok=True)
        command.make_context(name, spread_multi_value_options(words[2:]))


def test_usage_errors_are_answered_before_torch_loads(tmp_path):
    """A mistyped folder or an impossible option costs no torch import (seconds on a busy machine)."""
    (tmp_path / "run").mkdir()
    base = str(tmp_path)
    calls = [["translate", f"{base}/typo", base, f"{base}/out"],
             ["train", "pix2pix", f"{base}/typo", "--out", f"{base}/out"],
             ["evaluate", f"{base}/typo", base],
             ["attribute", f"{base}/run", f"{base}/typo", f"{base}/out"],
             ["translate", f"{base}/run", base, f"{base}/out", "--overlap", "1.5"],
             ["translate", f"{base}/run", base, f"{base}/out", "--format", "dicom", "--series-number", "-2"],
             ["generate", f"{base}/run", f"{base}/out", "--count", "0"],
             # an existing folder that holds no model, for each command that takes one
             ["translate", f"{base}/run", base, f"{base}/out"],
             ["attribute", f"{base}/run", base, f"{base}/out"],
             ["generate", f"{base}/run", f"{base}/out", "--count", "1"],
             ["export", f"{base}/run", f"{base}/out/model.onnx"]]
    code = ("import json, sys; from typer.testing import CliRunner; from medsynth.cli import app; "
            f"codes = [CliRunner().invoke(app, c).exit_code for c in {calls!r}]; "
            "print(json.dumps([codes, 'torch' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [[2] * len(calls), False]
    assert not (tmp_path / "out").exists()


def test_debug_is_accepted_after_the_command(tmp_path):
    empty = tmp_path / "empty"  # exists, so the library reads it and refuses it: an InputError
    empty.mkdir()
    quiet = CliRunner().invoke(app, ["train", "pix2pix", str(empty), "--out", str(tmp_path / "r")])
    assert quiet.exit_code == 2 and quiet.stderr.startswith("error:") and quiet.exception.__class__ is SystemExit
    for args in (["--debug", "train", "pix2pix", str(empty), "--out", str(tmp_path / "r")],
                 ["train", "pix2pix", str(empty), "--out", str(tmp_path / "r"), "--debug"]):
        loud = CliRunner().invoke(app, args)
        assert type(loud.exception).__name__ == "InputError", args


def test_vox2vox_is_3d_pix2pix(paired_phantom, tmp_path):
    data = paired_phantom(tmp_path / "data", cases=2)
    run = tmp_path / "run"
    config = tmp_path / "small.yaml"
    config.write_text("model: {channels: [4, 8], disc_channels: 4, disc_layers: 1}\n")
    result = CliRunner().invoke(app, ["train", "Vox2Vox", str(data), "--out", str(run), "--steps", "1",
                                      "--config", str(config), "--patch-size", "16", "--val-every", "0",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    document = yaml.safe_load((run / "config.yaml").read_text())
    assert document["family"] == "pix2pix" and document["model"]["dims"] == 3
    refused = CliRunner().invoke(app, ["train", "vox2vox", str(data), "--out", str(tmp_path / "r2"), "--dims", "2"])
    assert refused.exit_code == 2 and "vox2vox is 3D pix2pix" in refused.stderr


def test_shell_completion_installs(tmp_path, monkeypatch):
    # Name the shell instead of detecting it: CI runs without a login shell to detect.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["--install-completion", "bash"])
    assert result.exit_code == 0, result.stdout + result.stderr
    installed = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "_MEDSYNTH_COMPLETE" in installed


def test_map_and_slice_commands_offer_only_the_formats_they_write():
    for command in ("attribute", "generate"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        line = next(line for line in result.output.splitlines() if "--format" in line)
        assert "nifti|mha" in line and "dicom" not in line, line
