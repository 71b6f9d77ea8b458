"""il2sim: simulation engine for subcutaneous interleukin-2 immunotherapy.

Public surface: ``simulate`` and ``sweep`` (the verbs), ``load_scenario``, ``load_model``, the value
objects ``Scenario``, ``Regimen``, ``Dose``, ``Drug`` and the exception types.
"""

__version__ = "0.1.0"

from il2sim.dosing import Dose as Dose
from il2sim.errors import ConfigError as ConfigError
from il2sim.errors import ExpressionError as ExpressionError
from il2sim.errors import Il2simError as Il2simError
from il2sim.errors import ModelSpecError as ModelSpecError
from il2sim.errors import RegimenError as RegimenError
from il2sim.errors import SolverError as SolverError
from il2sim.model import load_model as load_model
from il2sim.regimen import Regimen as Regimen
from il2sim.scenario import Scenario as Scenario
from il2sim.scenario import load_scenario as load_scenario
from il2sim.simulate import simulate as simulate
from il2sim.sweep import sweep as sweep
from il2sim.units import Drug as Drug

__all__ = [
    "simulate", "sweep", "load_scenario", "load_model", "Scenario", "Regimen", "Dose", "Drug",
    "Il2simError", "ModelSpecError", "ExpressionError", "RegimenError", "ConfigError", "SolverError",
]
