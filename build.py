"""Build the installable Gen3D extension zip from this repository.

    python build.py              validate blender_manifest.toml and write dist/gen3d-<version>.zip
    python build.py --check      validate only
    python build.py --out DIR    write the zip into DIR

The zip holds the manifest, the extension's __init__.py, the Blender-side packages
(gen3d_addon/, operators/, panels/), the engine (engine/, run by the add-on as a separate
process) and requirements/ (what "Set up engine" installs).  No tests, caches or examples, and
none of the models built in code that no user runs: the benchmark's random full-size models
(engine/random_models.py) and the tiny test models (engine/tiny_diffusion.py); the engine in the
zip runs the offline and full profiles.  The extension ships no wheels: torch and the models live
in the engine's own environment.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGES = ("gen3d_addon", "operators", "panels", "engine", "requirements")
ROOT_FILES = ("blender_manifest.toml", "__init__.py")
SKIP_PARTS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
SKIP_FILES = {"engine/random_models.py", "engine/tiny_diffusion.py"}  # benchmark and test models only

REQUIRED_KEYS = {
    "schema_version": str,
    "id": str,
    "version": str,
    "name": str,
    "tagline": str,
    "maintainer": str,
    "type": str,
    "blender_version_min": str,
    "license": list,
}
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


class ManifestError(ValueError):
    pass


def validate_manifest(manifest: dict) -> None:
    """The checks Blender's extension validator makes that a typo would otherwise reach users with."""
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise ManifestError(f"manifest: {key!r} is missing or not a {kind.__name__}")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", manifest["id"]):
        raise ManifestError("manifest: id must be a Python identifier")
    for key in ("version", "schema_version", "blender_version_min"):
        if not SEMVER.match(manifest[key]):
            raise ManifestError(f"manifest: {key} {manifest[key]!r} is not MAJOR.MINOR.PATCH")
    if manifest["type"] != "add-on":
        raise ManifestError("manifest: type must be 'add-on'")
    tagline = manifest["tagline"]
    if len(tagline) > 64 or tagline[-1:] in ".!?":
        raise ManifestError("manifest: tagline must be at most 64 characters with no closing punctuation")
    if not all(isinstance(item, str) and item.startswith("SPDX:") for item in manifest["license"]):
        raise ManifestError("manifest: license entries must look like 'SPDX:GPL-3.0-or-later'")
    for name, reason in manifest.get("permissions", {}).items():
        if name not in ("files", "network", "clipboard", "camera", "microphone"):
            raise ManifestError(f"manifest: unknown permission {name!r}")
        if not isinstance(reason, str) or not reason or len(reason) > 64 or reason.endswith("."):
            raise ManifestError(f"manifest: permission {name!r} needs a reason of at most 64 characters, no final period")


def read_manifest() -> dict:
    with open(ROOT / "blender_manifest.toml", "rb") as handle:
        manifest = tomllib.load(handle)
    validate_manifest(manifest)
    return manifest


def extension_files() -> list[Path]:
    files = [ROOT / name for name in ROOT_FILES]
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            relative = path.relative_to(ROOT)
            skipped = SKIP_PARTS & set(relative.parts) or path.suffix in SKIP_SUFFIXES or relative.as_posix() in SKIP_FILES
            if path.is_file() and not skipped:
                files.append(path)
    return files


def build(out_dir: Path) -> Path:
    manifest = read_manifest()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in extension_files():
            archive.write(path, path.relative_to(ROOT).as_posix())
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the zip (default: dist/)")
    parser.add_argument("--check", action="store_true", help="validate the manifest and list the files; write nothing")
    args = parser.parse_args(argv)
    try:
        if args.check:
            manifest = read_manifest()
            files = extension_files()
            print(f"{manifest['id']} {manifest['version']}: manifest valid, {len(files)} files")
            return 0
        print(build(args.out))
        return 0
    except (ManifestError, tomllib.TOMLDecodeError) as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
