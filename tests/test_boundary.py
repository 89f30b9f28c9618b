"""The architecture's one rule: the engine knows nothing of Blender, the add-on nothing of torch."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLENDER_SIDE = ("gen3d_addon", "operators", "panels")
ML = {"torch", "torchvision", "diffusers", "transformers", "gsplat", "segment_anything", "moge", "cv2", "scipy", "plyfile"}
BLENDER = {"bpy", "mathutils", "bmesh", "bpy_extras", "addon_utils"}
SHARED = {"protocol", "client", "cameras", "colour", "gaussian_math", "trajectory", "remote"}


def imports(path: Path):
    """(module, relative level, imported names) for every import in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0, ()
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level, tuple(alias.name for alias in node.names)


def test_the_engine_never_imports_blender():
    for path in (ROOT / "engine").rglob("*.py"):
        found = {module.split(".")[0] for module, level, _ in imports(path) if level == 0} & BLENDER
        assert not found, f"{path.relative_to(ROOT)} imports {found}"


def test_the_add_on_imports_no_ml_library_and_only_the_shared_engine_modules():
    for package in BLENDER_SIDE:
        for path in (ROOT / package).rglob("*.py"):
            for module, level, names in imports(path):
                where = path.relative_to(ROOT)
                assert level > 0 or module.split(".")[0] not in ML, f"{where} imports {module}"
                if level >= 2 and module == "engine":
                    assert set(names) <= SHARED, f"{where} imports engine.{names}"
                if level >= 2 and module.startswith("engine."):
                    assert module.split(".")[1] in SHARED, f"{where} imports {module}"
                if level >= 2 and module == "":
                    assert "engine" not in names, f"{where} imports the whole engine package"
