"""A pydantic model that only an agent holding a scope can bring into being.

    from agentsudo_tokens.integrations.pydantic import ScopedModel

    class RefundRequest(ScopedModel, scope="write:refunds"):
        order_id: str
        amount: float

    with support_bot.start_session():
        RefundRequest(order_id="123", amount=50.0)    # allowed
    RefundRequest(order_id="123", amount=50.0)        # PermissionDeniedError: no session

The original spelling, ``_required_scope: ClassVar[str] = "write:refunds"`` in
the class body, works too. The scope is checked (valid, concrete) when the class
is defined. A subclass inherits it, may add one (then both are required), and
may never drop it.

Every way pydantic makes an instance is guarded: ``Model(...)``,
``model_validate``, ``model_validate_json``, ``model_validate_strings``, a
field of another model, a ``TypeAdapter``, a FastAPI body or a LangChain
``args_schema`` (all of these run the model's validator), and the ways that skip
validation: ``model_construct``, ``model_copy``, ``copy.copy``,
``copy.deepcopy``, ``pickle`` and the deprecated ``copy()``. Handing an existing
instance to another model re-enters the validator and is checked too; JSON
schemas and OpenAPI documents need no session.

The check is a ``mode="wrap"`` model validator on ``ScopedModel``. Pydantic puts
wrap validators around the whole model schema, so the decision is made before
any field is validated: no field validator, ``default_factory`` or ``before``
model validator of a subclass runs for an agent that lacks the scope. (A wrap
model validator that a subclass declares itself is placed around ours; keep
side effects out of those.) ``__init__`` alone would not do: ``model_validate``
and nested models never call it.

Known pydantic limitation (pydantic#9204): a model with any ``before`` or
``wrap`` model validator validates JSON input as Python objects, so a model
with ``strict=True`` loses the JSON-only conversions (a JSON array into a
``tuple``, a string into a ``datetime``) in ``model_validate_json``. Lax models,
the default, are unaffected.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ModelWrapValidatorHandler, model_validator

from ..errors import ConfigError
from ..guard.sudo import check_scope
from ..tokens.scopes import validate_required_scope

__all__ = ["ScopedModel"]

_UNSET: Any = object()


def _declared_scopes(cls: type[ScopedModel], keyword: str | None) -> tuple[str, ...]:
    """The scopes ``cls`` requires: its bases' scopes, plus the one it declares."""
    inherited: dict[str, None] = {}
    for base in cls.__bases__:
        inherited.update(dict.fromkeys(getattr(base, "__agentsudo_scopes__", ())))
    # Read from the class body as written: pydantic later turns an annotated
    # ``_required_scope: str = ...`` into a private attribute and removes it.
    spelled = cls.__dict__.get("_required_scope", _UNSET)
    if keyword is not None and spelled is not _UNSET and spelled != keyword:
        raise TypeError(
            f"{cls.__qualname__}: scope={keyword!r} and _required_scope={spelled!r} disagree"
        )
    declared = keyword if keyword is not None else spelled
    if declared is _UNSET:
        return tuple(inherited)
    if declared is None:
        if inherited:
            raise TypeError(
                f"{cls.__qualname__} may not drop the scope it inherits ({', '.join(inherited)})"
            )
        return ()
    scope = validate_required_scope(declared)
    return tuple({**inherited, scope: None})


def _require(cls: type[ScopedModel]) -> None:
    """Refuse unless the acting agent holds every scope ``cls`` requires."""
    scopes = cls.__agentsudo_scopes__
    if not scopes:
        raise ConfigError(
            f"{cls.__qualname__} is a ScopedModel that declares no scope; "
            f"declare one with `class {cls.__name__}(ScopedModel, scope=...)`",
            expected="a required scope",
            found="none",
        )
    for scope in scopes:
        check_scope(scope, what=cls.__qualname__)


class ScopedModel(BaseModel):
    """A ``BaseModel`` whose instances only an agent holding its scope can create.

    Declare the scope as a class keyword, ``class M(ScopedModel, scope="write:refunds")``,
    or as ``_required_scope: ClassVar[str] = "write:refunds"``.

    :raises InvalidScopeError: at class definition, for a scope outside the grammar
        or a wildcard.
    :raises TypeError: at class definition, for a subclass that drops an inherited
        scope or overrides the scope check.
    :raises PermissionDeniedError: on construction, validation or copy, when the
        acting agent lacks a required scope (or no session is active, or it has expired).
    :raises ConfigError: on construction of a ``ScopedModel`` that declares no scope.
    """

    _required_scope: ClassVar[str | None] = None
    """The original library's spelling of the scope; ``__agentsudo_scopes__`` is what counts."""

    __agentsudo_scopes__: ClassVar[tuple[str, ...]] = ()
    """Every scope an agent must hold to create an instance: inherited ones first."""

    def __init_subclass__(cls, *, scope: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__agentsudo_scopes__ = _declared_scopes(cls, scope)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        check = cls.__pydantic_decorators__.model_validators.get("_agentsudo_scope_check")
        if check is None or getattr(check.func, "__func__", None) is not _scope_check:
            raise TypeError(
                f"{cls.__qualname__} may not override ScopedModel's scope check "
                "(_agentsudo_scope_check)"
            )
        cls._required_scope = cls.__agentsudo_scopes__[-1] if cls.__agentsudo_scopes__ else None

    @model_validator(mode="wrap")
    @classmethod
    def _agentsudo_scope_check(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Decide before pydantic validates a single field."""
        _require(cls)
        return handler(data)

    @classmethod
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any) -> Self:
        """As ``BaseModel.model_construct``, after the scope check (it skips validation)."""
        _require(cls)
        return super().model_construct(_fields_set, **values)

    def __copy__(self) -> Self:
        _require(type(self))
        return super().__copy__()

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        _require(type(self))
        return super().__deepcopy__(memo)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        _require(type(self))
        super().__setstate__(state)

    def copy(self, **kwargs: Any) -> Self:
        """The deprecated ``BaseModel.copy``, after the scope check (it skips validation)."""
        _require(type(self))
        return super().copy(**kwargs)


_scope_check = ScopedModel.__pydantic_decorators__.model_validators[
    "_agentsudo_scope_check"
].func.__func__  # type: ignore[attr-defined]
