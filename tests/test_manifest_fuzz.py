"""Property test: any mutation of a valid manifest gives a clean BadInput, never another exception."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bobkit.errors import BadInput
from bobkit.manifest.loader import load_catalog

MINI = Path(__file__).parent / "fixtures" / "mini"
FILES = ["backbones.yaml", "datasets.yaml", "recipes.yaml", "experiments.yaml", "deviations.yaml"]

junk = st.one_of(st.none(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
                 st.booleans())


def _paths(node, prefix=()):
    """Every (path) to a value inside a YAML tree."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(node, path, value, action):
    parent = node
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    if action == "delete":
        del parent[key]
    elif action == "extra" and isinstance(parent[key], dict):
        parent[key]["unexpected_key"] = value
    else:
        parent[key] = value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=st.sampled_from(FILES), pick=st.integers(0, 10_000), value=junk,
       action=st.sampled_from(["replace", "delete", "extra"]))
def test_mutations_fail_cleanly(file, pick, value, action):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        shutil.copytree(MINI, d)
        data = yaml.safe_load((d / file).read_text())
        paths = [p for p in _paths(data) if p]
        path = paths[pick % len(paths)]
        _set(data, path, value, action)
        (d / file).write_text(yaml.safe_dump(data))
        try:
            load_catalog([d], builtin=False)
        except BadInput as exc:
            text = str(exc)
            assert "\n" not in text and text, "one line"
        # a mutation may also leave the manifest valid (e.g. replacing a note with a string)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_fails_cleanly(text):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "x.yaml").write_text(text)
        try:
            load_catalog([d], builtin=False)
        except BadInput:
            pass
