"""Add-on preferences: where the engine lives, which profile and device it uses.

They double as a set-up checklist: the panel shows whether the engine's Python exists, so an
artist sees what is missing before pressing Generate.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bpy

from ..engine import remote

# The extension's package (e.g. "bl_ext.user_default.gen3d"): preferences are keyed by it.
ADDON_PACKAGE = __package__.rsplit(".", 1)[0]
# The folder holding engine/ and requirements/ inside the installed extension.
EXTENSION_ROOT = Path(__file__).resolve().parent.parent

# The engine's "tiny" and "bench" profiles are for its tests and benchmarks: the extension zip
# ships without their models (build.py), so they are not offered here.
PROFILE_ITEMS = [
    ("offline", "Offline", "No neural weights: needs an RGB-D input (image + depth); classical inpainting"),
    ("full", "Full", "The paper's models (MoGe-2, SAM, Stable Diffusion); needs a GPU and the weights"),
]
DEVICE_ITEMS = [
    ("auto", "Auto", "CUDA when the engine sees a GPU, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("cpu", "CPU", "Slow but works everywhere"),
]


# Test connection's last check (remote.Check, filled by its thread while it runs) and the target
# it tested; drawn in the preferences, never saved.
CONNECTION_TEST: dict[str, remote.Check | remote.Target | None] = {"check": None, "target": None}


def connection_lines() -> list[tuple[str, str]]:
    """(icon, text) for each line of the last Test connection, and while it runs what it is doing."""
    check = CONNECTION_TEST["check"]
    if check is None:
        return []
    lines = [("CHECKMARK" if ok else "ERROR", text) for ok, text in list(check.lines)]
    if not check.done:
        lines.append(("SORTTIME", f"Testing: {check.step or 'starting'}… {check.seconds:.0f} s (gives up at {check.timeout:.0f} s)"))
    return lines


def user_folder(*parts: str) -> Path:
    """A folder in the extension's user directory (kept across updates of the extension)."""
    base = Path(bpy.utils.extension_path_user(ADDON_PACKAGE, create=True))
    folder = base.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def default_engine_python() -> Path:
    venv = Path(bpy.utils.extension_path_user(ADDON_PACKAGE, create=True)) / "engine-venv"
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


class Gen3DPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    engine_python: bpy.props.StringProperty(
        name="Engine Python",
        description="Python interpreter of the engine's environment (empty: the one Set up engine creates)",
        subtype="FILE_PATH",
        default="",
    )
    profile: bpy.props.EnumProperty(name="Profile", items=PROFILE_ITEMS, default="offline")
    device: bpy.props.EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    keep_engine_loaded: bpy.props.BoolProperty(
        name="Keep engine loaded",
        description="One engine process stays up between runs with its models in memory, so the next "
        "Generate starts at once (Release engine frees the memory)",
        default=False,
    )
    torch_variant: bpy.props.EnumProperty(
        name="PyTorch build",
        description="Which PyTorch Set up engine installs",
        items=[("cpu", "CPU", "Small download, no GPU"), ("cuda", "CUDA", "NVIDIA GPU build (several GB)")],
        default="cpu",
    )
    jobs_folder: bpy.props.StringProperty(
        name="Jobs folder",
        description="Where job folders are created (empty: next to the saved .blend, else the user folder)",
        subtype="DIR_PATH",
        default="",
    )
    engine_location: bpy.props.EnumProperty(
        name="Engine location",
        items=[
            ("LOCAL", "This computer", "The engine runs here, from Engine Python"),
            ("REMOTE", "Remote (SSH)", "The engine runs on a server (e.g. with a GPU) reached over SSH"),
        ],
        default="LOCAL",
    )
    # Remote (SSH): no password anywhere; the key, agent or ~/.ssh/config authenticates.
    remote_host: bpy.props.StringProperty(name="Host", description="Server name, IPv4 address or a ~/.ssh/config alias", default="")
    remote_user: bpy.props.StringProperty(name="User", description="Login name (empty: ssh's default or the config's)", default="")
    remote_port: bpy.props.IntProperty(name="Port", description="SSH port (0: 22 or the config's)", default=0, min=0, max=65535)
    remote_identity_file: bpy.props.StringProperty(
        name="Identity file", description="Private key (empty: your SSH agent, ~/.ssh/config or ssh's default keys)",
        subtype="FILE_PATH", default="",
    )
    remote_known_hosts: bpy.props.StringProperty(
        name="Known hosts", description="known_hosts file the host key is checked against (empty: ~/.ssh/known_hosts)",
        subtype="FILE_PATH", default="",
    )
    remote_python: bpy.props.StringProperty(name="Remote engine Python", description="The engine's Python on the server (~/ is the remote home)", default=remote.Target.python)
    remote_engine_dir: bpy.props.StringProperty(name="Remote engine folder", description="The server's folder holding engine/ (empty: the engine is installed in that Python)", default=remote.Target.engine_dir)
    remote_jobs_folder: bpy.props.StringProperty(name="Remote jobs folder", description="Jobs go here on the server; the engine writes nothing outside it", default=remote.Target.jobs_folder)
    model_overrides: bpy.props.StringProperty(
        name="Model overrides",
        description="Per-model weights, e.g. 'moge=/models/moge-2; sd-inpaint=my-org/my-inpaint' (local folder or Hugging Face id)",
        default="",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "engine_location", expand=True)
        if self.engine_location == "REMOTE":
            self.draw_remote(layout.box())
        else:
            self.draw_local(layout)
        layout.prop(self, "profile")
        layout.prop(self, "device")
        row = layout.row()
        row.prop(self, "keep_engine_loaded")
        row.operator("gen3d.release_engine", icon="X")
        layout.prop(self, "jobs_folder")
        layout.prop(self, "model_overrides")

    def draw_remote(self, box):
        for name in ("remote_host", "remote_user", "remote_port", "remote_identity_file", "remote_known_hosts",
                     "remote_python", "remote_engine_dir", "remote_jobs_folder"):
            box.prop(self, name)
        row = box.row()
        row.operator("gen3d.test_connection", icon="PLUGIN")
        row.operator("gen3d.trust_host_key", icon="LOCKED")
        for icon, text in connection_lines():
            box.label(text=text, icon=icon)

    def draw_local(self, layout):
        python = resolved_engine_python(self)
        box = layout.box()
        ok = python.is_file()
        box.label(text=f"Engine: {python}", icon="CHECKMARK" if ok else "ERROR")
        if not ok:
            box.label(text="Press Set up engine (needs Online Access) or point Engine Python at an existing one.")
        row = box.row()
        row.prop(self, "torch_variant")
        row.operator("gen3d.setup_engine", icon="CONSOLE")
        layout.prop(self, "engine_python")


def get_preferences(context=None) -> Gen3DPreferences:
    context = context or bpy.context
    return context.preferences.addons[ADDON_PACKAGE].preferences


def resolved_engine_python(prefs: Gen3DPreferences) -> Path:
    if prefs.engine_python:
        return Path(bpy.path.abspath(prefs.engine_python))
    return default_engine_python()


def remote_target(prefs: Gen3DPreferences) -> remote.Target:
    """The server from the preferences; raises remote.RemoteError naming what to fix."""
    local = lambda path: str(Path(bpy.path.abspath(path)).expanduser()) if path else ""  # noqa: E731
    return remote.Target(
        host=prefs.remote_host.strip(), user=prefs.remote_user.strip(), port=prefs.remote_port,
        identity_file=local(prefs.remote_identity_file), known_hosts=local(prefs.remote_known_hosts),
        python=prefs.remote_python, engine_dir=prefs.remote_engine_dir, jobs_folder=prefs.remote_jobs_folder,
    )


def jobs_root(prefs: Gen3DPreferences) -> Path:
    if prefs.jobs_folder:
        root = Path(bpy.path.abspath(prefs.jobs_folder))
    elif bpy.data.filepath:
        root = Path(bpy.data.filepath).parent / "gen3d_jobs"
    else:
        root = user_folder("jobs")
    root.mkdir(parents=True, exist_ok=True)
    return root


def parse_model_overrides(text: str) -> dict[str, str]:
    overrides = {}
    for item in text.replace("\n", ";").split(";"):
        if item.strip():
            name, sep, source = item.partition("=")
            if not sep or not name.strip() or not source.strip():
                raise ValueError(f"model override {item.strip()!r} is not NAME=ID_OR_PATH")
            overrides[name.strip()] = os.path.expanduser(source.strip())
    return overrides


CLASSES = [Gen3DPreferences]

register, unregister = bpy.utils.register_classes_factory(CLASSES)
