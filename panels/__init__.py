"""Sidebar panels of the Gen3D extension (3D viewport, tab "Gen3D").  Each module exports CLASSES."""

import bpy

from . import camera, main

_MODULES = (main, camera)
CLASSES = [cls for module in _MODULES for cls in module.CLASSES]

# Registers in order, unregisters in reverse (Blender's own helper).
register, unregister = bpy.utils.register_classes_factory(CLASSES)
