"""The 27 NIST StRD nonlinear regression problems: formula, two starts, certified values.

Formulas are written in paratrain's formula syntax. Two need a note:

* **Roszman1** uses ``arctan`` and the constant ``pi``;
* **Nelson** models log(y): ``log[y] = b1 - b2*x1*exp(-b3*x2)``. Here the target is
  the expression ``log(y)`` (paratrain accepts a target that is an expression of
  columns), so the residuals are exactly NIST's.

``certified_stderr`` holds NIST's certified standard deviations where they were
available to us; None elsewhere (the parameter values are certified for all).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from paratrain.curvefit.nist._data import DATA

__all__ = ["NistProblem", "PROBLEMS", "load"]


@dataclass(frozen=True)
class NistProblem:
    """One NIST StRD problem (names b1..bk as NIST numbers them)."""

    name: str
    level: str
    formula: str
    start1: tuple[float, ...]
    start2: tuple[float, ...]
    certified: tuple[float, ...]
    certified_stderr: tuple[float | None, ...] | None = None
    columns: tuple[str, ...] = ("y", "x")
    target: str = "y"
    data_name: str | None = None

    @property
    def names(self) -> list[str]:
        return [f"b{i + 1}" for i in range(len(self.certified))]

    def frame(self) -> pd.DataFrame:
        """The data as a table with columns ``y, x`` (Nelson: ``y, x1, x2``)."""
        text = DATA[self.data_name or self.name]
        rows = [[float(v) for v in row.split()] for row in text.split(";") if row.strip()]
        return pd.DataFrame(rows, columns=list(self.columns))

    def start(self, which: int) -> dict[str, float]:
        return dict(zip(self.names, self.start1 if which == 1 else self.start2))

    def certified_params(self) -> dict[str, float]:
        return dict(zip(self.names, self.certified))


_LANCZOS = "b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x)"
_LANCZOS_STARTS = ((1.2, 0.3, 5.6, 5.5, 6.5, 7.6), (0.5, 0.7, 3.6, 4.2, 4, 6.3))
_GAUSS = "b1*exp(-b2*x) + b3*exp(-(x-b4)^2/b5^2) + b6*exp(-(x-b7)^2/b8^2)"
_RATIONAL33 = "(b1 + b2*x + b3*x^2 + b4*x^3) / (1 + b5*x + b6*x^2 + b7*x^3)"
_CHWIRUT = "exp(-b1*x)/(b2+b3*x)"
_CHWIRUT_STARTS = ((0.1, 0.01, 0.02), (0.15, 0.008, 0.010))

PROBLEMS: dict[str, NistProblem] = {p.name: p for p in [
    NistProblem("Misra1a", "lower", "b1*(1-exp(-b2*x))", (500, 1e-4), (250, 5e-4),
                (2.3894212918E+02, 5.5015643181E-04), (2.7070075241E+00, 7.2668688436E-06)),
    NistProblem("Chwirut2", "lower", _CHWIRUT, *_CHWIRUT_STARTS,
                (1.6657666537E-01, 5.1653291286E-03, 1.2150007096E-02)),
    NistProblem("Chwirut1", "lower", _CHWIRUT, *_CHWIRUT_STARTS,
                (1.9027818370E-01, 6.1314004477E-03, 1.0530908399E-02),
                (2.1938557035E-02, 3.4500025051E-04, 7.9281847748E-04)),
    NistProblem("Lanczos3", "lower", _LANCZOS, *_LANCZOS_STARTS,
                (8.6816414977E-02, 9.5498101505E-01, 8.4400777463E-01, 2.9515951832E+00, 1.5825685901E+00,
                 4.9863565084E+00)),
    NistProblem("Gauss1", "lower", _GAUSS, (97.0, 0.009, 100.0, 65.0, 20.0, 70.0, 178.0, 16.5),
                (94.0, 0.0105, 99.0, 63.0, 25.0, 71.0, 180.0, 20.0),
                (9.8778210871E+01, 1.0497276517E-02, 1.0048990633E+02, 6.7481111276E+01, 2.3129773360E+01,
                 7.1994503004E+01, 1.7899805021E+02, 1.8389389025E+01)),
    NistProblem("Gauss2", "lower", _GAUSS, (96.0, 0.009, 103.0, 106.0, 18.0, 72.0, 151.0, 18.0),
                (98.0, 0.0105, 103.0, 105.0, 20.0, 73.0, 150.0, 20.0),
                (9.9018328406E+01, 1.0994945399E-02, 1.0188022528E+02, 1.0703095519E+02, 2.3578584029E+01,
                 7.2045589471E+01, 1.5327010194E+02, 1.9525972636E+01)),
    NistProblem("DanWood", "lower", "b1*x^b2", (1, 5), (0.7, 4), (7.6886226176E-01, 3.8604055871E+00),
                (1.8281973860E-02, 5.1726610913E-02)),
    NistProblem("Misra1b", "lower", "b1*(1-(1+b2*x/2)^(-2))", (500, 1e-4), (300, 2e-4),
                (3.3799746163E+02, 3.9039091287E-04), data_name="Misra1a"),
    NistProblem("Kirby2", "average", "(b1 + b2*x + b3*x^2) / (1 + b4*x + b5*x^2)",
                (2, -0.1, 0.003, -0.001, 0.00001), (1.5, -0.15, 0.0025, -0.0015, 0.00002),
                (1.6745063063E+00, -1.3927397867E-01, 2.5961181191E-03, -1.7241811870E-03, 2.1664802578E-05)),
    NistProblem("Hahn1", "average", _RATIONAL33, (10, -1, 0.05, -0.00001, -0.05, 0.001, -0.000001),
                (1, -0.1, 0.005, -0.000001, -0.005, 0.0001, -0.0000001),
                (1.0776351733E+00, -1.2269296921E-01, 4.0863750610E-03, -1.4262662514E-06, -5.7609940901E-03,
                 2.4053735503E-04, -1.2314450199E-07)),
    NistProblem("Nelson", "average", "b1 - b2*x1*exp(-b3*x2)", (2, 0.0001, -0.01), (2.5, 0.000000005, -0.05),
                (2.5906836021E+00, 5.6177717026E-09, -5.7701013174E-02), columns=("y", "x1", "x2"),
                target="log(y)"),
    NistProblem("MGH17", "average", "b1 + b2*exp(-x*b4) + b3*exp(-x*b5)", (50, 150, -100, 1, 2),
                (0.5, 1.5, -1, 0.01, 0.02),
                (3.7541005211E-01, 1.9358469127E+00, -1.4646871366E+00, 1.2867534640E-02, 2.2122699662E-02),
                (2.0723153551E-03, 2.2031669222E-01, 2.2175707739E-01, 4.4861358114E-04, 8.9471996575E-04)),
    NistProblem("Lanczos1", "average", _LANCZOS, *_LANCZOS_STARTS,
                (9.5100000027E-02, 1.0000000001E+00, 8.6070000013E-01, 3.0000000002E+00, 1.5575999998E+00,
                 5.0000000001E+00)),
    NistProblem("Lanczos2", "average", _LANCZOS, *_LANCZOS_STARTS,
                (9.6251029939E-02, 1.0057332849E+00, 8.6424689056E-01, 3.0078283915E+00, 1.5529016879E+00,
                 5.0028798100E+00)),
    NistProblem("Gauss3", "average", _GAUSS, (94.9, 0.009, 90.1, 113.0, 20.0, 73.8, 140.0, 20.0),
                (96.0, 0.0096, 80.0, 110.0, 25.0, 74.0, 139.0, 25.0),
                (9.8940368970E+01, 1.0945879335E-02, 1.0069553078E+02, 1.1163619459E+02, 2.3300500029E+01,
                 7.3705031418E+01, 1.4776164251E+02, 1.9668221230E+01)),
    NistProblem("Misra1c", "average", "b1*(1-(1+2*b2*x)^(-0.5))", (500, 1e-4), (600, 2e-4),
                (6.3642725809E+02, 2.0813627256E-04), data_name="Misra1a"),
    NistProblem("Misra1d", "average", "b1*b2*x*((1+b2*x)^(-1))", (500, 1e-4), (450, 3e-4),
                (4.3736970754E+02, 3.0227324449E-04), data_name="Misra1a"),
    NistProblem("Roszman1", "average", "b1 - b2*x - arctan(b3/(x-b4))/pi", (0.1, -0.00001, 1000, -100),
                (0.2, -0.000005, 1200, -150),
                (2.0196866396E-01, -6.1953516256E-06, 1.2044556708E+03, -1.8134269537E+02),
                (1.9172666023E-02, 3.2058931691E-06, 7.4050983057E+01, 4.9573513849E+01)),
    NistProblem("ENSO", "average",
                "b1 + b2*cos(2*pi*x/12) + b3*sin(2*pi*x/12) + b5*cos(2*pi*x/b4) + b6*sin(2*pi*x/b4)"
                " + b8*cos(2*pi*x/b7) + b9*sin(2*pi*x/b7)",
                (11.0, 3.0, 0.5, 40.0, -0.7, -1.3, 25.0, -0.3, 1.4), (10.0, 3.0, 0.5, 44.0, -1.5, 0.5, 26.0, -0.1, 1.5),
                (1.0510749193E+01, 3.0762128085E+00, 5.3280138227E-01, 4.4311088700E+01, -1.6231428586E+00,
                 5.2554493756E-01, 2.6887614440E+01, 2.1232288488E-01, 1.4966870418E+00)),
    NistProblem("MGH09", "higher", "b1*(x^2+x*b2) / (x^2+x*b3+b4)", (25, 39, 41.5, 39), (0.25, 0.39, 0.415, 0.39),
                (1.9280693458E-01, 1.9128232873E-01, 1.2305650693E-01, 1.3606233068E-01),
                (1.1435312227E-02, 1.9633220911E-01, 8.0842031232E-02, 9.0025542308E-02)),
    NistProblem("Thurber", "higher", _RATIONAL33, (1000, 1000, 400, 40, 0.7, 0.3, 0.03),
                (1300, 1500, 500, 75, 1, 0.4, 0.05),
                (1.2881396800E+03, 1.4910792535E+03, 5.8323836877E+02, 7.5416644291E+01, 9.6629502864E-01,
                 3.9797285797E-01, 4.9727297349E-02),
                (4.6647963344E+00, 3.9571156086E+01, 2.8698696102E+01, 5.5675370270E+00, 3.1333340687E-02,
                 1.4984928198E-02, 6.5842344623E-03)),
    NistProblem("BoxBOD", "higher", "b1*(1-exp(-b2*x))", (1, 1), (100, 0.75), (2.1380940889E+02, 5.4723748542E-01)),
    NistProblem("Rat42", "higher", "b1 / (1+exp(b2-b3*x))", (100, 1, 0.1), (75, 2.5, 0.07),
                (7.2462237576E+01, 2.6180768402E+00, 6.7359200066E-02), (1.7340283401E+00, None, 3.4465663377E-03)),
    NistProblem("MGH10", "higher", "b1 * exp(b2/(x+b3))", (2, 400000, 25000), (0.02, 4000, 250),
                (5.6096364710E-03, 6.1813463463E+03, 3.4522363462E+02)),
    NistProblem("Eckerle4", "higher", "(b1/b2) * exp(-0.5*((x-b3)/b2)^2)", (1, 10, 500), (1.5, 5, 450),
                (1.5543827178E+00, 4.0888321754E+00, 4.5154121844E+02), (None, 4.6803020753E-02, 4.6800518816E-02)),
    NistProblem("Rat43", "higher", "b1 / ((1+exp(b2-b3*x))^(1/b4))", (100, 10, 1, 1), (700, 5, 0.75, 1.3),
                (6.9964151270E+02, 5.2771253025E+00, 7.5962938329E-01, 1.2792483859E+00)),
    NistProblem("Bennett5", "higher", "b1 * (b2+x)^(-1/b3)", (-2000, 50, 0.8), (-1500, 45, 0.85),
                (-2.5235058043E+03, 4.6736564644E+01, 9.3218483193E-01),
                (2.9715175411E+02, 1.2448871856E+00, 2.0272299378E-02)),
]}
"""All 27 problems by name, in NIST's order (lower, average, higher difficulty)."""


def load(name: str) -> NistProblem:
    """One problem by name (case-insensitive).

    Example:
        >>> p = load("misra1a")
        >>> p.frame().shape, p.start(1)
        ((14, 2), {'b1': 500, 'b2': 0.0001})
    """
    for key, problem in PROBLEMS.items():
        if key.lower() == name.lower():
            return problem
    raise KeyError(f"no NIST problem {name!r}; known: {', '.join(PROBLEMS)}")
