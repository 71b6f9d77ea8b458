"""Fuzzing numerical trouble (issue 6): parameter matrices that wander into absurd corners
(zero, negative, huge, tiny, NaN, infinite) and absurd solver settings.

Every subject ends ``ok`` with finite, in-bounds values, or is marked with a reason whose
message and ``t_reached`` agree with its trajectory; each subject's result is the same as when
it is simulated alone; the run's summary counts them. Settings are a ConfigError naming the
argument and field, or run.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

import il2sim
from il2sim.errors import ConfigError
from il2sim.results import STATUS_NAMES
from il2sim.scenario import load_scenario
from il2sim.simulate import format_status_counts

from _fuzz import fuzz

CONFIG = Path(__file__).parents[1] / "configs" / "onecmt.toml"
_SC = load_scenario(CONFIG)
# a short grid and a step budget: a pathological subject must fail fast, not take a million steps
SC = replace(_SC, solver=replace(_SC.solver, max_steps=20_000))
T_OUT = np.arange(0.0, 61.0, 4.0)
DEFAULTS = SC.model.default_parameters()


def _value(default):
    return st.one_of(
        st.floats(0.1 * default, 10.0 * default) if default > 0 else st.just(0.0),
        st.sampled_from([0.0, -0.5, -5.0, 1e300, 1e-300, -1e300, math.nan, math.inf, -math.inf, 50.0]),
        st.floats(-1e3, 1e3),
    )


@st.composite
def parameter_matrices(draw):
    n = draw(st.integers(1, 4))
    rows = [[draw(_value(d)) if draw(st.booleans()) else d for d in DEFAULTS] for _ in range(n)]
    return np.array(rows, dtype=float)


@fuzz(25, 1000, deadline=None)
@given(parameter_matrices(), st.sampled_from(["rodas5p", "tsit5"]))
def test_absurd_parameters_are_ok_or_marked_with_reason_and_time(P, method):
    ds = il2sim.simulate(SC, subjects=P.shape[0], parameters=P, t_out=T_OUT, method=method)
    status = [str(s) for s in ds.status.values]
    assert set(status) <= set(STATUS_NAMES), status
    assert ds.attrs["n_failed"] == sum(s != "ok" for s in status)
    assert ds.attrs["status_summary"] == format_status_counts(dict(Counter(status)))
    lower = np.array([s.lower for s in SC.model.states])
    for i, s in enumerate(status):
        event(f"subject {s}")  # --hypothesis-show-statistics: how often each outcome was reached
        t, msg = float(ds.t_reached.values[i]), str(ds.status_message.values[i])
        Y = np.stack([ds[name].values[i] for name in SC.model.state_names], axis=-1)  # (time, states)
        if s == "ok":
            assert msg == "" and t == T_OUT[-1]
            assert np.isfinite(Y).all()
            slack = 10 * (SC.solver.atol + SC.solver.rtol * np.maximum.accumulate(np.abs(Y), axis=0))
            assert (Y >= lower - slack).all()
        elif s == "negative_state":
            assert msg.startswith("state '") and f" at t = {t:.6g} h, below its lower bound " in msg, msg
        else:
            assert msg.startswith(f"stopped at t = {t:.6g} h: "), msg
            assert 0.0 <= t <= T_OUT[-1]
            assert np.isnan(Y[T_OUT > t]).all()
    # a subject's result does not depend on the others
    i = P.shape[0] - 1
    alone = il2sim.simulate(SC, subject_ids=np.array([i]), parameters=P[[i]], t_out=T_OUT, method=method)
    for name in (*SC.model.state_names, "t_reached", "n_steps"):
        np.testing.assert_array_equal(ds[name].values[[i]], alone[name].values, err_msg=name)
    assert str(alone.status.values[0]) == status[i]


_TOL = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 1e-20, 0.5, 1e-6, 1e-9]),
                 st.text(max_size=3), st.none())


@fuzz(40, 1000, deadline=None)
@given(_TOL, st.one_of(_TOL, st.dictionaries(st.sampled_from(["Ad", "Ac", "default", "Cx"]), _TOL, max_size=3)))
def test_solver_settings_given_to_simulate_are_checked(rtol, atol):
    try:
        ds = il2sim.simulate(SC, subjects=1, t_out=T_OUT, rtol=rtol, atol=atol)
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("simulate (rtol/atol arguments): solver."), msg
        event("ConfigError")
        return
    event("simulated")
    r = SC.solver.rtol if rtol is None else rtol
    assert 1e-14 <= r <= 0.1
    assert str(ds.status.values[0]) in STATUS_NAMES
