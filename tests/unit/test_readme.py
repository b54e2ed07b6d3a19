"""The README is the user's only manual: its pipeline-file reference names every field."""

from __future__ import annotations

import re

import yaml

from reprobuild import pipeline
from tests.conftest import REPO


def reference() -> dict:
    text = (REPO / "README.md").read_text()
    section = text.split("## The pipeline file", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return yaml.safe_load(block)


def test_the_pipeline_file_reference_shows_every_field():
    doc = reference()
    assert set(doc) == pipeline.TOP_FIELDS
    stage_fields = set(doc["stages"]["prepare"]) | {"foreach", "do"} & set(doc["stages"]["train"])
    assert pipeline.STAGE_FIELDS <= stage_fields
    assert set(doc["env"]) == pipeline.ENV_FIELDS
    assert set(doc["stages"]["train"]) <= pipeline.EXPAND_FIELDS


def test_the_reference_names_no_file_outside_the_repository():
    assert "../shared" not in (REPO / "README.md").read_text()
