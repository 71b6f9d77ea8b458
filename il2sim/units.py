"""Body-surface area and dose-unit conversion.

A dose is written in the unit a clinician uses (``"MIU/m2"``, ``"ug/kg"``, ``"nmol"``) and
enters the model as an amount in the dosed state's unit (``"nmol"`` or ``"pmol"``). This module
does that conversion, and nothing else: it knows no regimen, no model and no file format.

Amount units
------------
Each unit has exactly one spelling (no aliases such as ``"µg"`` or ``"MU"``):

======== ============================================ ==========================
base     meaning                                      converted to nmol by
======== ============================================ ==========================
``MIU``  10⁶ international units (potency)            ``Drug.nmol_per_MIU``
``IU``   international units                          ``Drug.nmol_per_MIU / 1e6``
``nmol`` nanomole                                     1
``pmol`` picomole                                     1e-3
``ug``   microgram                                    ``1e3 / Drug.molar_mass``
``mg``   milligram                                    ``1e6 / Drug.molar_mass``
======== ============================================ ==========================

Any base may carry ``"/m2"`` (per m² of body-surface area, needs ``bsa=``) or ``"/kg"`` (per kg
of body weight, needs ``weight=``): ``"MIU/m2"``, ``"ug/kg"``. Potency units and mass units are
converted to moles independently (IU via ``nmol_per_MIU``, mass via the molar mass); for
aldesleukin both factors come from the same label (DOMAIN.md §1.1) and agree to 0.1 %.

Examples
--------
>>> dose_to_amount(9.0, "MIU/m2", bsa=1.8, drug=ALDESLEUKIN)   # 16.2 MIU
64.638
>>> round(bsa_mosteller(180.0, 80.0), 6)
2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
from numpy.typing import ArrayLike

from il2sim.errors import ConfigError, RegimenError

__all__ = [
    "ALDESLEUKIN",
    "AMOUNT_UNITS",
    "BSA_FORMULAS",
    "STATE_AMOUNT_UNITS",
    "Drug",
    "bsa",
    "bsa_dubois",
    "bsa_mosteller",
    "check_amount_unit",
    "dose_to_amount",
]

#: Base amount units and whether converting them to moles needs the molar mass.
_BASE_UNITS: dict[str, str] = {
    "MIU": "potency",
    "IU": "potency",
    "nmol": "molar",
    "pmol": "molar",
    "ug": "mass",
    "mg": "mass",
}
_PER: dict[str, str | None] = {"": None, "/m2": "bsa", "/kg": "weight"}

#: Every valid amount-unit spelling, e.g. ``"MIU"``, ``"MIU/m2"``, ``"ug/kg"``.
AMOUNT_UNITS: tuple[str, ...] = tuple(b + p for p in _PER for b in _BASE_UNITS)

#: Units a dosed state may be declared in (the unit of ``dose_to_amount``'s result).
STATE_AMOUNT_UNITS: tuple[str, ...] = ("nmol", "pmol")

#: Names accepted by :func:`bsa`'s ``formula=``.
BSA_FORMULAS: tuple[str, ...] = ("mosteller", "dubois")

# Plausible human ranges. They exist to catch unit mistakes (height in metres or inches,
# weight in pounds or grams), not to judge physiques; the bounds are deliberately wide.
_HEIGHT_CM = (30.0, 280.0)
_WEIGHT_KG = (0.5, 650.0)


def _check_positive_scalar(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what}: expected a number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{what}: expected a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class Drug:
    """The conversion factors of one drug product.

    Parameters
    ----------
    name
        Product name, used in messages.
    nmol_per_MIU
        Moles per potency unit: nmol in 10⁶ IU. Needed for ``MIU``/``IU`` doses.
    molar_mass
        Molar mass in g/mol, needed for ``ug``/``mg`` doses; ``None`` if unknown.
    source
        Where the factors come from (shown in provenance).
    """

    name: str
    nmol_per_MIU: float
    molar_mass: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"Drug.name: expected a non-empty string, got {self.name!r}")
        _check_positive_scalar(self.nmol_per_MIU, f"Drug({self.name!r}).nmol_per_MIU")
        if self.molar_mass is not None:
            _check_positive_scalar(self.molar_mass, f"Drug({self.name!r}).molar_mass")


#: Aldesleukin (Proleukin): 1 MIU = 61.1 µg = 3.99 nmol; molar mass ≈ 15,300 g/mol.
ALDESLEUKIN = Drug(
    name="aldesleukin",
    nmol_per_MIU=3.99,
    molar_mass=15_300.0,
    source="DOMAIN.md §1.1: US Proleukin label, 18 MIU = 1.1 mg, MW ≈ 15,300 Da "
    "→ 61.1 µg/MIU → 3.99 nmol/MIU",
)


def _anthropometry(value: ArrayLike, what: str, unit: str, bounds: tuple[float, float]) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    bad = ~np.isfinite(arr) | (arr < bounds[0]) | (arr > bounds[1])
    if np.any(bad):
        first = arr[bad].flat[0]
        n = int(np.count_nonzero(bad))
        more = f" ({n} values out of range)" if n > 1 else ""
        raise ConfigError(
            f"{what}: expected values in {unit} within [{bounds[0]:g}, {bounds[1]:g}], "
            f"got {first:g}{more}"
        )
    return arr


def _scalar_or_array(arr: np.ndarray) -> float | np.ndarray:
    return float(arr) if arr.ndim == 0 else arr


def bsa_mosteller(height_cm: ArrayLike, weight_kg: ArrayLike) -> float | np.ndarray:
    """Body-surface area (m²) by Mosteller: ``sqrt(H[cm] * W[kg] / 3600)``.

    Mosteller RD. N Engl J Med 1987;317:1098 (DOMAIN.md §6). Broadcasts over arrays; a scalar
    input gives a float.
    """
    h = _anthropometry(height_cm, "height_cm", "cm", _HEIGHT_CM)
    w = _anthropometry(weight_kg, "weight_kg", "kg", _WEIGHT_KG)
    return _scalar_or_array(np.sqrt(h * w / 3600.0))


def bsa_dubois(height_cm: ArrayLike, weight_kg: ArrayLike) -> float | np.ndarray:
    """Body-surface area (m²) by DuBois: ``0.007184 * W[kg]**0.425 * H[cm]**0.725``.

    DuBois D, DuBois EF. Arch Intern Med 1916;17:863-71 (DOMAIN.md §6). Broadcasts over
    arrays; a scalar input gives a float.
    """
    h = _anthropometry(height_cm, "height_cm", "cm", _HEIGHT_CM)
    w = _anthropometry(weight_kg, "weight_kg", "kg", _WEIGHT_KG)
    return _scalar_or_array(0.007184 * w**0.425 * h**0.725)


def bsa(height_cm: ArrayLike, weight_kg: ArrayLike, *, formula: str = "mosteller") -> float | np.ndarray:
    """Body-surface area in m² from height (cm) and weight (kg).

    Parameters
    ----------
    height_cm, weight_kg
        Scalars or arrays (broadcast together). Values outside a wide human range
        (height 30–280 cm, weight 0.5–650 kg) raise :class:`~il2sim.errors.ConfigError`,
        which catches heights in metres and weights in pounds.
    formula
        ``"mosteller"`` (default) or ``"dubois"``.
    """
    if formula == "mosteller":
        return bsa_mosteller(height_cm, weight_kg)
    if formula == "dubois":
        return bsa_dubois(height_cm, weight_kg)
    raise ConfigError(f"bsa formula: expected one of {', '.join(BSA_FORMULAS)}, got {formula!r}")


def check_amount_unit(unit: object) -> tuple[str, str | None]:
    """Split an amount-unit spelling into ``(base, per)``; ``per`` is None, ``"bsa"`` or ``"weight"``.

    Raises :class:`~il2sim.errors.RegimenError` listing every valid spelling otherwise.
    """
    if isinstance(unit, str):
        base, sep, per = unit.partition("/")
        per_key = sep + per
        if base in _BASE_UNITS and per_key in _PER:
            return base, _PER[per_key]
    raise RegimenError(f"unknown amount unit {unit!r}; valid units: {', '.join(AMOUNT_UNITS)}")


def _nmol_per_base(base: str, drug: Drug) -> float:
    kind = _BASE_UNITS[base]
    if kind == "potency":
        return drug.nmol_per_MIU if base == "MIU" else drug.nmol_per_MIU * 1e-6
    if kind == "molar":
        return 1.0 if base == "nmol" else 1e-3
    if drug.molar_mass is None:
        raise RegimenError(
            f"a dose in {base!r} needs the molar mass of {drug.name!r}; give Drug(molar_mass=…) "
            f"in g/mol or dose in one of MIU, IU, nmol, pmol"
        )
    # 1 µg = 1e-6 g = 1e-6 / M mol = 1e3 / M nmol
    return (1e3 if base == "ug" else 1e6) / drug.molar_mass


def dose_to_amount(
    amount: ArrayLike,
    unit: str,
    *,
    bsa: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    drug: Drug,
    target_unit: str = "nmol",
) -> float | np.ndarray:
    """Convert a dose written in ``unit`` to an amount in ``target_unit`` (the dosed state's unit).

    Parameters
    ----------
    amount
        Dose (or infusion rate, per hour) in ``unit``; scalar or array.
    unit
        One of :data:`AMOUNT_UNITS`, e.g. ``"MIU/m2"``.
    bsa
        Body-surface area in m²; required when ``unit`` ends in ``"/m2"``, otherwise ignored.
    weight
        Body weight in kg; required when ``unit`` ends in ``"/kg"``, otherwise ignored.
    drug
        The :class:`Drug` whose factors convert potency or mass to moles.
    target_unit
        ``"nmol"`` (default) or ``"pmol"``.

    Returns
    -------
    float or numpy.ndarray
        ``amount × (bsa or weight) × factor``, a float when every input is a scalar.

    Examples
    --------
    >>> dose_to_amount(0.9, "MIU/m2", bsa=1.8, drug=ALDESLEUKIN, target_unit="pmol")
    6463.8
    """
    base, per = check_amount_unit(unit)
    if not isinstance(drug, Drug):
        raise RegimenError(f"dose_to_amount: drug: expected an il2sim.units.Drug, got {drug!r}")
    if target_unit not in STATE_AMOUNT_UNITS:
        raise RegimenError(
            f"dose_to_amount: target_unit: expected one of {', '.join(STATE_AMOUNT_UNITS)}, "
            f"got {target_unit!r}"
        )
    amt = np.asarray(amount, dtype=float)
    if np.any(~np.isfinite(amt) | (amt < 0)):
        raise RegimenError(f"dose_to_amount: amount: expected finite values >= 0, got {amount!r}")
    if per == "bsa":
        if bsa is None:
            raise RegimenError(
                f"dose unit {unit!r} is per m² of body-surface area; give bsa= (m²) for the subject"
            )
        scale = np.asarray(bsa, dtype=float)
        if np.any(~np.isfinite(scale) | (scale <= 0)):
            raise RegimenError(f"dose_to_amount: bsa: expected finite values > 0 (m²), got {bsa!r}")
        with np.errstate(over="ignore"):
            amt = amt * scale
    elif per == "weight":
        if weight is None:
            raise RegimenError(
                f"dose unit {unit!r} is per kg of body weight; give weight= (kg) for the subject"
            )
        scale = np.asarray(weight, dtype=float)
        if np.any(~np.isfinite(scale) | (scale <= 0)):
            raise RegimenError(
                f"dose_to_amount: weight: expected finite values > 0 (kg), got {weight!r}"
            )
        with np.errstate(over="ignore"):
            amt = amt * scale
    factor = _nmol_per_base(base, drug)
    if target_unit == "pmol":
        factor = factor * 1e3
    with np.errstate(over="ignore"):
        out = amt * factor
    if np.any(~np.isfinite(out)):
        raise RegimenError(
            f"dose_to_amount: amount {amount!r} {unit} is too large: it overflows to infinity "
            f"in {target_unit}"
        )
    return _scalar_or_array(out)
