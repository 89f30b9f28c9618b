"""Blender-side core of the Gen3D extension: preferences, scene properties, the engine client,
importers and the camera bridge.  Never imports torch or any ML library: the engine runs as a
separate process and speaks engine.protocol."""

from . import preferences, properties, splat_draw

_MODULES = (preferences, properties, splat_draw)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    for module in reversed(_MODULES):
        module.unregister()
