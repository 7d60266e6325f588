"""The UniPC side of Wan2.2's flow-matching schedulers (wan/utils/fm_solvers_unipc.py upstream),
written for the stand-in: ``FlowUniPCMultistepScheduler`` with the real constructor,
``set_timesteps(num_inference_steps, device=..., shift=...)`` producing the real schedule and
``step(model_output, timestep, sample, return_dict=True, generator=None)``. The step is a
first-order flow-matching (Euler) update, not UniPC's predictor-corrector."""

from types import SimpleNamespace

from .fm_solvers import FlowSchedulerBase


class FlowUniPCMultistepScheduler(FlowSchedulerBase):

    _config_defaults = dict(predict_x0=True, solver_type="bh2", lower_order_final=True, disable_corrector=[],
                            solver_p=None, timestep_spacing="linspace", steps_offset=0)

    def step(self, model_output, timestep, sample, return_dict=True, generator=None):
        if self.step_index is None:
            self._init_step_index(timestep)
        prev_sample = self._euler(model_output, sample)
        return (prev_sample,) if not return_dict else SimpleNamespace(prev_sample=prev_sample)
