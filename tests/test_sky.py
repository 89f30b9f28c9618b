"""The sky layer (engine.sky, issue 18): which pixels, one panorama for every view, far Gaussians,
exported beside the world, and measured against Blender's held-out views of the example."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLE, run_engine
from engine import cameras, evaluate, sky
from engine.export import read_gaussians_ply
from engine.job import read_npz

RESOLUTION = 64
FAST = ["--resolution", str(RESOLUTION), "--steps", "2", "--iterations", "60", "--set", "reprojections=1"]


# -- units ----------------------------------------------------------------------------------------


def test_sky_is_where_depth_is_missing_or_beyond_the_far_limit_but_not_a_speck():
    depth = np.full((40, 40), 5.0, np.float32)
    depth[:10] = 0.0  # no depth: sky
    depth[10, :4] = np.inf
    depth[25, 25] = 0.0  # one dropped pixel: a sensor speck, not sky
    depth[30:, :6] = 500.0  # farther than the far limit below
    mask = sky.sky_mask(depth)
    assert mask[:10].all() and mask[10, :4].all() and not mask[25, 25]
    assert not mask[30:, :6].any() and mask.sum() == 404
    assert sky.sky_mask(depth, far_limit=100.0)[30:, :6].all()


def test_the_panorama_is_blenders_equirectangular_layout_of_the_input_frame():
    width, height = 32, 16
    directions = sky.panorama_directions(width, height)
    x, y = sky.direction_pixels(directions, width, height)
    np.testing.assert_allclose(x, np.arange(width)[None] + 0.5 + 0 * y, atol=1e-9)
    np.testing.assert_allclose(y, np.arange(height)[:, None] + 0.5 + 0 * x, atol=1e-9)
    # The centre looks along the input view (+z), three quarters to its right (+x), the top up (-y).
    for direction, (u, v) in [((0, 0, 1), (0.5, 0.5)), ((1, 0, 0), (0.75, 0.5)), ((0, -1, 0.001), (None, 0.0))]:
        px, py = sky.direction_pixels(np.array([direction], float), width, height)
        if u is not None:
            assert px[0] / width == pytest.approx(u)
        assert py[0] / height == pytest.approx(v, abs=1e-3)
    # Blender's equirectangular lookup of the same directions in the panorama frame (x forward,
    # y left, z up): u = 0.5 - atan2(y, x) / 2pi, v from the bottom = 0.5 + asin(z) / pi.
    rng = np.random.default_rng(0)
    engine = rng.normal(size=(200, 3))
    engine /= np.linalg.norm(engine, axis=1, keepdims=True)
    p = engine @ cameras.PANORAMA_FROM_ENGINE.T
    px, py = sky.direction_pixels(engine, width, height)
    np.testing.assert_allclose(px / width, (0.5 - np.arctan2(p[:, 1], p[:, 0]) / (2 * math.pi)) % 1.0, atol=1e-9)
    np.testing.assert_allclose(1 - py / height, 0.5 + np.arcsin(p[:, 2]) / math.pi, atol=1e-9)


def _striped_panorama(radius: float = 50.0) -> sky.SkyPanorama:
    height, width = 32, 64
    colour = np.zeros((height, width, 3), np.float32)
    colour[..., 2] = np.linspace(0.9, 0.3, height)[:, None]  # blue fading towards the horizon
    colour[..., 0] = np.linspace(0.2, 0.8, width)[None]
    colour[..., 1] = 0.5 + 0.3 * np.sin(np.arange(width) / 3)[None]  # detail the initial blur loses
    region = np.zeros((height, width), bool)
    region[: height // 2] = True  # the upper hemisphere
    return sky.SkyPanorama(colour, region, radius)


def test_far_points_lie_on_the_far_sphere_over_the_sky_region_only():
    panorama = _striped_panorama()
    points = sky.far_points(panorama)
    np.testing.assert_allclose(np.linalg.norm(points.xyz, axis=1), 50.0, rtol=1e-5)
    assert (points.xyz[:, 1] < 0).all()  # all above the horizon (engine y is down)
    # About one point per stride x stride panorama pixels of the region, fewer near the pole.
    assert 0.4 * panorama.region.sum() / 4 < len(points.xyz) < panorama.region.sum() / 4


def test_far_points_of_a_panorama_at_512_px_sample_past_opencvs_map_limit():
    # The points' 1 x n sample map is wider than OpenCV's remap allows (32767) from about 512 px on.
    width, height = sky.panorama_size(512)
    region = np.zeros((height, width), bool)
    region[: height // 2] = True
    colour = np.random.default_rng(0).random((height, width, 3)).astype(np.float32)
    panorama = sky.SkyPanorama(colour, region, 50.0)
    points = sky.far_points(panorama)
    assert len(points.xyz) > sky.REMAP_LIMIT
    # The same samples as OpenCV gives for pieces under its limit, bilinear and nearest.
    x, y = sky.direction_pixels(points.xyz / 50.0, width, height)
    pieces = range(0, len(x), 30000)
    for nearest in (False, True):
        whole = sky._remap(colour, x[None], y[None], nearest=nearest)[0]
        parts = np.concatenate([sky._remap(colour, x[None, i : i + 30000], y[None, i : i + 30000], nearest=nearest)[0]
                                for i in pieces])
        np.testing.assert_array_equal(whole, parts)
    # Each point's colour is the panorama's at its direction (x, y recomputed from float32 points).
    assert np.abs(points.rgb - sky._remap(colour, x[None], y[None])[0]).mean() < 1e-4


def test_training_the_sky_fits_its_panorama_better_than_its_start(one_torch_thread):
    panorama = _striped_panorama()
    front = sky.centre_cameras(panorama)[0]
    target, mask = panorama.sample(front)

    def psnr(steps: int) -> float:
        return evaluate.masked_psnr(sky.train_sky(panorama, "cpu", steps=steps).render(front, "cpu").image, target, mask)

    assert mask.mean() > 0.3
    start, trained = psnr(0), psnr(30)
    assert trained > start + 3.0, (start, trained)


# -- the pipeline on the bundled example (sky: depth 0 in its depth.png) ----------------------------


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """The example generated with the sky layer and without it (same seed, same settings)."""
    arguments = [str(EXAMPLE / "image.png"), "--depth", str(EXAMPLE / "depth.png"), "--camera", str(EXAMPLE / "camera.json")]
    out = {}
    for name, extra in (("sky", []), ("no_sky", ["--set", "sky=false"])):
        job = tmp_path_factory.mktemp(name) / "job"
        result = run_engine("generate", *arguments, "--out", str(job), "--profile", "offline", "--device", "cpu",
                            *FAST, *extra)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        out[name] = (job, result)
    return out


def test_the_depth_stage_marks_the_examples_sky(jobs):
    job, _ = jobs["sky"]
    data = read_npz(job / "depth" / "depth.npz")
    image = Image.open(EXAMPLE / "image.png")
    width = RESOLUTION
    given = np.asarray(Image.open(EXAMPLE / "depth.png").resize((width, width * image.height // image.width), Image.NEAREST))
    assert 0.08 < data["sky"].mean() < 0.2  # the example's sky: the top of the frame, between the walls
    assert (data["depth"][data["sky"]] == 0).all()
    assert (given[data["sky"]] == 0).mean() > 0.95  # where the depth file has 0 (up to resampling)
    assert not read_npz(jobs["no_sky"][0] / "depth" / "depth.npz")["sky"].any()


def test_every_expansion_view_takes_its_sky_from_the_one_panorama_and_none_of_it_is_trained(jobs):
    job, _ = jobs["sky"]
    panorama = sky.SkyPanorama.from_arrays(read_npz(job / "sky" / "panorama.npz"))
    views = read_npz(job / "expand" / "views.npz")
    view_cameras = [cameras.Camera.from_dict(c) for c in json.loads((job / "expand" / "views.json").read_text())["cameras"]]
    depth = read_npz(job / "depth" / "depth.npz")
    assert not views["masks"][0][depth["sky"]].any()  # the input view's sky is not the scene's to fit
    filled = 0
    for image, mask, camera in list(zip(views["images"], views["masks"], view_cameras))[1:]:
        colour, sky_view = panorama.sample(camera)
        # Outside the scene's mask, the panorama's sky directions hold the panorama's colour.
        taken = sky_view & ~mask
        np.testing.assert_allclose(image[taken].astype(np.float32), colour[taken], atol=2e-3)
        filled += taken.sum()
    assert filled > 0.05 * views["masks"][1:].size
    steps = json.loads((job / "expand" / "views.json").read_text())["steps"]
    assert all(step["sky_fraction"] > 0.05 for step in steps)
    # The expansion lifts nothing in the sky: fewer points than when the sky was a hole to fill.
    with_sky = len(read_npz(job / "expand" / "points.npz")["xyz"])
    assert with_sky < len(read_npz(jobs["no_sky"][0] / "expand" / "points.npz")["xyz"])


def test_the_sky_is_exported_beside_the_world_and_named_in_the_result(jobs):
    job, result = jobs["sky"]
    outputs = [json.loads(line) for line in result.stdout.splitlines() if '"result"' in line][-1]["outputs"]
    assert outputs["sky"] == "sky.ply" and outputs["sky_image"] == "sky.png"
    panorama = Image.open(job / "sky.png")
    assert panorama.size[0] == 2 * panorama.size[1]
    gaussians = read_gaussians_ply(job / "sky.ply")
    radius = float(read_npz(job / "sky" / "panorama.npz")["radius"])
    far = float(read_npz(job / "depth" / "depth.npz")["depth"].max())
    assert radius == pytest.approx(sky.RADIUS_FACTOR * far)
    np.testing.assert_allclose(gaussians.means.norm(dim=1).numpy(), radius, rtol=1e-3)
    job, result = jobs["no_sky"]
    assert not (job / "sky.ply").exists() and not (job / "sky.png").exists()
    assert "sky" not in [json.loads(line) for line in result.stdout.splitlines() if '"result"' in line][-1]["outputs"]


def test_the_trained_world_shows_its_sky_and_the_rest_is_no_worse(jobs, one_torch_thread):
    """Engine renders of the trained world (scene + sky) against Blender: the input view and the
    held-out views (5-15 degrees around it); the orbit's last view against the panorama."""
    example = evaluate.load_example(EXAMPLE, RESOLUTION)
    source = example.source
    worlds = {name: sky.read_world(job) for name, (job, _) in jobs.items()}
    scores = {}
    for name, world in worlds.items():
        sky_psnr, rest_psnr = [], []
        for view in [source, *example.heldout]:
            camera = cameras.relative_to([view.camera], source.camera)[0]
            image = world.render(camera, "cpu").image
            sky_psnr.append(evaluate.masked_psnr(image, view.image, view.depth == 0))
            rest_psnr.append(evaluate.masked_psnr(image, view.image, view.depth > 0))
        scores[name] = (sky_psnr, rest_psnr)
    sky_on, rest_on = scores["sky"]
    sky_off, rest_off = scores["no_sky"]
    assert min(sky_on) > 20.0 and min(np.subtract(sky_on, sky_off)) > 5.0, scores  # filled, and like the sky
    # The rest: the same within 0.1 dB (the scene's fit changes a little with its masks).
    assert np.mean(rest_on) > np.mean(rest_off) - 0.1, scores

    job = jobs["sky"][0]
    orbit = cameras.Camera.from_dict(json.loads((job / "expand" / "views.json").read_text())["cameras"][-1])
    panorama = sky.SkyPanorama.from_arrays(read_npz(job / "sky" / "panorama.npz"))
    colour, sky_view = panorama.sample(orbit)
    scene = read_gaussians_ply(job / "gaussians.ply").render(orbit, "cpu")
    open_sky = sky_view & (scene.alpha < 0.05)  # where the scene leaves the sky to the far layer
    render = worlds["sky"].render(orbit, "cpu").image
    assert open_sky.mean() > 0.05
    assert (render[open_sky].max(axis=1) > 0.2).all()  # no black
    assert evaluate.masked_psnr(render, colour, open_sky) > 30.0
