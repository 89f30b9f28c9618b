"""Gen3D Blender extension entry point: the package Blender imports from the built zip.

Blender-side code lives in gen3d_addon/ (core), operators/ and panels/; the engine/ folder is
shipped beside them but only ever run as a separate process (python -m engine).
"""

from . import gen3d_addon, operators, panels

_MODULES = (gen3d_addon, operators, panels)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    for module in reversed(_MODULES):
        module.unregister()
