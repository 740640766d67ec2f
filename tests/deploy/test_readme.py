"""The README documents every setting and starts with the two commands CI and users run."""

from pathlib import Path

from stream.core.config import SETTINGS_DOC, settings_table_markdown

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_configuration_table_is_the_one_generated_from_settings_doc():
    assert settings_table_markdown() in README, "run: python -c 'from stream.core.config import settings_table_markdown'"


def test_every_environment_variable_read_by_the_config_is_documented():
    source = (Path(__file__).resolve().parents[2] / "stream" / "core" / "config.py").read_text()
    import re

    read = set(re.findall(r'env\.get\("([A-Z_]+)"', source))
    documented = {name for name, _, _ in SETTINGS_DOC}
    assert read == documented


def test_ci_runs_the_readme_test_command():
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
    assert README.index("scripts/demo.sh") < README.index("scripts/test.sh") < README.index("## What it does")
