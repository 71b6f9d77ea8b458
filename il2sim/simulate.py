"""``simulate``: scenario → cohort → compiled kernels → ``xarray.Dataset``.

The Python layer validates, draws subjects, expands the regimen into per-subject dose events
and allocates; the numba kernels (``il2sim/_solvers``) integrate every subject in parallel.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import il2sim
from il2sim.errors import ConfigError, SolverError
from il2sim.population import sample_cohort
from il2sim.results import STAT_FIELDS, STATUS_NAMES, build_dataset
from il2sim.scenario import Scenario, load_scenario
from il2sim._solvers.status import EventKind, Status
from il2sim.stop_rules import ProgressionRule, first_progression

__all__ = ["simulate", "cohort_events"]


def _dose_modifiers(mod, model, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bioavailability and lag of every state from the generated ``dose_modifiers``.

    ``P`` is (subjects, parameters) or (subjects, occasions, parameters); the result has the
    same leading shape with states last.
    """
    lead, ns = P.shape[:-1], len(model.state_names)
    flat = P.reshape(-1, P.shape[-1])
    f, lag = np.empty((flat.shape[0], ns)), np.empty((flat.shape[0], ns))
    for i in range(flat.shape[0]):
        mod.dose_modifiers(flat[i], f[i], lag[i])
    return f.reshape(*lead, ns), lag.reshape(*lead, ns)


def cohort_events(scenario: Scenario, mod, covariates: dict[str, np.ndarray], P: np.ndarray, t_end: float,
                  subject_ids: np.ndarray | None = None, P_occ: np.ndarray | None = None):
    """Kernel event arrays for all subjects: ``(ev_ptr, time, kind, state, value)``.

    Doses come from the scenario regimen (or its NONMEM records), scaled by each subject's BSA
    or weight, converted to the dosed state's unit with the drug's declared IU factor, then
    shifted by the subject's lag and scaled by its bioavailability — those of the dose's cycle
    when ``P_occ`` (subjects, cycles, parameters) carries inter-occasion variability. Bolus-only
    regimens (the usual s.c. case) are expanded once and scaled as arrays; regimens with
    infusions go through ``dosing.to_kernel_events`` per subject.
    """
    from il2sim.dosing import cohort_kernel_events, to_kernel_events
    from il2sim.units import dose_to_amount

    model = scenario.model
    n = P.shape[0]
    state_index = {s: i for i, s in enumerate(model.state_names)}
    names = list(model.state_names)
    regimen = scenario.regimen
    F_occ, lag_occ = _dose_modifiers(mod, model, P[:, None, :] if P_occ is None else P_occ)
    n_occ = F_occ.shape[1]

    def per_state(a, i, occ):
        return {s: float(a[i, occ, j]) for j, s in enumerate(names)}

    if scenario.events is not None:  # NONMEM records: subject i takes the i-th ID's doses
        ids = list(scenario.events)
        return cohort_kernel_events([
            to_kernel_events(scenario.events[ids[int(sid)]], state_index=state_index,
                             F=per_state(F_occ, i, 0), lag=per_state(lag_occ, i, 0), t_end=t_end)
            for i, sid in enumerate(subject_ids)
        ])
    if regimen is None:
        empty = (np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        return cohort_kernel_events([empty] * n)
    cycle_h = regimen.cycle_days * 24.0
    n_cycles = _n_cycles(regimen, t_end)
    bsa = covariates.get("BSA")
    weight = covariates.get("weight")
    units = {s.name: s.unit for s in model.states}
    schedule = regimen.schedule(n_cycles)
    infusion = schedule["duration_h"].notna().any() or schedule["rate"].notna().any()
    if infusion:
        per_subject = []
        for i in range(n):
            doses = regimen.doses(
                bsa=None if bsa is None else float(bsa[i]),
                weight=None if weight is None else float(weight[i]),
                drug=scenario.drug, n_cycles=n_cycles, state_units=units,
            )
            # each cycle's doses with that cycle's F and lag, concatenated in cycle order (a
            # stable sort by time keeps the within-time priorities of to_kernel_events)
            occ_of = [min(int(d.time // cycle_h), n_occ - 1) for d in doses]
            parts = [to_kernel_events([d for d, o in zip(doses, occ_of) if o == k], state_index=state_index,
                                      F=per_state(F_occ, i, k), lag=per_state(lag_occ, i, k), t_end=t_end)
                     for k in sorted(set(occ_of))]
            t_, k_, s_, v_ = (np.concatenate(x) for x in zip(*parts)) if parts else (np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
            order = np.argsort(t_, kind="stable")
            per_subject.append((t_[order], k_[order], s_[order], v_[order]))
        return cohort_kernel_events(per_subject)

    m = len(schedule)
    times = np.empty((n, m))
    values = np.empty((n, m))
    states = np.empty(m, dtype=np.int64)
    for j, row in enumerate(schedule.itertuples(index=False)):
        amt = dose_to_amount(row.amount, row.amount_unit, bsa=bsa, weight=weight, drug=scenario.drug,
                             target_unit=units[row.target])
        occ, s_idx = min(int(row.cycle) - 1, n_occ - 1), state_index[row.target]
        values[:, j] = np.broadcast_to(amt, (n,)) * F_occ[:, occ, s_idx]
        times[:, j] = row.time_h + lag_occ[:, occ, s_idx]
        states[j] = s_idx
    order = np.argsort(times, axis=1, kind="stable")  # lags differ between targets
    times = np.take_along_axis(times, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    states_2d = states[order]
    keep = times <= t_end
    counts = keep.sum(axis=1)
    ev_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=ev_ptr[1:])
    kinds = np.zeros(int(ev_ptr[-1]), dtype=np.int64)  # all boluses
    return ev_ptr, times[keep], kinds, states_2d[keep], values[keep]


def _merge_events(events, extra_t: np.ndarray, extra_k: np.ndarray, extra_s: np.ndarray, extra_v: np.ndarray):
    """Add the same number of extra events to every subject (arrays of shape (subjects, m)).

    At equal times the extra events come first; the existing events keep their order.
    """
    ev_ptr, t, k, s, v = events
    n, m = extra_t.shape
    if m == 0:
        return events
    sid = np.repeat(np.arange(n), np.diff(ev_ptr))
    sid2 = np.concatenate([sid, np.repeat(np.arange(n), m)])
    t2 = np.concatenate([t, extra_t.ravel()])
    first = np.concatenate([np.ones(t.size, np.int64), np.zeros(n * m, np.int64)])
    order = np.lexsort((first, t2, sid2))  # by subject, then time, extra first; stable
    ptr = ev_ptr + np.arange(n + 1) * m
    k2 = np.concatenate([k, extra_k.ravel()])
    s2 = np.concatenate([s, extra_s.ravel()])
    v2 = np.concatenate([v, extra_v.ravel()])
    return ptr, t2[order], k2[order], s2[order], v2[order]


def _with_visits(events, visits: np.ndarray):
    """Add a zero bolus at each assessment visit so that every solve has a step boundary there."""
    n = events[0].size - 1
    shape = (n, visits.size)
    return _merge_events(events, np.broadcast_to(visits, shape), np.zeros(shape, np.int64),
                         np.zeros(shape, np.int64), np.zeros(shape))


def _occasion_parameters(P: np.ndarray, omega: dict[str, float], names: list[str], seed: int,
                         subjects: np.ndarray, n_occ: int) -> np.ndarray:
    """Parameters per occasion (regimen cycle), (subjects, occasions, parameters): log-normal
    inter-occasion variability on top of each subject's IIV value."""
    from il2sim.population import iov_etas

    idx = [names.index(k) for k in omega]
    kappa = iov_etas(seed, subjects, n_occ, len(idx))  # (subjects, occasions, iov parameters)
    P_occ = np.repeat(P[:, None, :], n_occ, axis=1)
    P_occ[:, :, idx] *= np.exp(kappa * np.array([omega[k] for k in omega]))
    return P_occ


def _doses_after(events, rows: np.ndarray, t_stop: np.ndarray):
    """Events of ``rows`` without the doses after each row's stop time (None if no rows)."""
    if rows.size == 0:
        return None
    ev_ptr, t, k, s, v = events
    parts = []
    for r, ts in zip(rows, t_stop):
        a, b = ev_ptr[r], ev_ptr[r + 1]
        # keep visits (zero boluses) and parameter changes (IOV goes on off therapy)
        keep = (t[a:b] <= ts) | (v[a:b] == 0.0) | (k[a:b] == int(EventKind.PARAM))
        parts.append((t[a:b][keep], k[a:b][keep], s[a:b][keep], v[a:b][keep]))
    from il2sim.dosing import cohort_kernel_events

    return cohort_kernel_events(parts)


def simulate(
    scenario: Scenario | str | Path,
    /,
    *,
    subjects: int | None = None,
    subject_ids: np.ndarray | None = None,
    seed: int | None = None,
    parameters: np.ndarray | None = None,
    t_out: np.ndarray | None = None,
    method: str | None = None,
    rtol: float | None = None,
    atol: float | dict | None = None,
    variables: list[str] | None = None,
    chunk_size: int = 4096,
    throw: bool = False,
    backend: str | None = None,
) -> xr.Dataset:
    """Simulate a scenario's virtual cohort and return the results Dataset.

    Main arguments
    --------------
    scenario : Scenario or path to a scenario TOML file.
    subjects : number of virtual subjects (default: the config's ``population.subjects``).
    subject_ids : which subjects to simulate (indices into the virtual population; default
        ``0 .. subjects-1``). Subject ``i`` is the same patient in any selection, which is how
        a cohort is split into chunks or across machines.
    seed : overrides ``scenario.seed``; subject ``i`` is the same patient for a given seed.

    Other arguments
    ---------------
    parameters : (subjects × parameters) matrix in ``model.parameter_names`` order; replaces
        the sampled parameters (covariates are still drawn for dose scaling).
    t_out : output times in h (default: the config's grid).
    method, rtol, atol : override the config's solver settings.
    variables : states/outputs to keep (default: the config's, else all).
    chunk_size : subjects per kernel call; results do not depend on it.
    backend : ``"cpu"``, ``"cuda"`` or ``"auto"``; overrides the config's ``solver.backend``.
        ``"cuda"`` solves one subject per GPU thread with the same solver source (results equal
        the CPU's to rounding); without a GPU it is a ConfigError, and ``"auto"`` runs on the
        CPU, saying why in ``attrs["backend_note"]``.
    throw : raise ``SolverError`` if any subject fails, instead of marking it in ``status``.

    Returns
    -------
    xarray.Dataset with dims ``subject`` and ``time`` (h); one variable per state and output
    with ``units``; per-subject parameters and covariates as coordinates; ``status`` per subject;
    provenance in ``attrs``.

    Failed subjects
    ---------------
    A subject whose solve fails is kept and marked, the others are unaffected (bit for bit the
    same as in a run without it): ``status`` says why (``max_steps``, ``step_too_small``,
    ``non_finite``, or ``negative_state`` when a state fell below its lower bound — 0 unless
    the model file declares ``lower`` — by more than ``10 * (atol + rtol * max |y| so far)``),
    ``t_reached`` when, and ``status_message`` both in words (for ``negative_state`` also the
    state and its value). After a kernel failure the trajectory is NaN; after ``negative_state``
    it is kept for inspection. ``attrs["n_failed"]`` and ``attrs["status_summary"]`` (e.g.
    ``"998 ok, 2 non_finite"``) count them.

    Doses after the end
    -------------------
    A dose after the last output time is not given (it cannot change the output); a regimen
    that starts after the end leaves every subject drug-free.
    """
    from il2sim._codegen import compile_model
    from il2sim._solvers.status import METHODS

    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    solver = sc.solver
    if rtol is not None or atol is not None:  # as the config validator would check them, before use
        _check_tolerances(solver.rtol if rtol is None else rtol, solver.atol if atol is None else atol,
                          sc.model.state_names)
    if method is not None or rtol is not None or atol is not None:
        solver = replace(
            solver,
            method=method or solver.method,
            rtol=solver.rtol if rtol is None else float(rtol),
            atol=solver.atol if atol is None else atol,
        )
    if solver.method not in METHODS:
        raise ConfigError(f"{sc.source}: solver.method: expected one of {', '.join(map(repr, METHODS))}, got {solver.method!r}")
    seed = sc.seed if seed is None else int(seed)
    model = sc.model
    if subject_ids is not None:
        subject_ids = np.asarray(subject_ids, dtype=np.int64).ravel()
        if subject_ids.size == 0 or subject_ids.min() < 0:
            raise ConfigError("simulate: subject_ids: expected a non-empty array of indices >= 0")
        subjects = subject_ids.size
    if sc.events is not None and subjects is None:
        subjects = len(sc.events)  # one subject per ID of the NONMEM records
    n = sc.population.subjects if subjects is None else int(subjects)
    if sc.events is not None:
        last = int(subject_ids.max()) if subject_ids is not None else n - 1
        if last >= len(sc.events):
            raise ConfigError(f"{sc.source}: events.file: has {len(sc.events)} subject ID(s); subject {last} has no dosing records")
    if n < 1:
        raise ConfigError(f"{sc.source}: population.subjects: expected an integer >= 1, got {n}")
    pop = replace(sc.population, subjects=n)
    if t_out is None:
        g = sc.output
        nt = int((g.end_h - g.start_h) / g.dt_h) + 1  # before the grid exists: dt_h = 1e-9 would allocate terabytes
    else:
        try:
            t_out = np.asarray(t_out, dtype=float)
        except (TypeError, ValueError):
            raise ConfigError(f"simulate: t_out: expected an array of times in h, got {type(t_out).__name__}") from None
        _check_grid(t_out, "simulate: t_out")
        nt = t_out.size
    # before compiling or drawing a single subject: the solve grid adds visits and sampling times, a few % at most
    _check_memory(n, nt, len(model.state_names), len(model.output_names), min(n, max(1, int(chunk_size))), sc.source)
    if t_out is None:
        t_out = g.times()
        _check_grid(t_out, f"{sc.source}: output")
    variables = tuple(variables) if variables else sc.output.variables

    from il2sim._cuda import resolve_backend

    backend_used, backend_note = resolve_backend(backend or solver.backend, f"{sc.source}: solver.backend")
    t_start = _time.perf_counter()
    compiled = compile_model(model)
    gpu = None
    if backend_used == "cuda":
        from il2sim._cuda import compile_cuda
        from il2sim._solvers.cuda import solve_cohort_cuda

        gpu = compile_cuda(model)
    t_compiled = _time.perf_counter()
    mod = compiled.module
    cohort = sample_cohort(pop, model.parameter_names, model.default_parameters(), seed, subjects=subject_ids)
    P = cohort.parameters
    if parameters is not None:
        P = np.array(parameters, dtype=float, copy=True)
        if P.shape != (n, len(model.parameter_names)):
            raise ConfigError(
                f"simulate: parameters: expected shape ({n}, {len(model.parameter_names)}) "
                f"(subjects × parameters in model.parameter_names order), got {P.shape}"
            )
    ns, no, nt = len(model.state_names), len(model.output_names), t_out.size
    atol_vec = solver.atol_vector(model.state_names)
    m_code = METHODS[solver.method]

    regimen = sc.regimen
    rule = ProgressionRule() if regimen is not None and regimen.stop == "progression" else None
    visits = np.zeros(0)
    if rule is not None:
        n_cycles = _n_cycles(regimen, float(t_out[-1]))
        visits = regimen.assessment_times(n_cycles)
        visits = visits[visits <= t_out[-1]]
    # Solve on the output grid plus t = 0, the visit times and the sampling times of simulated
    # observations; keep the output grid. Outputs are dense output, so extra times change no step.
    obs = getattr(sc, "observations", None)
    obs_times = obs.times() if obs is not None else np.zeros(0)
    if obs_times.size and obs_times[-1] > t_out[-1]:
        raise ConfigError(f"{sc.source}: observations: sampling time {obs_times[-1]:g} h is after the end of the output grid ({t_out[-1]:g} h)")
    t_solve = np.unique(np.concatenate([t_out, visits, obs_times, [0.0]]))
    i_out = np.searchsorted(t_solve, t_out)
    i_obs = np.searchsorted(t_solve, obs_times)
    i_visit = np.searchsorted(t_solve, visits)
    if rule is not None:  # the judged variable may be a state or an output (checked in scenario)
        judged_is_state = rule.output in model.state_names
        i_m = (model.state_names if judged_is_state else model.output_names).index(rule.output)

    Y = np.empty((n, nt, ns))
    O = np.empty((n, nt, no))
    Y_obs, O_obs = np.empty((n, obs_times.size, ns)), np.empty((n, obs_times.size, no))
    status = np.zeros(n, dtype=np.int64)
    messages = np.full(n, "", dtype=object)  # failed subjects: when, and which state
    lower = np.array([s.lower for s in model.states], dtype=float)
    units = [s.unit for s in model.states]
    stats = np.zeros((n, len(STAT_FIELDS)), dtype=np.int64)
    fstats = np.zeros((n, 2))
    t_stop = np.full(n, np.nan)
    m_base, m_visits = np.full(n, np.nan), np.full((n, visits.size), np.nan)  # for response classes
    # Inter-occasion variability: each regimen cycle is an occasion with its own parameter values.
    iov = dict(getattr(sc.population, "iov", None) or {})
    names = list(model.parameter_names)
    iov_idx = np.array([names.index(k) for k in iov], dtype=np.int64)
    n_occ, occ_start = 1, np.zeros(1)
    if iov:
        cycle_h = regimen.cycle_days * 24.0
        n_occ = _n_cycles(regimen, float(t_out[-1]))
        occ_start = cycle_h * np.arange(n_occ)
    occ_bounds = np.searchsorted(t_solve, np.append(occ_start, np.inf))  # [start_k, start_k+1)
    iov_values = np.empty((n, n_occ, iov_idx.size))

    step = max(1, int(chunk_size))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        Pc = np.ascontiguousarray(P[lo:hi])
        cov_c = {k: a[lo:hi] for k, a in cohort.covariates.items()}
        P_occ = None
        if iov:
            P_occ = _occasion_parameters(Pc, iov, names, seed, cohort.subject[lo:hi], n_occ)
            iov_values[lo:hi] = P_occ[:, :, iov_idx]
            Pc = np.ascontiguousarray(P_occ[:, 0, :])  # occasion 1 holds from t0
        events = cohort_events(sc, mod, cov_c, Pc, float(t_out[-1]), cohort.subject[lo:hi], P_occ=P_occ)
        if iov and n_occ > 1:  # each later cycle starts by setting its parameter values
            m = (n_occ - 1) * iov_idx.size
            shape = (hi - lo, m)
            events = _merge_events(
                events, np.broadcast_to(np.repeat(occ_start[1:], iov_idx.size), shape),
                np.full(shape, int(EventKind.PARAM), np.int64),
                np.broadcast_to(np.tile(iov_idx, n_occ - 1), shape),
                P_occ[:, 1:, iov_idx].reshape(shape),
            )
        events = _with_visits(events, visits)
        Y0 = np.empty((hi - lo, ns))
        mod.eval_initial(Pc, Y0)

        def solve(rows, ev):
            Ys = np.empty((rows.size, t_solve.size, ns))
            Os = np.empty((rows.size, t_solve.size, no))
            st, ct, ft = np.zeros(rows.size, np.int64), np.zeros((rows.size, len(STAT_FIELDS)), np.int64), np.zeros((rows.size, 2))
            Pr = np.ascontiguousarray(Pc[rows])
            if gpu is not None:  # the same kernels on the GPU; outputs too when one P holds throughout
                solve_cohort_cuda(
                    gpu.module, m_code, 1, 0.0, np.ascontiguousarray(Y0[rows]), Pr, t_solve, *ev,
                    solver.rtol, atol_vec, solver.h0, solver.hmax, solver.max_steps, Ys, st, ct, ft,
                    O_out=Os if P_occ is None else None,
                )
            else:
                mod.solve_cohort(
                    m_code, 1, 0.0, np.ascontiguousarray(Y0[rows]), Pr, t_solve, *ev,
                    solver.rtol, atol_vec, solver.h0, solver.hmax, solver.max_steps, Ys, st, ct, ft,
                )
            if P_occ is None:
                if gpu is None:
                    mod.eval_outputs(t_solve, Ys, Pr, Os)
            else:  # outputs with each occasion's parameters
                for k in range(n_occ):
                    a, b = occ_bounds[k], occ_bounds[k + 1]
                    if b > a:
                        Ok = np.empty((rows.size, b - a, no))
                        mod.eval_outputs(t_solve[a:b], np.ascontiguousarray(Ys[:, a:b]),
                                         np.ascontiguousarray(P_occ[rows, k]), Ok)
                        Os[:, a:b] = Ok
            # Amounts and cell counts must not go negative (the kernels do not know bounds):
            # mark such a subject with the state and the time, keep its trajectory for inspection.
            bad, k_t, k_s = _below_lower_bound(t_solve, Ys, lower, solver.rtol, atol_vec)
            ok = st[bad] == 0
            bad, k_t, k_s = bad[ok], k_t[ok], k_s[ok]
            st[bad] = Status.NEGATIVE_STATE
            ft[bad, 0] = t_solve[k_t]
            msg = np.full(rows.size, "", dtype=object)
            for r, kt, ks in zip(bad, k_t, k_s):
                name = model.state_names[ks]
                msg[r] = (f"state {name!r} = {Ys[r, kt, ks]:.6g} {units[ks]} at t = {t_solve[kt]:.6g} h, below its lower "
                          f"bound {lower[ks]:g} by more than the tolerance. {Status.NEGATIVE_STATE.message}")
            for r in np.flatnonzero((st != 0) & (st != Status.NEGATIVE_STATE)):
                msg[r] = f"stopped at t = {ft[r, 0]:.6g} h: {Status(int(st[r])).message}"
            Y[lo + rows] = Ys[:, i_out]
            O[lo + rows] = Os[:, i_out]
            Y_obs[lo + rows], O_obs[lo + rows] = Ys[:, i_obs], Os[:, i_obs]
            status[lo + rows], stats[lo + rows], fstats[lo + rows] = st, ct, ft
            messages[lo + rows] = msg
            return Ys, Os

        rows = np.arange(hi - lo)
        Ys, Os = solve(rows, events)
        if rule is not None and visits.size:
            judged = (Ys if judged_is_state else Os)[:, :, i_m]
            first = first_progression(judged[:, 0], judged[:, i_visit], rule)
            m_base[lo:hi], m_visits[lo:hi] = judged[:, 0], judged[:, i_visit]
            stopped = np.flatnonzero(first >= 0)
            t_stop[lo + stopped] = visits[first[stopped]]
            # Therapy ends at the visit: drop later doses and solve again. The visits are step
            # boundaries in both solves, so everything up to the visit is reproduced exactly.
            later = _doses_after(events, stopped, t_stop[lo + stopped])
            if later is not None:
                solve(stopped, later)

    t_solved = _time.perf_counter()

    failed = np.flatnonzero(status != 0)
    summary = _summary_of_codes(status)
    if throw and failed.size:
        i = int(failed[0])
        raise SolverError(
            f"{failed.size} of {n} subject(s) failed ({summary}); first: subject {int(cohort.subject[i])}, {messages[i]}"
        )
    attrs: dict[str, Any] = {
        "il2sim_version": il2sim.__version__,
        "scenario": sc.name,
        "scenario_file": sc.source,
        "model_modules": ", ".join(sc.models),
        "model_hash": model.text_hash,
        "seed": seed,
        "solver_method": solver.method,
        "backend": backend_used,
        "rtol": solver.rtol,
        "atol": str(solver.atol),
        "codegen_cold": int(compiled.cold),
        "compile_seconds": round(t_compiled - t_start, 3),
        "solve_seconds": round(t_solved - t_compiled, 3),
        "n_failed": int(failed.size),
        "status_summary": summary,
    }
    if backend_note:
        attrs["backend_note"] = backend_note
    ds = build_dataset(
        model=model, t_out=t_out, Y=Y, O=O, P=P, covariates=cohort.covariates,
        covariate_units=cohort.covariate_units, subject=cohort.subject, status=status,
        stats=stats, fstats=fstats, variables=variables, attrs=attrs, messages=messages,
    )
    for j, name in enumerate(iov):
        prm = model.parameters[names.index(name)]
        ds[f"{name}_by_cycle"] = (("subject", "cycle"), iov_values[:, :, j], {
            "units": prm.unit,
            "description": f"{prm.description}, per regimen cycle (inter-occasion variability, omega {iov[name]:g})",
        })
    if iov:
        ds = ds.assign_coords(cycle=("cycle", np.arange(1, n_occ + 1), {"description": "regimen cycle (occasion)"}))
    if obs is not None:
        from il2sim.observations import add_observations

        add_observations(ds, obs, model, Y_obs, O_obs, cohort.subject, seed)
    if rule is not None:
        last_dose = _last_dose_time(sc.regimen, float(t_out[-1]))
        on = np.where(np.isnan(t_stop), np.minimum(last_dose, t_out[-1]), t_stop)
        ds["progression_day"] = ("subject", t_stop / 24.0, {"units": "d", "description": f"assessment visit at which progression ({rule.output} > {1 + rule.rise_fraction:g} x nadir and >= {rule.rise_abs:g} {rule.unit} above it) stopped therapy; NaN if none"})
        ds["days_on_therapy"] = ("subject", on / 24.0, {"units": "d", "description": "days from the start of therapy to its end (progression visit, last dose, or end of simulation)"})
        from il2sim.response import ResponseCriteria, add_response

        criteria = replace(sc.response or ResponseCriteria(), pd_rise_fraction=rule.rise_fraction, pd_rise_abs=rule.rise_abs)
        add_response(ds, m_base, m_visits, visits / 24.0, criteria, variable=rule.output)
    return ds


def _check_grid(t_out: np.ndarray, field: str) -> None:
    if t_out.ndim != 1 or t_out.size == 0 or not np.isfinite(t_out).all() or np.any(np.diff(t_out) < 0) or t_out[0] < 0:
        raise ConfigError(f"{field}: expected a non-empty, non-decreasing grid of finite times >= 0 h")


def _check_tolerances(rtol, atol, state_names) -> None:
    """Validate ``rtol``/``atol`` given to :func:`simulate` as the config validator would."""
    from il2sim.scenario import _solver

    def plain(x):  # numpy scalars count as the numbers they hold
        return x.item() if isinstance(x, np.generic) else x

    atol = {k: plain(x) for k, x in atol.items()} if isinstance(atol, dict) else plain(atol)
    _, problems = _solver({"rtol": plain(rtol), "atol": atol}, "simulate (rtol/atol arguments)")
    if isinstance(atol, dict):
        problems += [f"simulate (rtol/atol arguments): solver.atol.{k}: unknown state '{k}'; states: {', '.join(state_names)}"
                     for k in atol if k != "default" and k not in state_names]
    if problems:
        raise ConfigError("\n".join(problems))


def _below_lower_bound(t: np.ndarray, Ys: np.ndarray, lower: np.ndarray, rtol: float, atol: np.ndarray):
    """Subjects whose trajectory goes below a state's lower bound by more than the tolerance.

    ``Ys`` is (subjects, times, states). State ``j`` counts as below its bound at time ``t_k``
    where ``y < lower - 10 * (atol_j + rtol * max_{t <= t_k} |y|)``: the error control keeps a
    correct solution within about ``atol + rtol * |y|`` of the truth, so a dip of a few
    tolerances below zero while a state decays to it (from its largest value so far) is the
    method's error, not a negative amount. The running maximum, not the maximum over the whole
    run, so that a state that goes negative and then explodes is caught where it crosses.
    NaN values (after a kernel failure) never count. Returns ``(rows, time index, state
    index)`` of the first violation of each offending subject (earliest time, then lowest
    state index).
    """
    n, nt = Ys.shape[:2]
    first_t = np.full(n, nt, dtype=np.int64)
    first_s = np.zeros(n, dtype=np.int64)
    for j in np.flatnonzero(np.isfinite(lower)):  # one state at a time: temporaries stay (subjects, times)
        y = Ys[:, :, j]
        with np.errstate(invalid="ignore", over="ignore"):  # atol = 1e307 gives an infinite slack: never below
            running = np.maximum.accumulate(np.where(np.isfinite(y), np.abs(y), 0.0), axis=1)
            below = y < lower[j] - 10.0 * (atol[j] + rtol * running)  # NaN compares False
        hit = below.any(axis=1)
        k = np.where(hit, np.argmax(below, axis=1), nt)
        earlier = k < first_t  # strictly: at equal times the lower state index (seen first) wins
        first_t[earlier], first_s[earlier] = k[earlier], j
    rows = np.flatnonzero(first_t < nt)
    return rows, first_t[rows], first_s[rows]


def _n_cycles(regimen, t_end: float) -> int:
    """Regimen cycles that start within [0, t_end] h, at most ``max_cycles``."""
    return min(regimen.max_cycles, max(1, math.ceil(t_end / (regimen.cycle_days * 24.0))))


def _last_dose_time(regimen, t_end: float) -> float:
    """Time of the last scheduled dose within the simulation (h)."""
    times = regimen.schedule(_n_cycles(regimen, t_end))["time_h"].to_numpy()
    times = times[times <= t_end]
    return float(times.max()) if times.size else 0.0


def available_memory_bytes() -> int | None:
    """Memory the OS could give this process now (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_memory(n: int, nt: int, ns: int, no: int, chunk: int, source: str) -> None:
    """Refuse up front a cohort whose in-memory result would not fit, saying how to stream it.

    Estimate: the result arrays (states and outputs on the output grid) twice (the arrays and the
    Dataset built from them) plus one chunk's solve arrays twice (solve grid, states and outputs;
    the solve grid is the output grid plus a few visit and sampling times).
    """
    need = 8 * (2 * n * nt * (ns + no) + 2 * chunk * nt * (ns + no) + nt)
    have = available_memory_bytes()
    if have is not None and need > 0.8 * have:
        gib = 1024.0**3
        raise ConfigError(
            f"{source}: {n} subjects × {nt} time points × {ns + no} variables need about "
            f"{need / gib:.1f} GiB in memory, more than the {have / gib:.1f} GiB available. Stream the "
            f"cohort to disk instead: il2sim run CONFIG --out results/cohort.zarr --chunk-size 1024 "
            f"(or python: il2sim.cohort.run_cohort), and/or keep fewer variables or time points "
            f"(output.variables, output.keep_every_h)."
        )


def format_status_counts(counts: dict[str, int]) -> str:
    """``"998 ok, 2 non_finite"``: subjects per status, in the order of ``STATUS_NAMES``."""
    order = {name: i for i, name in enumerate(STATUS_NAMES)}
    return ", ".join(f"{c} {s}" for s, c in sorted(counts.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])) if c)


def _summary_of_codes(codes: np.ndarray) -> str:
    values, counts = np.unique(np.asarray(codes, dtype=np.int64), return_counts=True)
    return format_status_counts({STATUS_NAMES[v] if 0 <= v < len(STATUS_NAMES) else f"code_{v}": int(c)
                                 for v, c in zip(values, counts)})


def status_summary(ds: xr.Dataset) -> str:
    """One line: how many subjects finished and why the others stopped."""
    values, counts = np.unique(ds["status"].values.astype(str), return_counts=True)
    return format_status_counts({v: int(c) for v, c in zip(values, counts)})
