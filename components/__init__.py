"""Compatibility for stacks created before the components moved into ``agent_sandbox_pulumi``.

Owns nothing new: the Pulumi state of such a stack holds its image-load dynamic resources'
provider pickled by reference to ``components.image_loader.ImageLoadProvider``, and the engine
unpickles that old copy to delete them (``make down``) or read them. ``image_loader`` re-exports
the class from its new home so those pickles resolve. Import from ``agent_sandbox_pulumi``."""
