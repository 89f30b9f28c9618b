"""The Gen3D engine: one image (or RGB-D image, or prompt) -> a navigable 3D scene.

Run it as `python -m engine`.  Importing this package is cheap and imports no torch: the
Blender add-on imports engine.protocol, engine.cameras and engine.trajectory from it.
"""

__version__ = "0.1.0"
