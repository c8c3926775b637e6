"""Pure Kac-flow mathematics: exact law and sampler, conditional velocity, schedules, training targets,
velocity-space guidance and integrators. Tensors in, tensors out: no I/O, no configs, no distributed code.
"""

from kacdist.kac.guidance import GuidedVelocity, guidance_weight, guided_velocity
from kacdist.kac.integrators import INTEGRATORS, IntegrationResult, integrate, nfe_per_call
from kacdist.kac.law import kac_ac_density, kac_atom_mass, kac_variance
from kacdist.kac.process import KacProcess
from kacdist.kac.sampler import SAMPLERS, sample_kac
from kacdist.kac.schedules import SCHEDULES, get_schedule
from kacdist.kac.velocity import kac_velocity

__all__ = [
    "INTEGRATORS",
    "SAMPLERS",
    "SCHEDULES",
    "GuidedVelocity",
    "IntegrationResult",
    "KacProcess",
    "get_schedule",
    "guidance_weight",
    "guided_velocity",
    "integrate",
    "kac_ac_density",
    "kac_atom_mass",
    "kac_variance",
    "kac_velocity",
    "nfe_per_call",
    "sample_kac",
]
