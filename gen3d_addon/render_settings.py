"""The render settings splats need, checked and (on request, undoably) set.

The engine trains linear-light Gaussians against sRGB images over black (engine/colour.py), so
Blender reproduces its render with: the Standard view transform (AgX and Filmic tone-map),
no look, exposure 0, gamma 1; enough transparent bounces for every splat quad a ray crosses,
and as many before Russian roulette may end a path (Cycles' default, 0, ends paths through dense
splats at random: grain that samples remove only slowly); no denoiser (it smears the splats'
texture); a transparent film, so no world shows behind the splats (the engine has none); the
pixel filter of the splats' image formation: for Gaussians trained in gsplat's antialiased mode
(the engine's default; the PLY says so), Cycles' Gaussian filter whose variance is the engine's
0.3 px^2 blur, so the blur is the filter (Cycles' Gaussian has sigma = width / 4: width
4 sqrt(0.3) = 2.19 px); for classic ones, a filter no wider than 1 px (the engine samples pixel
centres after the blur; Blackman-Harris 1.5, the default, lowers thin splats' peak opacity by up
to 0.025, 1.0 by 0.013: bench/RESULTS.md); a camera whose clip end reaches past the world's sky
dome (its far Gaussians lie 10 x the scene's depth away).  Nothing here runs unless the artist
asks: the Result panel lists what is off.
"""

from __future__ import annotations

import math

import bpy

from ..engine.gaussian_math import EPS2D
from . import sky_world

FILTER_WIDTH = 1.0  # px: the widest filter for classic splats
GAUSSIAN_FILTER_WIDTH = 4.0 * math.sqrt(EPS2D)  # px: Cycles' Gaussian filter with the blur's variance
TRANSPARENT_BOUNCES = 256  # a courtyard pixel ray crosses up to ~100 splat quads (p99 84)


def splat_issues(scene: bpy.types.Scene) -> list[str]:
    """What differs from the settings the splats need, one short line each (empty: all set)."""
    issues = []
    view = scene.view_settings
    if view.view_transform != "Standard":
        issues.append(f"View transform {view.view_transform} tone-maps the trained colours (needs Standard)")
    if view.look != "None":
        issues.append(f"Look {view.look} changes the colours")
    if abs(view.exposure) > 1e-6 or abs(view.gamma - 1.0) > 1e-6:
        issues.append(f"Exposure {view.exposure:g} / gamma {view.gamma:g} (needs 0 / 1)")
    if scene.display_settings.display_device != "sRGB":
        issues.append(f"Display {scene.display_settings.display_device}: the splats were trained for sRGB")
    if scene.cycles.transparent_max_bounces < TRANSPARENT_BOUNCES:
        issues.append(f"Transparent bounces {scene.cycles.transparent_max_bounces} cut dense splats (needs {TRANSPARENT_BOUNCES})")
    if antialiased_splats(scene):
        if scene.cycles.pixel_filter_type != "GAUSSIAN" or abs(scene.cycles.filter_width - GAUSSIAN_FILTER_WIDTH) > 1e-3:
            issues.append(f"Pixel filter {scene.cycles.pixel_filter_type.replace('_', '-').title()} {scene.cycles.filter_width:g} px: "
                          f"the splats were trained with a blur Cycles reproduces as Gaussian {GAUSSIAN_FILTER_WIDTH:.2f} px")
    elif scene.cycles.filter_width > FILTER_WIDTH + 1e-6:
        issues.append(f"Pixel filter {scene.cycles.filter_width:g} px blurs thin splats (needs {FILTER_WIDTH:g})")
    if scene.cycles.min_transparent_bounces < TRANSPARENT_BOUNCES:
        issues.append(f"Min transparent bounces {scene.cycles.min_transparent_bounces}: Russian roulette through the splats "
                      f"leaves grain (needs {TRANSPARENT_BOUNCES})")
    if scene.cycles.use_denoising:
        issues.append("Denoising smooths the splats' detail (the trained colours are noise-free once the filter is sampled)")
    if not scene.render.film_transparent:
        issues.append("Film not transparent: the world shows behind the splats (the engine has none)")
    reach = sky_reach(scene)
    if reach and reach > scene.camera.data.clip_end:
        issues.append(f"Camera clip end {scene.camera.data.clip_end:g} m cuts the sky dome (needs {reach:.0f} m)")
    return issues


def antialiased_splats(scene: bpy.types.Scene) -> bool:
    """Whether any rendered splat object was trained in antialiased mode (then its filter wins)."""
    from .importers import ANTIALIASED

    return any(o.type == "MESH" and o.data.get(ANTIALIASED) and not o.hide_render for o in scene.objects)


def sky_reach(scene: bpy.types.Scene) -> float:
    """How far the scene camera must see to reach the far side of every rendered sky dome (0: none)."""
    camera = scene.camera
    if camera is None or camera.type != "CAMERA":
        return 0.0
    reach = 0.0
    for obj in scene.objects:
        if obj.get(sky_world.SKY_PROPERTY) and not obj.hide_render:
            radius = obj.get(sky_world.RADIUS_PROPERTY, 0.0) * max(obj.matrix_world.to_scale())
            reach = max(reach, radius + (camera.matrix_world.translation - obj.matrix_world.translation).length)
    return reach * 1.05 if reach else 0.0  # the splats' own extent


def apply_splat_settings(scene: bpy.types.Scene) -> None:
    """Set exactly what splat_issues checks."""
    view = scene.view_settings
    view.view_transform = "Standard"
    view.look = "None"
    view.exposure = 0.0
    view.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    scene.cycles.transparent_max_bounces = max(scene.cycles.transparent_max_bounces, TRANSPARENT_BOUNCES)
    if antialiased_splats(scene):
        scene.cycles.pixel_filter_type = "GAUSSIAN"
        scene.cycles.filter_width = GAUSSIAN_FILTER_WIDTH
    else:
        scene.cycles.filter_width = min(scene.cycles.filter_width, FILTER_WIDTH)
    scene.cycles.use_denoising = False
    scene.cycles.min_transparent_bounces = max(scene.cycles.min_transparent_bounces, TRANSPARENT_BOUNCES)
    scene.render.film_transparent = True
    reach = sky_reach(scene)
    if reach:
        scene.camera.data.clip_end = max(scene.camera.data.clip_end, reach)
