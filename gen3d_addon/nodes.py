"""A tiny layer for building node trees in code: sockets and links by *name*, never by the
generated identifiers ("Socket_3"), and existing groups reused instead of ``.001`` duplicates.

Internal groups (not meant for the artist's Add menu) are named with a leading ".".
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import bpy

SOCKET_TYPES = {
    "GEOMETRY": "NodeSocketGeometry",
    "FLOAT": "NodeSocketFloat",
    "INT": "NodeSocketInt",
    "BOOLEAN": "NodeSocketBool",
    "VECTOR": "NodeSocketVector",
    "COLOR": "NodeSocketColor",
    "MATERIAL": "NodeSocketMaterial",
    "OBJECT": "NodeSocketObject",
}


# Sockets Blender 5.0 renamed: their 4.2/4.5 LTS names.
_OLDER_NAMES = {"Factor": "Fac", "Mesh": "Geometry"}


def socket(sockets: Iterable[bpy.types.NodeSocket], name: str) -> bpy.types.NodeSocket:
    """The available socket called ``name`` (several nodes keep one hidden socket per data type)."""
    sockets = list(sockets)
    matches = [s for s in sockets if s.name == name] or [s for s in sockets if s.name == _OLDER_NAMES.get(name)]
    for candidate in matches:
        if not candidate.is_unavailable:
            return candidate
    raise KeyError(f"no available socket {name!r} among {[s.name for s in sockets]}")


def link(tree: bpy.types.NodeTree, from_node: bpy.types.Node, from_name: str, to_node: bpy.types.Node, to_name: str):
    return tree.links.new(socket(from_node.outputs, from_name), socket(to_node.inputs, to_name))


def node(tree: bpy.types.NodeTree, bl_idname: str, location: tuple[float, float] = (0, 0), **settings: Any):
    """Add a node; ``settings`` are node properties (data_type, operation...) set before inputs."""
    new = tree.nodes.new(bl_idname)
    new.location = location
    for key, value in settings.items():
        setattr(new, key, value)
    return new


def set_inputs(target: bpy.types.Node, **values: Any) -> None:
    """Default values of unlinked inputs, by socket name (underscores stand for spaces)."""
    for key, value in values.items():
        socket(target.inputs, key.replace("_", " ")).default_value = value


def geometry_group(
    name: str,
    inputs: list[tuple[str, str, dict[str, Any]]],
    build: Callable[[bpy.types.NodeTree, bpy.types.Node, bpy.types.Node], None],
    *,
    version: int = 1,
) -> bpy.types.GeometryNodeTree:
    """Return the geometry node group ``name``, building it once.

    ``inputs``: (socket name, type key of SOCKET_TYPES, settings such as default_value,
    min_value, description).  A Geometry input and output come first.  ``build(tree, group_in,
    group_out)`` adds and links the nodes.  A group from an older add-on version (custom property
    ``gen3d_version``) is rebuilt in place so objects using it pick up the new layout.
    """
    tree = bpy.data.node_groups.get(name)
    if tree is not None and tree.bl_idname == "GeometryNodeTree" and tree.get("gen3d_version") == version:
        return tree
    if tree is None or tree.bl_idname != "GeometryNodeTree":
        tree = bpy.data.node_groups.new(name, "GeometryNodeTree")
    tree.interface.clear()
    tree.nodes.clear()
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type=SOCKET_TYPES["GEOMETRY"])
    for socket_name, kind, settings in inputs:
        item = tree.interface.new_socket(socket_name, in_out="INPUT", socket_type=SOCKET_TYPES[kind])
        for key, value in settings.items():
            setattr(item, key, value)
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type=SOCKET_TYPES["GEOMETRY"])
    group_in = node(tree, "NodeGroupInput", (-900, 0))
    group_out = node(tree, "NodeGroupOutput", (900, 0))
    build(tree, group_in, group_out)
    tree["gen3d_version"] = version
    return tree


def ensure_modifier(obj: bpy.types.Object, group: bpy.types.NodeTree, name: str) -> bpy.types.NodesModifier:
    """The object's geometry-nodes modifier ``name`` running ``group`` (added once)."""
    modifier = obj.modifiers.get(name)
    if modifier is None or modifier.type != "NODES":
        modifier = obj.modifiers.new(name, "NODES")
    modifier.node_group = group
    return modifier


def input_identifiers(group: bpy.types.NodeTree) -> dict[str, str]:
    """The group's inputs, name -> identifier (the key a modifier stores the input's value under)."""
    return {item.name: item.identifier for item in group.interface.items_tree
            if item.item_type == "SOCKET" and item.in_out == "INPUT"}


def input_identifier(group: bpy.types.NodeTree, name: str) -> str:
    identifiers = input_identifiers(group)
    if name not in identifiers:
        raise KeyError(f"node group {group.name!r} has no input {name!r}")
    return identifiers[name]


def modifier_input(modifier: bpy.types.NodesModifier, name: str) -> Any:
    return modifier[input_identifier(modifier.node_group, name)]


def set_modifier_input(modifier: bpy.types.NodesModifier, name: str, value: Any) -> None:
    modifier[input_identifier(modifier.node_group, name)] = value
