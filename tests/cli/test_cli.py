"""The ``finet2i`` command agrees with itself: config files are taken the same way by every command that reads
them (as arguments or as --configfile), errors name the config file and the key, a warning prints once,
preflight without a profile says the cluster was not checked, and the help is whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from support.workflow import DEMO_CONFIG, ROOT

from finet2i.cli.main import main

FINET2I = str(Path(sys.executable).parent / "finet2i")
# Every command that reads config files, with the options that keep it offline and quick.
CONFIG_COMMANDS = {
    "check-config": ["--no-models"],
    "fetch-models": ["--dry-run"],
    "preflight": ["--json"],
}


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the configs' taxonomy and resolution paths are relative to the workflow folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("command", list(CONFIG_COMMANDS))
def test_every_command_takes_config_files_as_arguments_and_as_configfile(command: str, in_repo: None) -> None:
    runner = CliRunner()
    positional = runner.invoke(main, [command, *CONFIG_COMMANDS[command], DEMO_CONFIG])
    option = runner.invoke(main, [command, *CONFIG_COMMANDS[command], "--configfile", DEMO_CONFIG])
    assert "unexpected extra argument" not in positional.output + option.output
    assert positional.exit_code == option.exit_code, (positional.output, option.output)
    strip = [line for line in positional.output.splitlines() if "seconds" not in line and " s)" not in line]
    assert strip == [line for line in option.output.splitlines() if "seconds" not in line and " s)" not in line]
    assert "Usage:" not in positional.output


@pytest.mark.parametrize("command", list(CONFIG_COMMANDS))
def test_config_errors_name_the_file_and_the_key(command: str, in_repo: None, tmp_path: Path) -> None:
    """Two files merged in order: the error names the one that set the bad key, not just the key."""
    overlay = tmp_path / "my-overrides.yaml"
    overlay.write_text(yaml.safe_dump({"prompts": {"tempreature": 1.0}}))
    result = CliRunner().invoke(main, [command, *CONFIG_COMMANDS[command], DEMO_CONFIG, "--configfile",
                                       str(overlay)])
    assert result.exit_code != 0
    assert f"{overlay}: config key prompts.tempreature: unknown key; did you mean 'temperature'?" in result.output


def test_a_semantic_error_names_the_file_too(in_repo: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    config = yaml.safe_load((ROOT / DEMO_CONFIG).read_text())
    config["generate"]["candidates"] = {"min": 3, "max": 1}
    bad.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["check-config", "--no-models", str(bad)])
    assert f"{bad}: config key generate.candidates: min (3) is larger than max (1)" in result.output


def test_preflight_without_a_profile_warns_that_the_cluster_was_not_checked_and_warns_once() -> None:
    proc = subprocess.run([FINET2I, "preflight", "config/config.yaml"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1  # the production models are not here
    assert "\nWARN    cluster      cluster not checked: no --profile given" in proc.stdout, proc.stdout
    # The config is validated twice (by preflight, then by the Snakefile's parse); its warning shows once.
    assert (proc.stdout + proc.stderr).count("models not pinned to a commit") == 1, proc.stderr


def test_the_help_is_whole() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    commands = out.split("Commands:", 1)[1]
    assert "..." not in commands, commands
    for name, command in main.commands.items():
        assert command.get_short_help_str(limit=80).endswith("."), name
    assert "--configfile" in out and "finet2i preflight --profile profiles/slurm" in out
