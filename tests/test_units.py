"""BSA formulas and dose-unit conversion against hand-computed values (DOMAIN.md §1.1, §6)."""

import math
import re

import numpy as np
import pytest

from il2sim.errors import ConfigError, RegimenError
from il2sim.units import (
    ALDESLEUKIN,
    AMOUNT_UNITS,
    Drug,
    bsa,
    bsa_dubois,
    bsa_mosteller,
    check_amount_unit,
    dose_to_amount,
)

# ----------------------------------------------------------------------------- BSA


def test_mosteller_hand_values():
    # sqrt(180 * 80 / 3600) = sqrt(4) = 2 exactly
    assert bsa_mosteller(180.0, 80.0) == 2.0
    # sqrt(160 * 57.6 / 3600) = sqrt(2.56) = 1.6
    assert bsa_mosteller(160.0, 57.6) == pytest.approx(1.6, rel=1e-15)
    assert bsa(180.0, 80.0) == 2.0  # Mosteller is the default


def test_dubois_hand_values():
    # 0.007184 * 70**0.425 * 175**0.725, computed by hand with logarithms:
    # ln70 = 4.248495, ln175 = 5.164786 -> 0.425*4.248495 + 0.725*5.164786 = 5.550080
    # exp(5.550080) = e^5.5 * e^0.050080 = 244.6919 * 1.051356 = 257.258 -> 0.007184 * 257.258 = 1.84814
    assert bsa_dubois(175.0, 70.0) == pytest.approx(1.84814, abs=2e-5)
    assert bsa(175.0, 70.0, formula="dubois") == bsa_dubois(175.0, 70.0)
    # DOMAIN §6 [D]: at 60 y, men 1.95 / 1.97 m², women 1.73 / 1.75 m² (DuBois / Mosteller);
    # those rounded values match the upper weights of its ranges, 174 cm/80 kg and 162 cm/68 kg.
    assert bsa_dubois(174.0, 80.0) == pytest.approx(1.95, abs=0.005)
    assert bsa_mosteller(174.0, 80.0) == pytest.approx(1.97, abs=0.005)
    assert bsa_dubois(162.0, 68.0) == pytest.approx(1.73, abs=0.005)
    assert bsa_mosteller(162.0, 68.0) == pytest.approx(1.75, abs=0.005)


def test_bsa_is_vectorised():
    h = np.array([180.0, 160.0, 175.0])
    w = np.array([80.0, 57.6, 70.0])
    got = bsa(h, w)
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    np.testing.assert_allclose(got, [2.0, 1.6, math.sqrt(175 * 70 / 3600)], rtol=1e-15)
    got_d = bsa(h, w, formula="dubois")
    np.testing.assert_allclose(got_d, 0.007184 * w**0.425 * h**0.725, rtol=1e-15)
    # broadcasting a scalar height over weights
    assert bsa(180.0, np.array([80.0, 20.0])).tolist() == [2.0, 1.0]
    assert isinstance(bsa(180.0, 80.0), float)


def test_bsa_rejects_height_in_metres():
    with pytest.raises(ConfigError, match=re.escape("height_cm: expected values in cm within [30, 280], got 1.75")):
        bsa(1.75, 70.0)


def test_bsa_rejects_bad_weights_and_counts_them():
    with pytest.raises(ConfigError, match=re.escape("weight_kg: expected values in kg within [0.5, 650], got nan (2 values out of range)")):
        bsa_dubois([170.0, 170.0, 170.0], [70.0, np.nan, -3.0])


def test_bsa_unknown_formula():
    with pytest.raises(ConfigError, match=re.escape("bsa formula: expected one of mosteller, dubois, got 'boyd'")):
        bsa(170.0, 70.0, formula="boyd")


# ----------------------------------------------------------------------------- units


def test_aldesleukin_factors_are_domain_values():
    assert ALDESLEUKIN.nmol_per_MIU == 3.99
    assert ALDESLEUKIN.molar_mass == 15_300.0
    assert "DOMAIN.md §1.1" in ALDESLEUKIN.source


def test_seed_loading_dose_exact():
    # DOMAIN §1.1: 9 MIU/m² × 1.8 m² = 16.2 MIU = 64.638 nmol
    assert dose_to_amount(9.0, "MIU/m2", bsa=1.8, drug=ALDESLEUKIN) == pytest.approx(64.638, rel=1e-15)
    assert dose_to_amount(16.2, "MIU", drug=ALDESLEUKIN) == pytest.approx(64.638, rel=1e-15)
    assert dose_to_amount(0.9, "MIU/m2", bsa=1.8, drug=ALDESLEUKIN) == pytest.approx(6.4638, rel=1e-15)
    assert dose_to_amount(0.9, "MIU/m2", bsa=1.8, drug=ALDESLEUKIN, target_unit="pmol") == pytest.approx(
        6463.8, rel=1e-15
    )


@pytest.mark.parametrize(
    ("amount", "unit", "kwargs", "nmol"),
    [
        (1.0, "MIU", {}, 3.99),
        (1e6, "IU", {}, 3.99),
        (250_000.0, "IU/kg", {"weight": 80.0}, 0.25 * 80 * 3.99),
        (2.5, "nmol", {}, 2.5),
        (2500.0, "pmol", {}, 2.5),
        (153.0, "ug", {}, 10.0),  # 153e-6 g / 15300 g/mol = 1e-8 mol = 10 nmol
        (1.53, "mg", {}, 100.0),
        (0.0153, "mg/m2", {"bsa": 2.0}, 2.0),
        (1.53, "ug/kg", {"weight": 50.0}, 5.0),
        (3.0, "nmol/m2", {"bsa": 1.5}, 4.5),
        (1.0, "pmol/kg", {"weight": 70.0}, 0.07),
        (2.0, "MIU/kg", {"weight": 10.0}, 79.8),
        (1.0, "IU/m2", {"bsa": 2.0}, 7.98e-6),
    ],
)
def test_conversions_hand_computed(amount, unit, kwargs, nmol):
    assert dose_to_amount(amount, unit, drug=ALDESLEUKIN, **kwargs) == pytest.approx(nmol, rel=1e-14)
    assert dose_to_amount(amount, unit, drug=ALDESLEUKIN, target_unit="pmol", **kwargs) == pytest.approx(
        1e3 * nmol, rel=1e-14
    )


def test_every_unit_spelling_is_accepted_once():
    assert len(AMOUNT_UNITS) == len(set(AMOUNT_UNITS)) == 18
    for unit in AMOUNT_UNITS:
        base, per = check_amount_unit(unit)
        assert per == {"": None, "m2": "bsa", "kg": "weight"}[unit.partition("/")[2]]
        assert dose_to_amount(1.0, unit, bsa=1.0, weight=1.0, drug=ALDESLEUKIN) > 0


def test_dose_to_amount_vectorised_over_bsa():
    got = dose_to_amount(9.0, "MIU/m2", bsa=np.array([1.5, 1.8, 2.0]), drug=ALDESLEUKIN)
    np.testing.assert_allclose(got, 9.0 * np.array([1.5, 1.8, 2.0]) * 3.99, rtol=1e-15)


def test_unknown_unit_lists_valid_ones():
    with pytest.raises(RegimenError, match=re.escape("unknown amount unit 'µg'; valid units: MIU, IU, nmol, pmol, ug, mg, MIU/m2")):
        dose_to_amount(1.0, "µg", drug=ALDESLEUKIN)
    with pytest.raises(RegimenError, match=re.escape("unknown amount unit 'MIU/m^2'")):
        dose_to_amount(1.0, "MIU/m^2", drug=ALDESLEUKIN)


def test_per_m2_needs_bsa():
    with pytest.raises(RegimenError, match=re.escape("dose unit 'MIU/m2' is per m² of body-surface area; give bsa= (m²) for the subject")):
        dose_to_amount(9.0, "MIU/m2", drug=ALDESLEUKIN)


def test_per_kg_needs_weight():
    with pytest.raises(RegimenError, match=re.escape("dose unit 'ug/kg' is per kg of body weight; give weight= (kg) for the subject")):
        dose_to_amount(1.0, "ug/kg", bsa=1.8, drug=ALDESLEUKIN)


def test_mass_unit_needs_molar_mass():
    potency_only = Drug("rIL-2 (Roche)", nmol_per_MIU=0.45)
    assert dose_to_amount(1.0, "MIU", drug=potency_only) == 0.45
    with pytest.raises(RegimenError, match=re.escape("a dose in 'ug' needs the molar mass of 'rIL-2 (Roche)'; give Drug(molar_mass=…)")):
        dose_to_amount(10.0, "ug", drug=potency_only)


def test_bad_target_unit_and_amounts():
    with pytest.raises(RegimenError, match=re.escape("dose_to_amount: target_unit: expected one of nmol, pmol, got 'mg'")):
        dose_to_amount(1.0, "MIU", drug=ALDESLEUKIN, target_unit="mg")
    with pytest.raises(RegimenError, match=re.escape("dose_to_amount: amount: expected finite values >= 0, got -1.0")):
        dose_to_amount(-1.0, "MIU", drug=ALDESLEUKIN)
    with pytest.raises(RegimenError, match=re.escape("dose_to_amount: bsa: expected finite values > 0 (m²), got 0.0")):
        dose_to_amount(1.0, "MIU/m2", bsa=0.0, drug=ALDESLEUKIN)


def test_drug_validates_its_factors():
    with pytest.raises(ConfigError, match=re.escape("Drug('x').nmol_per_MIU: expected a finite number > 0, got 0.0")):
        Drug("x", nmol_per_MIU=0.0)
    with pytest.raises(ConfigError, match=re.escape("Drug('x').molar_mass: expected a number > 0, got '15kDa'")):
        Drug("x", nmol_per_MIU=1.0, molar_mass="15kDa")


def test_dose_amount_that_overflows_is_a_regimen_error():
    # found by tests/properties/test_fuzz_configs.py: 1e308 MIU/m2 overflowed with a RuntimeWarning
    with pytest.raises(RegimenError, match="too large: it overflows"):
        dose_to_amount(1e308, "MIU/m2", bsa=1.8, drug=ALDESLEUKIN)
