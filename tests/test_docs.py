"""The README matches the code: every setting, command and task name is documented."""

from pathlib import Path

from ops.cli import _parser
from schemas import tasks
from schemas.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_settings_table() -> None:
    missing = [f"RIPMAP_{name.upper()}" for name in Settings.model_fields
               if f"`RIPMAP_{name.upper()}`" not in README]
    assert not missing


def test_every_cli_command_is_documented() -> None:
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert commands and all(f"ripmap-optimizer {c}" in README for c in commands)


def test_every_task_name_is_in_the_wire_contract() -> None:
    assert all(f"`{name}`" in README for name in tasks.TASK_QUEUES)
