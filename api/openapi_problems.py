"""Every error response in the OpenAPI document, with its problem type.

A client generated from the schema must know which problems an operation can answer with, by status
and by ``code``. Listing them by hand on 76 handlers would drift from the code, so they are found in
it: from each handler, the functions it calls are followed through the project's modules (names a
module or a class resolves; calls on objects handed in at run time cannot be followed, so a handler
names those with ``opt={"problems": [...]}``), and every ``raise`` of an error of the hierarchy is
collected. To those come what any operation of its shape can answer: a body that is not JSON (400),
input that does not validate (422), a missing or wrong token and a token of the wrong role on guarded
routes (401, 403), the database unavailable or busy (503), and the internal error (500). Each status
then documents ``application/problem+json`` with the codes (and ``type`` URNs) it may carry.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Components, OpenAPI, OpenAPIMediaType, OpenAPIResponse, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

from api.database import DatabaseBusy, DatabaseUnavailable
from api.errors import PROBLEM_JSON, STATUS_BY_KIND, problem_type
from domain.errors import CarbonRewardsError, Forbidden, InvalidInput, MalformedBody, Unauthenticated
from domain.identity import TokenExpired, TokenInvalid

_PROJECT = ("api.", "domain.", "ledger.", "integrations.")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
#: Problems the framework's own errors become (api.errors): (status, code, title).
_NOT_FOUND = (404, "not_found", "Not found")
_INTERNAL = (500, "internal_error", "Internal error")
_PROBLEM_SCHEMA = "Problem"
#: ``{tree_size:int}`` in a route is ``{tree_size}`` in the document.
_TYPED_PARAMETER = re.compile(r"\{(\w+):\w+\}")


def _walk_calls(function: Callable[..., Any]) -> Iterator[type[CarbonRewardsError]]:
    """The errors of the hierarchy ``function`` raises, itself or through what it calls."""
    seen: set[Any] = set()
    pending = [function]
    while pending:
        current = inspect.unwrap(pending.pop())
        code = getattr(current, "__code__", None)
        if code is None or code in seen or not str(getattr(current, "__module__", "")).startswith(_PROJECT):
            continue
        seen.add(code)
        raised, called = _scan(current)
        yield from raised
        pending.extend(called)


@functools.cache
def _parsed(function: Callable[..., Any]) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None


def _scan(function: Callable[..., Any]) -> tuple[list[type[CarbonRewardsError]], list[Callable[..., Any]]]:
    tree = _parsed(function)
    if tree is None:
        return [], []
    scope = _Scope(function)
    for node in ast.walk(tree):  # ``guard = rt.guard``, ``tokens: Verifier = ...``: the local's class
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            pairs = (
                zip(target.elts, value.elts, strict=False)
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                else [(target, value)]
            )
            for name, expr in pairs:
                found = scope.resolve(expr)
                if isinstance(name, ast.Name) and isinstance(found, type):
                    scope.names[name.id] = found
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = scope.resolve(node.annotation)
            if isinstance(found, type):
                scope.names[node.target.id] = found
    raised: list[type[CarbonRewardsError]] = []
    called: list[Callable[..., Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = scope.resolve(node.exc.func if isinstance(node.exc, ast.Call) else node.exc)
            if isinstance(target, types.FunctionType):  # ``raise build_error(...)``: what it returns
                target = _annotated_types(target).get("return")
            if isinstance(target, type) and issubclass(target, CarbonRewardsError):
                raised.append(target)
        elif isinstance(node, ast.Call):
            target = scope.resolve(node.func)
            if isinstance(target, type) and issubclass(target, CarbonRewardsError):
                raised.append(target)  # built to be raised elsewhere (a group hands it to its request)
            elif isinstance(target, types.FunctionType | types.MethodType):
                called.append(target)
            elif isinstance(target, type) and not issubclass(target, BaseException):
                init = getattr(target, "__init__", None)
                if isinstance(init, types.FunctionType):
                    called.append(init)
    return raised, called


class _Scope:
    """Resolves a name or a dotted attribute as ``function`` sees it: its closure, its module, its class,
    and its parameters' annotations (``rt: ActionsRuntime`` makes ``rt.partners.fetch_record`` known)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.names: dict[str, Any] = dict(getattr(function, "__globals__", {}))
        closure = getattr(function, "__closure__", None) or ()
        for name, cell in zip(function.__code__.co_freevars, closure, strict=False):
            try:
                self.names[name] = cell.cell_contents
            except ValueError:
                continue
        self.names.update(_annotated_types(function))
        owner = function.__qualname__.rpartition(".<locals>.")[2].rpartition(".")[0]
        if owner and owner in self.names:
            self.names["self"] = self.names["cls"] = self.names[owner]

    def resolve(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if isinstance(base, types.ModuleType):
                return getattr(base, node.attr, None)
            if isinstance(base, type):
                found = inspect.getattr_static(base, node.attr, None)
                if isinstance(found, staticmethod | classmethod):
                    return found.__func__
                return found if found is not None else _field_types(base).get(node.attr)
        return None


def _concrete(annotation: Any) -> type | None:
    """The one class an annotation names (``NamedDependency[X]`` and ``X | None`` give ``X``)."""
    for _ in range(4):
        if isinstance(annotation, type) and not typing.get_args(annotation):
            return annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is typing.Annotated or len(args) == 1:
            annotation = args[0]
        else:
            return typing.get_origin(annotation) if isinstance(typing.get_origin(annotation), type) else None
    return None


def _annotated_types(function: Callable[..., Any]) -> dict[str, type]:
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # noqa: BLE001 - an annotation that cannot be evaluated is just not followed
        return {}
    return {name: cls for name, hint in hints.items() if (cls := _concrete(hint))}


@functools.cache
def _field_types(cls: type) -> dict[str, type]:
    """The classes of ``cls``'s annotated attributes (dataclass fields, ``self.x: X``)."""
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001
        return {}
    return {name: found for name, hint in hints.items() if (found := _concrete(hint))}


def problems_of(handler: HTTPRouteHandler, method: str) -> dict[int, dict[str, str]]:
    """What ``handler`` may answer with: status → {code: title}."""
    errors: set[type[CarbonRewardsError]] = set(_walk_calls(handler.fn))
    errors.update(handler.opt.get("problems", ()))
    guards = handler.resolve_guards()
    for guard in guards:
        errors.update(_walk_calls(guard))
    if guards:  # the guards verify the token through an object of the app's state: named here
        errors.update({Unauthenticated, TokenInvalid, TokenExpired, Forbidden})
    if handler.parsed_fn_signature.parameters or method in _BODY_METHODS:
        errors.add(InvalidInput)
    if method in _BODY_METHODS:
        errors.add(MalformedBody)
    errors.update({DatabaseUnavailable, DatabaseBusy})
    found: dict[int, dict[str, str]] = {}
    for error in errors:
        found.setdefault(STATUS_BY_KIND[error.kind], {})[error.code] = error.title
    if any("{" in path for path in handler.paths):
        status, code, title = _NOT_FOUND
        found.setdefault(status, {}).setdefault(code, title)
    status, code, title = _INTERNAL
    found.setdefault(status, {})[code] = title
    return found


def _response(status: int, codes: dict[str, str]) -> OpenAPIResponse:
    ordered = sorted(codes)
    schema = Schema(
        all_of=[
            Reference(f"#/components/schemas/{_PROBLEM_SCHEMA}"),
            Schema(
                type=OpenAPIType.OBJECT,
                properties={
                    "code": Schema(type=OpenAPIType.STRING, enum=ordered),
                    "type": Schema(type=OpenAPIType.STRING, enum=[problem_type(c) for c in ordered]),
                    "status": Schema(type=OpenAPIType.INTEGER, const=status),
                },
            ),
        ]
    )
    description = "; ".join(f"`{code}`: {codes[code]}" for code in ordered)
    return OpenAPIResponse(description=description, content={PROBLEM_JSON: OpenAPIMediaType(schema=schema)})


def _problem_schema() -> Schema:
    string = Schema(type=OpenAPIType.STRING)
    return Schema(
        type=OpenAPIType.OBJECT,
        description="An error (RFC 9457); branch on `code` (or `type`, its URN), never on the prose.",
        required=["type", "code", "title", "status", "detail"],
        properties={
            "type": Schema(type=OpenAPIType.STRING, format="uri", description="urn:carbon-rewards:problem:<code>"),
            "code": string,
            "title": string,
            "status": Schema(type=OpenAPIType.INTEGER),
            "detail": string,
            "instance": string,
            "request_id": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL]),
            "errors": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT), description="Per field"),
        },
    )


def _operations(app: Litestar) -> Iterable[tuple[str, str, HTTPRouteHandler]]:
    for route in app.routes:
        for method, (handler, _) in getattr(route, "route_handler_map", {}).items():
            if method != "OPTIONS" and handler.resolve_include_in_schema():
                yield _TYPED_PARAMETER.sub(r"{\1}", route.path), method, handler


def document_problems(app: Litestar) -> None:
    """Replace each operation's error responses (the framework's generic 400 among them) by its problems."""
    document: OpenAPI = app.openapi_schema
    components = document.components if isinstance(document.components, Components) else Components()
    components.schemas = {**(components.schemas or {}), _PROBLEM_SCHEMA: _problem_schema()}
    document.components = components
    for path, method, handler in _operations(app):
        item = (document.paths or {}).get(path)
        operation = getattr(item, method.lower(), None) if item is not None else None
        if operation is None:
            continue
        kept = {status: r for status, r in (operation.responses or {}).items() if not status.startswith(("4", "5"))}
        for status, codes in sorted(problems_of(handler, method).items()):
            kept[str(status)] = _response(status, codes)
        operation.responses = kept
