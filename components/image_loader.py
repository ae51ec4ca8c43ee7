"""Old import path of the image-load dynamic provider, kept for pickles in existing stacks' state
(see ``components/__init__.py``)."""

from agent_sandbox_pulumi.components.image_loader import ImageLoad, ImageLoadError, ImageLoadProvider, run_load

__all__ = ["ImageLoad", "ImageLoadError", "ImageLoadProvider", "run_load"]
