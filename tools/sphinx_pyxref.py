"""Sphinx extension: resolve a Python cross-reference the way Python resolves the name.

autodoc documents each object once, where it is defined (``mplib.pruner.Pruner``). Docstrings
naturally name objects the way their code does: ``:class:`MaskedLinear``` inside
``mplib.surgery``, which imports it, or ``:class:`mplib.Pruner```, the package's re-export.
The Python domain finds no target for those, and the strict build (``-n``) turns that into a
warning. When that happens, this looks the name up in the module the reference was written in
(then as an absolute import), and retries with the name under which the same object is documented.

Enabled in _config.yml under ``sphinx: local_extensions``.
"""

from __future__ import annotations

import importlib

_MISSING = object()


def _lookup(target: str, modname: str | None):
    """The object ``target`` names, seen from module ``modname`` (or absolutely)."""
    parts = target.split(".")
    candidates = []
    if modname:
        candidates.append((modname, parts))
    candidates += [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    for module, attrs in candidates:
        try:
            obj = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - any import failure just means "not this one"
            continue
        for attr in attrs:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                break
        if obj is not _MISSING:
            return obj
    return _MISSING


def _documented_names(documented: dict, obj, tail: str) -> list[str]:
    """Names of documented Python objects that are ``obj`` (canonical name first)."""
    names = []
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        names.append(f"{module}.{qualname}")
    for name in documented:
        if name.rsplit(".", 1)[-1] == tail and name not in names:
            if _lookup(name, None) is obj:
                names.append(name)
    return [n for n in names if n in documented]


def _on_missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py" or not node.get("reftarget"):
        return None
    target = node["reftarget"].lstrip("~.")
    obj = _lookup(target, node.get("py:module"))
    if obj is _MISSING:
        return None
    domain = env.get_domain("py")
    documented = domain.objects
    for name in _documented_names(documented, obj, target.rsplit(".", 1)[-1]):
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
        )
        if resolved is not None:
            return resolved
    return None


def setup(app):
    app.connect("missing-reference", _on_missing_reference)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
