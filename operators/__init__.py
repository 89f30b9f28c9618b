"""Operators of the Gen3D extension (bpy.ops.gen3d.*).  Each module exports CLASSES."""

import bpy

from . import camera, generate, io, remote, render_settings, setup_engine, sky_world

_MODULES = (generate, setup_engine, camera, io, remote, render_settings, sky_world)
CLASSES = [cls for module in _MODULES for cls in module.CLASSES]


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    for module in _MODULES:
        if hasattr(module, "register_extra"):
            module.register_extra()


def unregister() -> None:
    for module in reversed(_MODULES):
        if hasattr(module, "unregister_extra"):
            module.unregister_extra()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
