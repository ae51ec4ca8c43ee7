"""Stacks made before the package keep working: their image-load resources' provider, pickled by
reference to the old module path, still unpickles (the engine needs it to delete them), and the
parts of AgentSandbox keep their old URNs through aliases (tests/unit/test_main.py checks those)."""

from __future__ import annotations

import base64
import pickle

import dill

from agent_sandbox_pulumi.components.image_loader import ImageLoadProvider


def old_pickle() -> str:
    """What ``serialize_provider`` stored before the move: a reference to components.image_loader."""
    raw = dill.dumps(ImageLoadProvider(), protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
    moved = b"agent_sandbox_pulumi.components.image_loader"
    assert moved in raw
    old_module = b"components.image_loader"
    # Re-frame the module name (protocol 4 SHORT_BINUNICODE: one length byte before the text).
    raw = raw.replace(bytes([len(moved)]) + moved, bytes([len(old_module)]) + old_module)
    raw = raw.replace(raw[2:11], b"\x95" + (len(raw) - 11).to_bytes(8, "little"), 1)
    return base64.b64encode(raw).decode()


def test_a_provider_pickled_at_the_old_path_still_loads() -> None:
    # As the dynamic provider host (pulumi.dynamic.__main__, which starts a server when imported)
    # loads a provider from the state: base64, then dill.
    stored = base64.b64decode(old_pickle())
    assert b"agent_sandbox_pulumi" not in stored and b"components.image_loader" in stored
    provider = dill.loads(stored)
    assert type(provider) is ImageLoadProvider
