"""Entry point of the component provider: the engine runs ``python <this folder> <engine address>``
for a source-based plugin (``PulumiPlugin.yaml`` beside this file); ``python -m
agent_sandbox_pulumi`` does the same. Owns nothing else: ``provider.py`` has the package."""

import sys
from pathlib import Path

if not __package__:
    # Started as a folder, so the folder itself is sys.path[0]: make its parent importable instead
    # (the checkout or site-packages the plugin was added from wins over any other installed copy),
    # and keep the package's own modules from shadowing top-level names.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))

from agent_sandbox_pulumi.provider import serve  # noqa: E402

serve()
