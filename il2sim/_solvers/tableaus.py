"""Method coefficients as validated data, plus the float arrays the kernels import.

Two tableau types:

``ExplicitRKTableau``
    Butcher tableau ``(A, b, c)`` with an error weight vector ``b_err = b - b_hat`` and dense
    output polynomials ``b_i(theta) = sum_k R[i, k] * theta**(k + 1)``.
``RosenbrockTableau``
    A Rosenbrock method in the transformed ("W-form") notation of Hairer & Wanner (1996),
    §IV.7, eq. (7.25), as used by OrdinaryDiffEq.jl: with ``W = I/(h*gamma) - J``, stage ``i``
    solves ``W k_i = f(t + c_i h, y + sum_j a_ij k_j) + sum_j (C_ij / h) k_j + h d_i f_t``.
    The ``k_i`` are increments (not derivatives). For the stiffly accurate Rodas family the
    solution is ``y1 = y + sum_j a_sj k_j + k_s`` and the error estimate is ``k_s``. Dense
    output: ``y(theta) = (1-theta) y0 + theta (y1 + (1-theta)(h_1 + theta (h_2 + theta h_3)))``
    with ``h_r = sum_j H[r, j] k_j``.

``__post_init__`` checks shapes and the identities that hold for every consistent method
(row sums equal the nodes, weights sum to one, error weights sum to zero); order
conditions beyond that are checked in ``tests/test_tableaus.py`` and by convergence tests.

Coefficient sources
-------------------
Tsit5
    Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the first column
    simplifying assumption", Comput. Math. Appl. 62 (2011) 770-775. Values (including the
    expanded dense-output polynomials) as tabulated in OrdinaryDiffEq.jl
    (``tsit_tableaus.jl``), high-precision entries rounded to float64.
Rodas5P
    G. Steinebach, "Construction of Rosenbrock-Wanner method Rodas5P and numerical
    benchmarks within the Julia Differential Equations package", BIT 63 (2023) 27.
    Transformed coefficients as tabulated in OrdinaryDiffEq.jl (``Rodas5PTableau``); the
    consistency identities below reconstruct the untransformed ``alpha``, ``Gamma``, ``b``
    from them and check ``c``, ``d`` and ``sum(b) = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ExplicitRKTableau",
    "RosenbrockTableau",
    "TSIT5",
    "RODAS5P",
    "TABLEAUS",
]

_TOL = 1e-12  # coefficients are given to ~16 digits; |C_ij| reaches ~1e2


def _frozen(x) -> np.ndarray:
    arr = np.array(x, dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _check(cond: bool, name: str, what: str) -> None:
    if not cond:
        raise ValueError(f"tableau {name!r}: {what}")


@dataclass(frozen=True, eq=False)
class ExplicitRKTableau:
    """Explicit Runge-Kutta pair with dense output.

    Attributes
    ----------
    name : str
        Public method name.
    order, embedded_order : int
        Order of the propagated solution and of the embedded one.
    a : (s, s) array
        Strictly lower triangular stage matrix.
    b, c : (s,) arrays
        Weights and nodes.
    b_err : (s,) array
        ``b - b_hat``; the local error estimate is ``h * sum_i b_err[i] * k_i``.
    dense : (s, 4) array
        ``b_i(theta) = sum_k dense[i, k] * theta**(k+1)``; ``b_i(1) = b_i``.
    fsal : bool
        First same as last: the last stage is ``f(t + h, y1)``.
    """

    name: str
    order: int
    embedded_order: int
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    b_err: np.ndarray
    dense: np.ndarray
    fsal: bool

    def __post_init__(self) -> None:
        for field in ("a", "b", "c", "b_err", "dense"):
            object.__setattr__(self, field, _frozen(getattr(self, field)))
        s = self.b.shape[0]
        n = self.name
        _check(self.a.shape == (s, s), n, f"a has shape {self.a.shape}, expected {(s, s)}")
        _check(self.c.shape == (s,), n, f"c has shape {self.c.shape}, expected {(s,)}")
        _check(self.b_err.shape == (s,), n, "b_err shape differs from b")
        _check(self.dense.shape[0] == s, n, "dense has one row per stage")
        _check(np.all(np.triu(self.a) == 0.0), n, "a must be strictly lower triangular")
        _check(abs(self.b.sum() - 1.0) < _TOL, n, f"sum(b) = {self.b.sum()!r}, expected 1")
        _check(abs(self.b_err.sum()) < _TOL, n, f"sum(b_err) = {self.b_err.sum()!r}, expected 0")
        rows = self.a.sum(axis=1)
        _check(np.allclose(rows, self.c, rtol=0, atol=_TOL), n, f"row sums of a {rows} != c")
        _check(
            np.allclose(self.dense.sum(axis=1), self.b, rtol=0, atol=_TOL),
            n,
            "dense output at theta=1 must equal b",
        )
        if self.fsal:
            _check(np.array_equal(self.a[-1], self.b), n, "FSAL: last row of a must equal b")
            _check(self.c[-1] == 1.0, n, "FSAL: last node must be 1")

    @property
    def stages(self) -> int:
        return self.b.shape[0]

    @property
    def b_hat(self) -> np.ndarray:
        return self.b - self.b_err

    def dense_weights(self, theta: float) -> np.ndarray:
        """``b_i(theta)`` for every stage."""
        powers = theta ** np.arange(1, self.dense.shape[1] + 1)
        return self.dense @ powers


@dataclass(frozen=True, eq=False)
class RosenbrockTableau:
    """Stiffly accurate Rosenbrock method in transformed (W-) form.

    Attributes
    ----------
    name : str
        Public method name.
    order, embedded_order : int
        Order of the solution and of the embedded solution (the one without the last stage).
    gamma : float
        Diagonal ``gamma``.
    a : (s, s) array
        Transformed stage matrix (``a = alpha Gamma^-1``), strictly lower triangular. Row
        ``s-1`` defines the argument of the last stage; ``y1`` adds ``k_s``.
    C : (s, s) array
        ``diag(1/gamma) - Gamma^-1``, strictly lower triangular.
    c, d : (s,) arrays
        Nodes (row sums of ``alpha``) and ``d_i = sum_j gamma_ij`` (time-derivative weights).
    H : (3, s) array
        Dense output coefficients.
    """

    name: str
    order: int
    embedded_order: int
    gamma: float
    a: np.ndarray
    C: np.ndarray
    c: np.ndarray
    d: np.ndarray
    H: np.ndarray

    def __post_init__(self) -> None:
        for field in ("a", "C", "c", "d", "H"):
            object.__setattr__(self, field, _frozen(getattr(self, field)))
        s = self.c.shape[0]
        n = self.name
        for field in ("a", "C"):
            m = getattr(self, field)
            _check(m.shape == (s, s), n, f"{field} has shape {m.shape}, expected {(s, s)}")
            _check(np.all(np.triu(m) == 0.0), n, f"{field} must be strictly lower triangular")
        _check(self.d.shape == (s,), n, f"d has shape {self.d.shape}, expected {(s,)}")
        _check(self.H.shape == (3, s), n, f"H has shape {self.H.shape}, expected {(3, s)}")
        _check(0.0 < self.gamma < 1.0, n, f"gamma = {self.gamma!r} outside (0, 1)")
        alpha, Gamma = self.alpha, self.Gamma
        _check(
            np.allclose(alpha.sum(axis=1), self.c, rtol=0, atol=_TOL),
            n,
            f"row sums of alpha {alpha.sum(axis=1)} != c {self.c}",
        )
        _check(
            np.allclose(Gamma.sum(axis=1), self.d, rtol=0, atol=_TOL),
            n,
            f"row sums of Gamma {Gamma.sum(axis=1)} != d {self.d}",
        )
        _check(abs(self.b.sum() - 1.0) < _TOL, n, f"sum(b) = {self.b.sum()!r}, expected 1")
        _check(
            abs(self.b_hat.sum() - 1.0) < _TOL, n, f"sum(b_hat) = {self.b_hat.sum()!r}, expected 1"
        )

    @property
    def stages(self) -> int:
        return self.c.shape[0]

    @property
    def Gamma(self) -> np.ndarray:
        """Untransformed ``Gamma`` (lower triangular, diagonal ``gamma``)."""
        s = self.stages
        return np.linalg.inv(np.eye(s) / self.gamma - self.C)

    @property
    def alpha(self) -> np.ndarray:
        """Untransformed ``alpha = a Gamma`` (strictly lower triangular)."""
        return self.a @ self.Gamma

    @property
    def m(self) -> np.ndarray:
        """Transformed weights: ``y1 = y0 + sum_j m_j k_j`` (stiffly accurate: last row + 1)."""
        m = self.a[-1].copy()
        m[-1] = 1.0
        return m

    @property
    def b(self) -> np.ndarray:
        """Untransformed weights ``b = m Gamma``."""
        return self.m @ self.Gamma

    @property
    def b_hat(self) -> np.ndarray:
        """Untransformed weights of the embedded solution (without the last stage)."""
        return self.a[-1] @ self.Gamma


# --- Tsit5 -------------------------------------------------------------------------------

_T5_C = [0.0, 0.161, 0.327, 0.9, 0.9800255409045096857298102862870245954942137979563, 1.0, 1.0]
_T5_A = np.zeros((7, 7))
_T5_A[1, 0] = 0.161
_T5_A[2, :2] = [
    -0.008480655492356988544426874250230774675121177393430391537369234245294192976164141156943,
    0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569,
]
_T5_A[3, :3] = [
    2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289,
    -6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366,
    4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077,
]
_T5_A[4, :4] = [
    5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791,
    -11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589,
    7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753,
    -0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635,
]
_T5_A[5, :5] = [
    5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748,
    -12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452,
    8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986,
    -0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835,
    -0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206,
]
_T5_A[6, :6] = [
    0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396,
    0.01,
    0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509,
    1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331,
    -3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677,
    2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841,
]
_T5_B_ERR = [
    -1.780011052225771443378550607539534775944678804333659557637450799792588061629796e-03,
    -8.164344596567469032236360633546862401862537590159047610940604670770447527463931e-04,
    7.880878010261996010314727672526304238628733777103128603258129604952959142646516e-03,
    -1.44711007173262907537165147972635116720922712343167677619514233896760819649515e-01,
    5.823571654525552250199376106520421794260781239567387797673045438803694038950012e-01,
    -4.580821059291869466616365188325542974428047279788398179474684434732070620889539e-01,
    1.0 / 66.0,
]
# b_i(theta) = sum_k R[i, k] theta^(k+1)
_T5_DENSE = [
    [0.999999999999999974283372471559910888475488471328,
     -2.763706197274825911336735930481400260916070804192,
     2.91325546182191274375068099306808, -1.0530884977290216],
    [0.0, 0.13169999999999999727, -0.22339999999999999818, 0.1017],
    [0.0, 3.93029623689475152850687446709813398, -5.94103387213150473470249202589458001,
     2.490627285651252793],
    [0.0, -12.411077166933676983734381540685453484102414134010752,
     30.3381886302823215981729903691836576, -16.54810288924490272],
    [0.0, 37.50931341651103919496903965334519631242339792120440212,
     -88.1789048947664011014276693541209817, 47.37952196281928122],
    [0.0, -27.896526289197287805948263144598643896, 65.09189467479367152629021928716553658,
     -34.87065786149660974],
    [0.0, 1.5, -4.0, 2.5],
]

TSIT5 = ExplicitRKTableau(
    name="tsit5",
    order=5,
    embedded_order=4,
    a=_T5_A,
    b=_T5_A[6].copy(),
    c=_T5_C,
    b_err=_T5_B_ERR,
    dense=_T5_DENSE,
    fsal=True,
)

# --- Rodas5P -----------------------------------------------------------------------------

_R5P_GAMMA = 0.21193756319429014
_R5P_A = np.zeros((8, 8))
_R5P_A[1, 0] = 3.0
_R5P_A[2, :2] = [2.849394379747939, 0.45842242204463923]
_R5P_A[3, :3] = [-6.954028509809101, 2.489845061869568, -10.358996098473584]
_R5P_A[4, :4] = [2.8029986275628964, 0.5072464736228206, -0.3988312541770524,
                 -0.04721187230404641]
_R5P_A[5, :5] = [-7.502846399306121, 2.561846144803919, -11.627539656261098,
                 -0.18268767659942256, 0.030198172008377946]
# Stiffly accurate: stages 7 and 8 are evaluated at u_6 + k_6 and u_6 + k_6 + k_7.
_R5P_A[6, :6] = _R5P_A[5, :6]
_R5P_A[6, 5] = 1.0
_R5P_A[7, :7] = _R5P_A[6, :7]
_R5P_A[7, 6] = 1.0
_R5P_CM = np.zeros((8, 8))
_R5P_CM[1, 0] = -14.155112264123755
_R5P_CM[2, :2] = [-17.97296035885952, -2.859693295451294]
_R5P_CM[3, :3] = [147.12150275711716, -1.41221402718213, 71.68940251302358]
_R5P_CM[4, :4] = [165.43517024871676, -0.4592823456491126, 42.90938336958603,
                  -5.961986721573306]
_R5P_CM[5, :5] = [24.854864614690072, -3.0009227002832186, 47.4931110020768,
                  5.5814197821558125, -0.6610691825249471]
_R5P_CM[6, :6] = [30.91273214028599, -3.1208243349937974, 77.79954646070892,
                  34.28646028294783, -19.097331116725623, -28.087943162872662]
_R5P_CM[7, :7] = [37.80277123390563, -3.2571969029072276, 112.26918849496327,
                  66.9347231244047, -40.06618937091002, -54.66780262877968, -9.48861652309627]
_R5P_C = [0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716,
          0.4288403609558664, 1.0, 1.0, 1.0]
_R5P_D = [0.21193756319429014, -0.42387512638858027, -0.3384627126235924,
          1.8046452872882734, 2.325825639765069, 0.0, 0.0, 0.0]
_R5P_H = [
    [25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204,
     0.524948541321073, 1.1241088310450404, 0.4272876194431874, -0.17202221070155493],
    [-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796,
     20.176138334709044, 15.98066361424651, -6.789040303419874, -6.710236069923372],
    [11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643,
     -52.072871366152654, -59.78993625266729, -0.15582684282751913, 4.883087185713722],
]

RODAS5P = RosenbrockTableau(
    name="rodas5p",
    order=5,
    embedded_order=4,
    gamma=_R5P_GAMMA,
    a=_R5P_A,
    C=_R5P_CM,
    c=_R5P_C,
    d=_R5P_D,
    H=_R5P_H,
)

TABLEAUS = {t.name: t for t in (RODAS5P, TSIT5)}

# --- Flat constants imported by the kernel template (numba freezes them) -----------------
# Kept as plain float64 arrays so the same kernels compile for CPU and CUDA.

RODAS5P_GAMMA = float(RODAS5P.gamma)
RODAS5P_A = np.ascontiguousarray(RODAS5P.a)
RODAS5P_CM = np.ascontiguousarray(RODAS5P.C)
RODAS5P_C = np.ascontiguousarray(RODAS5P.c)
RODAS5P_D = np.ascontiguousarray(RODAS5P.d)
RODAS5P_H = np.ascontiguousarray(RODAS5P.H)
RODAS5P_STAGES = RODAS5P.stages


def _u_from_prev(a: np.ndarray) -> np.ndarray:
    """Stages whose point is the previous stage's plus k_{s-1}: a[s, :s-1] == a[s-1, :s-1]
    and a[s, s-1] == 1 (Rodas5P's stages 7 and 8), so the kernel adds one vector instead of
    summing all earlier stages again."""
    flags = [s >= 2 and a[s, s - 1] == 1.0 and np.array_equal(a[s, : s - 1], a[s - 1, : s - 1])
             for s in range(a.shape[0])]
    return np.array(flags, dtype=np.bool_)


RODAS5P_U_FROM_PREV = _u_from_prev(RODAS5P_A)
RODAS5P_ERR_ORDER = RODAS5P.embedded_order + 1  # exponent base of the step controller

TSIT5_A = np.ascontiguousarray(TSIT5.a)
TSIT5_C = np.ascontiguousarray(TSIT5.c)
TSIT5_B_ERR = np.ascontiguousarray(TSIT5.b_err)
TSIT5_DENSE = np.ascontiguousarray(TSIT5.dense)
TSIT5_STAGES = TSIT5.stages
TSIT5_ERR_ORDER = TSIT5.embedded_order + 1
