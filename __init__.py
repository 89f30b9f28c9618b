"""Gen3D Blender extension entry point: the package Blender imports from the built zip.

Blender-side code lives in gen3d_addon/ (core), operators/ and panels/; the engine/ folder is
shipped beside them but only ever run as a separate process (python -m engine).  The Blender
modules are imported in register(), so importing this package needs no bpy (test collectors,
the engine's own machines).
"""


def _modules():
    from . import gen3d_addon, operators, panels

    return (gen3d_addon, operators, panels)


def register() -> None:
    for module in _modules():
        module.register()


def unregister() -> None:
    for module in reversed(_modules()):
        module.unregister()
