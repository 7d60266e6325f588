"""The DPM++ side of Wan2.2's flow-matching schedulers (wan/utils/fm_solvers.py upstream), written
for the stand-in: ``get_sampling_sigmas``, ``retrieve_timesteps`` and
``FlowDPMSolverMultistepScheduler`` with the real interfaces and the real schedule (the same
sigmas and int64 timesteps for the same steps and shift). ``step`` is a first-order flow-matching
(Euler) update, not the multistep DPM-Solver++ one.
"""

import inspect
from types import SimpleNamespace

import numpy as np
import torch


def _shifted(sigmas, shift):
    """Wan's timestep shift: sigma -> shift * sigma / (1 + (shift - 1) * sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def get_sampling_sigmas(sampling_steps, shift):
    """``sampling_steps`` shifted sigmas from 1 down to (not including) 0, as a float64 array."""
    return _shifted(np.linspace(1, 0, sampling_steps + 1)[:sampling_steps], shift)


def retrieve_timesteps(scheduler, num_inference_steps=None, device=None, timesteps=None, sigmas=None, **kwargs):
    """Set the scheduler's schedule from a step count, explicit timesteps or explicit sigmas;
    returns ``(scheduler.timesteps, number of steps)``."""
    if timesteps is not None and sigmas is not None:
        raise ValueError("Only one of `timesteps` or `sigmas` can be passed.")
    custom = "timesteps" if timesteps is not None else "sigmas" if sigmas is not None else None
    if custom is not None:
        if custom not in inspect.signature(scheduler.set_timesteps).parameters:
            raise ValueError(f"{type(scheduler).__name__}.set_timesteps does not take custom {custom}.")
        scheduler.set_timesteps(device=device, **{custom: timesteps if custom == "timesteps" else sigmas}, **kwargs)
        return scheduler.timesteps, len(scheduler.timesteps)
    scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
    return scheduler.timesteps, num_inference_steps


class FlowSchedulerBase:
    """What both stand-in schedulers share: the training sigma table, ``set_timesteps`` (the
    real rule: a linear grid from the largest to the smallest training sigma, Wan's shift, int64
    timesteps = sigma * num_train_timesteps truncated, a final sigma of 0) and an Euler step
    ``x + (sigma_next - sigma) * v`` that advances one index per call."""

    order = 1
    _config_defaults = {}

    def __init__(self, num_train_timesteps=1000, solver_order=2, prediction_type="flow_prediction", shift=1.0,
                 use_dynamic_shifting=False, final_sigmas_type="zero", **kwargs):
        self.config = SimpleNamespace(num_train_timesteps=num_train_timesteps, solver_order=solver_order,
                                      prediction_type=prediction_type, shift=shift,
                                      use_dynamic_shifting=use_dynamic_shifting, final_sigmas_type=final_sigmas_type,
                                      **{**self._config_defaults, **kwargs})
        train = 1.0 - np.linspace(1, 1 / num_train_timesteps, num_train_timesteps)[::-1].copy()
        sigmas = torch.from_numpy(train).to(torch.float32)
        if not use_dynamic_shifting:
            sigmas = _shifted(sigmas, shift)
        self.sigmas = sigmas
        self.timesteps = sigmas * num_train_timesteps
        self.sigma_max = self.sigmas[0].item()
        self.sigma_min = self.sigmas[-1].item()
        self.num_inference_steps = None
        self._step_index = None
        self._begin_index = None

    @property
    def step_index(self):
        return self._step_index

    @property
    def begin_index(self):
        return self._begin_index

    def set_begin_index(self, begin_index=0):
        self._begin_index = begin_index

    def time_shift(self, mu, sigma, t):
        return np.exp(mu) / (np.exp(mu) + (1 / t - 1) ** sigma)

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, shift=None):
        if self.config.use_dynamic_shifting and mu is None:
            raise ValueError("`mu` is required when `use_dynamic_shifting` is set")
        if sigmas is None:
            sigmas = np.linspace(self.sigma_max, self.sigma_min, num_inference_steps + 1)[:-1]
        sigmas = np.asarray(sigmas, dtype=np.float64)
        if self.config.use_dynamic_shifting:
            sigmas = self.time_shift(mu, 1.0, sigmas)
        else:
            sigmas = _shifted(sigmas, self.config.shift if shift is None else shift)
        if self.config.final_sigmas_type != "zero":
            raise ValueError("the stand-in schedulers end at sigma 0 (final_sigmas_type='zero')")
        timesteps = sigmas * self.config.num_train_timesteps
        self.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(timesteps)
        self._step_index = None
        self._begin_index = None

    def index_for_timestep(self, timestep, schedule_timesteps=None):
        """Where ``timestep`` sits in the schedule; of repeated values the second, as upstream
        (diffusers) picks it."""
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        matches = (schedule == timestep).nonzero()
        if len(matches) == 0:
            raise ValueError(f"timestep {timestep} is not in the schedule")
        return matches[1 if len(matches) > 1 else 0].item()

    def _init_step_index(self, timestep):
        if self.begin_index is not None:
            self._step_index = self.begin_index
        else:
            if isinstance(timestep, torch.Tensor):
                timestep = timestep.to(self.timesteps.device)
            self._step_index = self.index_for_timestep(timestep)

    def _euler(self, model_output, sample):
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        if self._step_index >= self.num_inference_steps:
            raise IndexError(f"step {self._step_index + 1} past the {self.num_inference_steps}-step schedule")
        sigma, sigma_next = self.sigmas[self._step_index], self.sigmas[self._step_index + 1]
        prev = sample.float() + (sigma_next - sigma).item() * model_output.float()
        self._step_index += 1
        return prev.to(sample.dtype)

    def scale_model_input(self, sample, *args, **kwargs):
        return sample

    def add_noise(self, original_samples, noise, timesteps):
        sigmas = self.sigmas.to(original_samples.device)
        index = [self.index_for_timestep(t, self.timesteps.to(timesteps.device)) for t in timesteps]
        sigma = sigmas[index].flatten().view(-1, *[1] * (original_samples.dim() - 1))
        return (1 - sigma) * original_samples + sigma * noise

    def __len__(self):
        return self.config.num_train_timesteps


class FlowDPMSolverMultistepScheduler(FlowSchedulerBase):
    """``FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=2,
    prediction_type="flow_prediction", shift=1.0, use_dynamic_shifting=False, ...)``."""

    _config_defaults = dict(algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
                            euler_at_final=False)

    def step(self, model_output, timestep, sample, generator=None, variance_noise=None, return_dict=True):
        if self.step_index is None:
            self._init_step_index(timestep)
        prev_sample = self._euler(model_output, sample)
        return (prev_sample,) if not return_dict else SimpleNamespace(prev_sample=prev_sample)
