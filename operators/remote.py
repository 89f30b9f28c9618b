"""Test connection / Trust host key for the remote (SSH) engine (preferences › Engine location).

Test connection runs ssh in a thread and returns at once, so Blender's UI stays live however
slow the server is; a bpy.app.timers timer redraws the preferences with its progress until it
answers or its time limit passes.
"""

from __future__ import annotations

import threading

import bpy

from ..engine import remote
from ..gen3d_addon.preferences import CONNECTION_TEST, get_preferences, remote_target

WATCH_INTERVAL_S = 0.2
# Every step of a check is bounded by its time limit; past it plus this, a thread still silent
# (a name lookup that hangs) is left to end alone and the test reports no answer.
ABANDON_AFTER_S = 5.0

# Keys the last Test connection scanned from a server not yet known, for the user's yes.
_pending: dict[str, object] = {"target": None, "keys": []}


def _redraw_preferences(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def testing() -> bool:
    check = CONNECTION_TEST["check"]
    return check is not None and not check.done


class GEN3D_OT_test_connection(bpy.types.Operator):
    """Connect to the remote engine: reachable, host key, engine and protocol versions, device, rasterizer"""

    bl_idname = "gen3d.test_connection"
    bl_label = "Test connection"

    timeout: bpy.props.FloatProperty(
        name="Time limit", description="Give up after this many seconds", default=remote.CHECK_TIMEOUT_S, min=1.0,
        options={"SKIP_SAVE"},
    )

    @classmethod
    def poll(cls, context):
        return not testing()

    def execute(self, context):
        _pending.update(target=None, keys=[])
        try:
            target = remote_target(get_preferences(context))
        except remote.RemoteError as exc:
            CONNECTION_TEST.update(check=remote.Check(lines=[(False, str(exc))], done=True), target=None)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        check = remote.Check(timeout=self.timeout)
        CONNECTION_TEST.update(check=check, target=target)
        threading.Thread(target=remote.check_connection, args=(target,), kwargs={"check": check, "timeout": self.timeout},
                         daemon=True).start()
        if not bpy.app.timers.is_registered(watch_connection_test):
            # persistent: the preferences outlive a file loaded meanwhile, so does the test
            bpy.app.timers.register(watch_connection_test, first_interval=WATCH_INTERVAL_S, persistent=True)
        _redraw_preferences(context)
        self.report({"INFO"}, f"Gen3D: testing the connection to {target.label}")
        return {"FINISHED"}


def watch_connection_test() -> float | None:
    """bpy.app.timers: redraw the preferences while the test runs; when it ends, offer its new
    host keys to Trust host key and print the answer.  None: done, the timer stops."""
    check, target = CONNECTION_TEST["check"], CONNECTION_TEST["target"]
    _redraw_preferences(bpy.context)
    if check is None:
        return None
    if not check.done and check.seconds < check.timeout + ABANDON_AFTER_S:
        return WATCH_INTERVAL_S
    if not check.done:  # the thread goes on alone; what it still writes lands in this old check
        check = remote.Check(lines=[*check.lines, (False, f"{check.step}: no answer within {check.timeout:.0f} s")], done=True)
        CONNECTION_TEST["check"] = check
    if check.new_host_keys:
        _pending.update(target=target, keys=check.new_host_keys)
    print("Gen3D remote: " + "; ".join(text for _, text in check.lines))
    return None


class GEN3D_OT_trust_host_key(bpy.types.Operator):
    """Add the new host key shown by Test connection to your known_hosts (never replaces a changed key)"""

    bl_idname = "gen3d.trust_host_key"
    bl_label = "Trust host key"

    @classmethod
    def poll(cls, context):
        return bool(_pending["keys"]) and not testing()

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(
            self, event, title="Trust this host key?",
            message="; ".join(remote.fingerprints(_pending["keys"])), confirm_text="Trust",
        )

    def execute(self, context):
        target, keys = _pending["target"], _pending["keys"]
        try:
            if target != remote_target(get_preferences(context)):
                raise remote.RemoteError("the connection settings changed since the test; test the connection again")
            path = remote.trust_host_keys(target, keys)
        except remote.RemoteError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _pending.update(target=None, keys=[])
        self.report({"INFO"}, f"Gen3D: host key added to {path}")
        return bpy.ops.gen3d.test_connection()  # tests again with the key now known


def unregister_extra() -> None:
    if bpy.app.timers.is_registered(watch_connection_test):
        bpy.app.timers.unregister(watch_connection_test)


CLASSES = [GEN3D_OT_test_connection, GEN3D_OT_trust_host_key]
