"""Fuzzing NONMEM-style event records: random DataFrames and CSV text with valid and broken
rows give doses, or a RegimenError naming the source and the row (or the columns)."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from il2sim.dosing import Dose, read_nonmem
from il2sim.errors import RegimenError

from _fuzz import fuzz

STATES = ["Ad", "Ac"]
COLUMNS = ["ID", "TIME", "AMT", "CMT", "EVID", "II", "ADDL", "RATE", "SS", "DUR"]

GOOD = {
    "ID": st.integers(1, 3), "TIME": st.floats(0, 500), "AMT": st.floats(0.01, 100),
    "CMT": st.sampled_from([1, 2, "Ad", "Ac"]), "EVID": st.sampled_from([0, 1, 3, 4]),
    "II": st.sampled_from([0, 12.0, 24]), "ADDL": st.integers(0, 3), "RATE": st.sampled_from([0, 1.5]),
    "SS": st.just(0), "DUR": st.sampled_from([0, 2.0]),
}
BROKEN = st.one_of(
    st.sampled_from(["", ".", " ", "nan", "inf", "-inf", "NaN", "x", "1e400", "-1", "-2", "0.5",
                     "1.5", "99", "2", "3", "1,5", "\u0661", "\x00", "TRUE", None]),
    st.floats(), st.integers(-10**20, 10**20), st.text(max_size=6),
)


@st.composite
def records(draw):
    cols = draw(st.lists(st.sampled_from(COLUMNS[4:]), unique=True, max_size=6))
    cols = COLUMNS[:4] + cols
    if draw(st.integers(0, 9)) == 0:  # now and then drop or rename a required column
        i = draw(st.integers(0, 3))
        cols[i] = draw(st.sampled_from(["", cols[i].lower(), cols[i] + "X"]))
    rows = []
    n = draw(st.integers(0, 8))
    ids = sorted(draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)))
    for r in range(n):
        row = {}
        for c in cols:
            if draw(st.integers(0, 7)) == 0:
                row[c] = draw(BROKEN)
            elif c == "ID":
                row[c] = ids[r]
            else:
                row[c] = draw(GOOD.get(c.upper(), BROKEN))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(dict.fromkeys(cols)))


def _check(result_or_exc, src):
    if isinstance(result_or_exc, RegimenError):
        msg = str(result_or_exc)
        assert msg.startswith(src), msg
        assert re.search(r" row \S+: ", msg) or "column" in msg or "CSV" in msg, msg
        return
    for sid, doses in result_or_exc.items():
        assert all(isinstance(d, Dose) and math.isfinite(d.time) and d.amt >= 0 for d in doses)
        assert all(d.cmt in STATES for d in doses if d.cmt is not None)


def _read(arg, src):
    try:
        return read_nonmem(arg, state_names=STATES, source=src)
    except RegimenError as exc:
        return exc


@fuzz(80, 2000)
@given(records())
def test_dataframes_give_doses_or_regimen_error(df):
    _check(_read(df, "fuzz.df"), "fuzz.df")


@fuzz(80, 2000)
@given(st.one_of(records().map(lambda df: df.to_csv(index=False)),
                 records().map(lambda df: df.to_csv(index=False)).flatmap(
                     lambda t: st.tuples(st.integers(0, len(t)), st.sampled_from([",", "\n", '"', ",,", "\x00", "\ufeff", "x"])).map(
                         lambda p: t[:p[0]] + p[1] + t[p[0]:])),
                 st.text(max_size=200), st.binary(max_size=200)))
def test_csv_text_gives_doses_or_regimen_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        _check(_read(path, "fuzz.csv"), "fuzz.csv")
