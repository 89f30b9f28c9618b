"""Sidebar panels of the Gen3D extension (3D viewport, tab "Gen3D").  Each module exports CLASSES."""

import bpy

from . import camera, main

_MODULES = (main, camera)
CLASSES = [cls for module in _MODULES for cls in module.CLASSES]


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
