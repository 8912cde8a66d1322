"""Safe formula parser: user text -> syntax tree -> torch evaluation or module.

User text never reaches ``eval``, ``exec`` or ``compile``. A tokenizer and a
recursive-descent parser accept only numbers, names, ``+ - * / ^ **``,
parentheses, commas and a whitelist of functions, so a formula cannot reach
attributes, subscripts, strings, imports or builtins. Every refusal raises
:class:`~paratrain.errors.FormulaError` naming the problem and its 1-based position.

Grammar, lowest precedence first (``^`` and ``**`` both mean power)::

    expression := term (('+' | '-') term)*
    term       := unary (('*' | '/') unary)*
    unary      := ('-' | '+') unary | power
    power      := primary (('^' | '**') unary)?
    primary    := NUMBER | NAME | NAME '(' [expression (',' expression)*] ')' | '(' expression ')'

Power is right-associative and binds tighter than unary minus, as in Python:
``2^3^2 == 512`` and ``-x^2 == -(x^2)``. The names ``pi`` and ``e`` are constants;
any other name that is not a function is a variable (a data column) or a parameter.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from paratrain.errors import DataError, FormulaError

__all__ = ["Formula", "FormulaModel", "evaluate_batched", "parse_formula", "children", "FUNCTIONS", "CONSTANTS"]


FUNCTIONS: dict[str, tuple[int, Callable[..., torch.Tensor]]] = {
    "exp": (1, torch.exp), "log": (1, torch.log), "log10": (1, torch.log10), "log2": (1, torch.log2),
    "sqrt": (1, torch.sqrt), "abs": (1, torch.abs), "sin": (1, torch.sin), "cos": (1, torch.cos),
    "tan": (1, torch.tan), "arctan": (1, torch.atan), "atan": (1, torch.atan), "sinh": (1, torch.sinh),
    "cosh": (1, torch.cosh), "tanh": (1, torch.tanh), "sigmoid": (1, torch.sigmoid), "erf": (1, torch.erf),
    "min": (2, torch.minimum), "max": (2, torch.maximum), "pow": (2, torch.pow),
}
"""The only functions a formula may call: name -> (number of arguments, torch function)."""

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
"""Names that stand for numbers; they can never be variables or parameters."""

# Parser recursion grows by ~6 Python frames per level of parentheses or unary
# sign, and evaluation by one frame per tree level: both limits keep a hostile
# or runaway formula far below Python's recursion limit.
MAX_NESTING = 50
MAX_TREE_DEPTH = 200


# --- syntax tree -------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: float
    text: str  # as written: '1.5e-3', or the constant's name 'pi'
    position: int


@dataclass(frozen=True)
class Name:
    name: str
    position: int


@dataclass(frozen=True)
class Unary:
    op: str  # only '-': unary '+' is dropped by the parser
    operand: Node
    position: int


@dataclass(frozen=True)
class Binary:
    op: str  # one of + - * / ^  ('**' is stored as '^')
    left: Node
    right: Node
    position: int


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]
    position: int


Node = Union[Number, Name, Unary, Binary, Call]


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of a node, left to right."""
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Call):
        return node.args
    return ()


def _walk(root: Node) -> Iterable[tuple[Node, int]]:
    """Yield (node, depth) without recursion, so any tree can be inspected."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in children(node))


def _error(text: str, position: int, problem: str, hint: str = "") -> FormulaError:
    if len(text) > 80:  # quote only the neighbourhood of a long formula, not all of it
        start = max(position - 40, 0)
        text = f"{'...' * (start > 0)}{text[start:start + 80]}{'...' * (start + 80 < len(text))}"
    message = f"{problem} at position {position} in {text!r}"
    return FormulaError(f"{message}; {hint}" if hint else message)


# --- tokenizer ---------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # 'number', 'name', 'op', '(', ')', ',' or 'end'
    text: str
    position: int  # 1-based


# ASCII-only classes: str.isdigit() would accept '²' and float() would then fail.
_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PUNCTUATION = {"+": "op", "-": "op", "*": "op", "/": "op", "^": "op", "(": "(", ")": ")", ",": ","}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        char, position = text[index], index + 1
        if char.isspace():
            index += 1
            continue
        if match := _NUMBER.match(text, index):
            if not math.isfinite(float(match.group())):
                raise _error(text, position, f"number {match.group()!r} is too large")
            tokens.append(_Token("number", match.group(), position))
            index = match.end()
        elif match := _NAME.match(text, index):
            if match.group().startswith("__"):
                raise _error(text, position, f"names starting with '__' are not allowed ({match.group()!r})")
            tokens.append(_Token("name", match.group(), position))
            index = match.end()
        elif text.startswith("**", index):
            tokens.append(_Token("op", "**", position))
            index += 2
        elif char in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[char], char, position))
            index += 1
        else:
            _refuse_character(text, index, tokens[-1] if tokens else None)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _refuse_character(text: str, index: int, previous: _Token | None) -> None:
    char, position = text[index], index + 1
    if char == "." and previous is not None and previous.kind in ("name", ")"):
        raise _error(text, position, "attribute access with '.' is not allowed")
    if char in "[]":
        raise _error(text, position, f"subscripts with {char!r} are not allowed")
    if char in "'\"`":
        raise _error(text, position, f"strings are not allowed (found {char!r})")
    raise _error(text, position, f"unexpected character {char!r}",
                 "a formula may contain numbers, names, + - * / ^ **, parentheses and commas")


# --- parser ------------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, text: str, tokens: list[_Token]):
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.nesting = 0
        self.names: dict[str, None] = {}  # insertion order = order of first appearance

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, position: int, problem: str, hint: str = "") -> None:
        raise _error(self.text, position, problem, hint)

    def parse(self) -> Node:
        if self.peek().kind == "end":
            self.fail(1, "formula is empty", "write e.g. 'b1*exp(b2*x)'")
        root = self.expression()
        if self.peek().kind != "end":
            self.refuse_after_operand(self.peek(), opener=None)
        return root

    def expression(self) -> Node:
        node = self.term()
        while (token := self.peek()).kind == "op" and token.text in ("+", "-"):
            self.advance()
            node = Binary(token.text, node, self.term(), token.position)
        return node

    def term(self) -> Node:
        node = self.unary()
        while (token := self.peek()).kind == "op" and token.text in ("*", "/"):
            self.advance()
            node = Binary(token.text, node, self.unary(), token.position)
        return node

    def unary(self) -> Node:
        # Every recursive path (parentheses, arguments, exponents, signs) passes here.
        token = self.peek()
        self.nesting += 1
        try:
            if self.nesting > MAX_NESTING:
                self.fail(token.position, f"formula is nested more than {MAX_NESTING} levels deep")
            if token.kind == "op" and token.text in ("-", "+"):
                self.advance()
                operand = self.unary()
                return Unary("-", operand, token.position) if token.text == "-" else operand
            return self.power()
        finally:
            self.nesting -= 1

    def power(self) -> Node:
        base = self.primary()
        token = self.peek()
        if token.kind == "op" and token.text in ("^", "**"):
            self.advance()
            # The exponent is parsed as `unary`, which recurses into `power`:
            # that makes 2^3^2 = 2^(3^2) and allows 2^-1.
            return Binary("^", base, self.unary(), token.position)
        return base

    def primary(self) -> Node:
        token = self.advance()
        if token.kind == "number":
            if self.peek().kind == "(":
                self.fail(token.position, f"the number {token.text!r} cannot be called like a function",
                          "write '*' to multiply")
            return Number(float(token.text), token.text, token.position)
        if token.kind == "name":
            return self.name_or_call(token)
        if token.kind == "(":
            node = self.expression()
            self.close(token)
            return node
        if token.kind == "end":
            self.fail(token.position, "formula ends where a number, name or '(' is expected")
        self.fail(token.position, f"expected a number, name or '(' but found {token.text!r}")
        raise AssertionError("unreachable")  # fail() always raises

    def name_or_call(self, token: _Token) -> Node:
        name = token.text
        if self.peek().kind == "(":
            opener = self.advance()
            if name in CONSTANTS:
                self.fail(token.position, f"{name!r} is a constant, not a function")
            if name not in FUNCTIONS:
                self.fail(token.position, f"unknown function {name!r}",
                          f"known functions: {', '.join(sorted(FUNCTIONS))}")
            args: list[Node] = []
            if self.peek().kind != ")":
                args.append(self.expression())
                while self.peek().kind == ",":
                    self.advance()
                    args.append(self.expression())
            self.close(opener)
            arity = FUNCTIONS[name][0]
            if len(args) != arity:
                self.fail(token.position, f"function {name!r} takes {arity} argument{'s' * (arity != 1)} "
                                          f"but got {len(args)}")
            return Call(name, tuple(args), token.position)
        if name in FUNCTIONS:
            self.fail(token.position, f"{name!r} is a function and needs arguments", f"write {name}(...)")
        if name in CONSTANTS:
            return Number(CONSTANTS[name], name, token.position)
        self.names.setdefault(name, None)
        return Name(name, token.position)

    def close(self, opener: _Token) -> None:
        if self.peek().kind == ")":
            self.advance()
            return
        self.refuse_after_operand(self.peek(), opener)

    def refuse_after_operand(self, token: _Token, opener: _Token | None) -> None:
        """Explain a token that cannot follow a complete operand."""
        if token.kind == "end":
            self.fail(opener.position, "unclosed '(' opened", "add the missing ')'")
        if token.kind == ")":
            self.fail(token.position, "unexpected ')'", "it has no matching '('")
        if token.kind in ("number", "name", "("):
            self.fail(token.position, f"missing operator before {token.text!r}",
                      "write an operator such as '*' between two operands")
        if token.kind == ",":
            self.fail(token.position, "unexpected ','", "commas only separate function arguments")
        self.fail(token.position, f"unexpected {token.text!r}")


# --- public API --------------------------------------------------------------


@dataclass(frozen=True)
class Formula:
    """A parsed formula: its text, syntax tree and the names it uses.

    Attributes:
        text: The formula as written by the user.
        root: Root node of the syntax tree.
        names: Variable and parameter names in order of first appearance
            (functions and constants excluded).
    """

    text: str
    root: Node
    names: tuple[str, ...]

    def __str__(self) -> str:
        return self.text

    def split_names(self, variables: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split ``names`` into (variables used, parameters), each in order of first appearance.

        Example:
            >>> parse_formula("b1*exp(-b2*t) + c").split_names(["t", "unused"])
            (['t'], ['b1', 'b2', 'c'])
        """
        known = set(variables)
        return [n for n in self.names if n in known], [n for n in self.names if n not in known]

    def evaluate(self, env: Mapping[str, torch.Tensor | float]) -> torch.Tensor:
        """Evaluate with torch ops; values broadcast, so (B, 1) params and (n,) columns give (B, n).

        Float and integer inputs are converted to the dtype and device of the
        first floating-point tensor in ``env`` (default dtype and CPU if none).

        Raises:
            FormulaError: A name of the formula has no value in ``env``.

        Example:
            >>> parse_formula("a*x^2").evaluate({"a": 2.0, "x": torch.tensor([1.0, 3.0])})
            tensor([ 2., 18.])
        """
        missing = [name for name in self.names if name not in env]
        if missing:
            position = min(n.position for n, _ in _walk(self.root) if isinstance(n, Name) and n.name == missing[0])
            given = ", ".join(sorted(map(str, env))) or "none"
            raise _error(self.text, position, f"no value given for {missing[0]!r}", f"given names: {given}")
        reference = next((v for v in env.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
        dtype = reference.dtype if reference is not None else torch.get_default_dtype()
        device = reference.device if reference is not None else None
        values = {}
        for name in self.names:
            value = env[name]
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(value, dtype=dtype, device=device)
            elif not (value.is_floating_point() or value.is_complex()):
                value = value.to(dtype)
            values[name] = value

        def as_tensor(value: torch.Tensor | float) -> torch.Tensor:
            return value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=dtype, device=device)

        return as_tensor(_evaluate(self.root, values, as_tensor))


_BINARY: dict[str, Callable] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                                 "/": operator.truediv, "^": torch.pow}


def _evaluate(node: Node, values: Mapping[str, torch.Tensor],
              as_tensor: Callable[[torch.Tensor | float], torch.Tensor]) -> torch.Tensor | float:
    # Literals stay Python floats: torch ops take scalars directly (x^2 becomes
    # torch.pow(x, 2.0)), so no 0-dim tensor is built per literal per call.
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Name):
        return values[node.name]
    if isinstance(node, Unary):
        return -_evaluate(node.operand, values, as_tensor)
    if isinstance(node, Binary):
        left = _evaluate(node.left, values, as_tensor)
        right = _evaluate(node.right, values, as_tensor)
        if not isinstance(left, torch.Tensor) and not isinstance(right, torch.Tensor):
            left = as_tensor(left)  # torch semantics (inf, not ZeroDivisionError) for 1/0
        return _BINARY[node.op](left, right)
    args = [as_tensor(_evaluate(arg, values, as_tensor)) for arg in node.args]
    return FUNCTIONS[node.function][1](*args)


def parse_formula(text: str) -> Formula:
    """Parse ``text`` into a :class:`Formula` without ever evaluating it as Python.

    Raises:
        FormulaError: The text is empty, malformed or uses anything outside the
            grammar; the message names the problem and its 1-based position.

    Example:
        >>> f = parse_formula("b1/(1 + exp(-b2*(x - b3)))")
        >>> f.names
        ('b1', 'b2', 'x', 'b3')
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, got {type(text).__name__}")
    parser = _Parser(text, _tokenize(text))
    root = parser.parse()
    node, depth = max(_walk(root), key=lambda item: item[1])
    if depth > MAX_TREE_DEPTH:
        raise _error(text, node.position, f"formula is nested {depth} levels deep (at most {MAX_TREE_DEPTH})")
    return Formula(text, root, tuple(parser.names))


def _check_columns(X: torch.Tensor, variables: Sequence[str]) -> None:
    if X.ndim != 2 or X.shape[1] != len(variables):
        raise DataError(f"X must have shape (n, {len(variables)}) for the variables {list(variables)}, "
                        f"got {tuple(X.shape)}")


def evaluate_batched(formula: Formula, params: torch.Tensor, param_names: Sequence[str],
                     X: torch.Tensor, variables: Sequence[str]) -> torch.Tensor:
    """Evaluate ``formula`` for B parameter sets at once (for batched curve fitting).

    Args:
        formula: The parsed formula.
        params: Shape (B, k); column j holds the values of ``param_names[j]``.
        param_names: The k parameter names.
        X: Shape (n, v); column j holds the data of ``variables[j]``.
        variables: The v variable (column) names.

    Returns:
        Shape (B, n): the prediction of every parameter set at every data point.

    Example:
        >>> f = parse_formula("a*x + b")
        >>> evaluate_batched(f, torch.tensor([[1.0, 0.0], [2.0, 1.0]]), ["a", "b"],
        ...                  torch.tensor([[1.0], [2.0]]), ["x"])
        tensor([[1., 2.],
                [3., 5.]])
    """
    if params.ndim != 2 or params.shape[1] != len(param_names):
        raise FormulaError(f"params must have shape (B, {len(param_names)}) for {list(param_names)}, "
                           f"got {tuple(params.shape)}")
    _check_columns(X, variables)
    overlap = sorted(set(param_names) & set(variables))
    if overlap:
        raise FormulaError(f"{overlap} are listed both as parameters and as variables")
    if params.is_floating_point():
        X = X.to(params.dtype)
    env: dict[str, torch.Tensor] = {name: params[:, j : j + 1] for j, name in enumerate(param_names)}
    env.update({name: X[:, j] for j, name in enumerate(variables)})
    return torch.broadcast_to(formula.evaluate(env), (params.shape[0], X.shape[0]))


class FormulaModel(nn.Module):
    """y = f(x; params) as a module. Parameters are scalar nn.Parameters in order of first appearance.

    They live in an ``nn.ParameterList`` (``params``), not a ParameterDict, because
    a ParameterDict breaks on names like ``type`` or ``values`` that clash with its
    methods; :meth:`params_dict` gives them by name.

    Args:
        formula: Formula text or a parsed :class:`Formula`.
        variables: Data column names, in the order of the columns of ``X`` in
            :meth:`forward`. Columns the formula does not use are ignored; every
            other formula name is a parameter.
        init: Initial parameter values; parameters not listed start at 1.0.
        dtype: Dtype of the parameters.

    Raises:
        FormulaError: The formula does not parse, has no parameters, or ``init``
            names something that is not a parameter.

    Example:
        >>> model = FormulaModel("b1*exp(b2*x)", ["x"], init={"b2": 0.5})
        >>> model.params_dict()
        {'b1': 1.0, 'b2': 0.5}
        >>> model(torch.zeros(4, 1)).shape
        torch.Size([4, 1])
    """

    def __init__(self, formula: str | Formula, variables: Sequence[str], init: Mapping[str, float] | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if isinstance(variables, str):
            raise TypeError(f"variables must be a sequence of column names, got the string {variables!r}; "
                            f"pass [{variables!r}]")
        self.formula = formula if isinstance(formula, Formula) else parse_formula(formula)
        self.variable_names: list[str] = list(variables)
        duplicates = sorted({v for v in self.variable_names if self.variable_names.count(v) > 1})
        if duplicates:
            raise DataError(f"variables {duplicates} are listed more than once in {self.variable_names}")
        used, self.param_names = self.formula.split_names(self.variable_names)
        if not self.param_names:
            raise FormulaError(f"formula {self.formula.text!r} has no parameters to fit: every name in it "
                               f"is a variable ({', '.join(used) or 'none'}) or a constant")
        init = dict(init or {})
        unknown = sorted(set(init) - set(self.param_names))
        if unknown:
            raise FormulaError(f"init gives values for {unknown}, which are not parameters of "
                               f"{self.formula.text!r}; its parameters are {self.param_names}")
        for name, value in init.items():
            if not math.isfinite(float(value)):
                raise FormulaError(f"init[{name!r}]={value} must be a finite number")
        self.params = nn.ParameterList(
            nn.Parameter(torch.tensor(float(init.get(name, 1.0)), dtype=dtype)) for name in self.param_names)
        self._columns = [(name, self.variable_names.index(name)) for name in used]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Predict from X of shape (n, len(variables)); returns shape (n, 1)."""
        _check_columns(X, self.variable_names)
        X = X.to(self.params[0].dtype)  # follow .double() etc. applied to the module
        env: dict[str, torch.Tensor] = {name: X[:, j] for name, j in self._columns}
        env.update(zip(self.param_names, self.params))
        return torch.broadcast_to(self.formula.evaluate(env), (X.shape[0],)).unsqueeze(1)

    def params_dict(self) -> dict[str, float]:
        """Current parameter values by name, in order of first appearance."""
        return {name: float(p.detach()) for name, p in zip(self.param_names, self.params)}

    def extra_repr(self) -> str:
        return f"formula={self.formula.text!r}, variables={self.variable_names}, params={self.param_names}"
