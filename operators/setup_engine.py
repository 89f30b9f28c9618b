"""Set up engine: create the engine's own Python environment from inside Blender.

A venv in the extension's user folder (kept across extension updates), then PyTorch (CPU or
CUDA build) and requirements/engine.txt, each step a subprocess run in a thread so Blender
stays responsive; progress shows in the status bar and Esc stops it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import bpy

from ..gen3d_addon.preferences import EXTENSION_ROOT, default_engine_python, get_preferences

TORCH_INDEX = {"cpu": "https://download.pytorch.org/whl/cpu", "cuda": "https://download.pytorch.org/whl/cu128"}


def setup_steps(python_for_venv: str, venv_python: Path, torch_variant: str) -> list[tuple[str, list[str]]]:
    """The commands Set up engine runs, in order: (label, argv)."""
    venv = venv_python.parent.parent
    requirements = EXTENSION_ROOT / "requirements"
    pip = [str(venv_python), "-m", "pip", "install", "--disable-pip-version-check"]
    return [
        ("Creating the engine environment", [python_for_venv, "-m", "venv", str(venv)]),
        ("Installing PyTorch", pip + ["torch", "torchvision", "--index-url", TORCH_INDEX[torch_variant]]),
        ("Installing the engine's packages", pip + ["-r", str(requirements / "engine.txt")]),
        ("Installing MoGe-2's model code", pip + ["--no-deps", "-r", str(requirements / "moge.txt")]),
        ("Checking the engine", [str(venv_python), "-m", "engine", "version"]),
        ("Building the 3DGS kernels (once)", [str(venv_python), "-m", "engine", "warmup"]),
    ]


class GEN3D_OT_setup_engine(bpy.types.Operator):
    """Create the engine's Python environment and install its packages (needs Online Access)"""

    bl_idname = "gen3d.setup_engine"
    bl_label = "Set up engine"

    _timer = None

    def invoke(self, context, event):
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Set up engine downloads packages: allow Online Access in Preferences > System > Network")
            return {"CANCELLED"}
        prefs = get_preferences(context)
        self._steps = setup_steps(sys.executable, default_engine_python(), prefs.torch_variant)
        self._index, self._process, self._failed, self._log = 0, None, "", []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _work(self) -> None:
        for index, (label, argv) in enumerate(self._steps):
            self._index = index
            if self._stop.is_set():
                return
            self._process = subprocess.Popen(
                argv, cwd=EXTENSION_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace",
            )
            for line in self._process.stdout:
                self._log = (self._log + [line.rstrip()])[-20:]
            if self._process.wait() != 0:
                self._failed = f"{label} failed: " + " | ".join(self._log[-3:])
                return
        self._index = len(self._steps)

    def modal(self, context, event):
        if event.type == "ESC":
            self._stop.set()
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if self._thread.is_alive():
            label = self._steps[min(self._index, len(self._steps) - 1)][0]
            context.workspace.status_text_set(f"Gen3D set-up: {label} ({self._index + 1}/{len(self._steps)}), Esc to stop")
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        if self._failed or self._stop.is_set():
            self.report({"ERROR"}, self._failed or "Set up engine stopped")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Gen3D engine ready: {Path(default_engine_python())}")
        return {"FINISHED"}


CLASSES = [GEN3D_OT_setup_engine]
