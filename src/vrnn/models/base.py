"""What every sequence model of the package is: the step protocol's defaults and everything
written once against it.

A family subclasses :class:`SequenceModel` and states its conditionals once, through the
methods of :mod:`vrnn.inference.protocol` (``context``, ``step``, ``observe``; ``reorder`` and
``window_state`` where the defaults do not fit). From those this class builds, for every family:

* :meth:`literal_forward`: the pass over time one step at a time, every network called on
  ``(N, .)`` slices: the reference a fast ``forward`` is pinned to, and ``forward`` itself for a
  family without one;
* :meth:`loss`: the negative ELBO; :meth:`log_prob`: log p(x) by importance sampling or by the
  particle filter, one result type (:class:`vrnn.inference.likelihood.LogProb`);
  :meth:`score`: log p(x_t | x_{<t}) at every step, from the particle filter
  (:class:`vrnn.inference.likelihood.StepScores`);
* :meth:`sample`: unconditional and primed generation with a temperature, by the family's fast
  sampler (:mod:`vrnn.models.generation`) or, ``literal=True``, through the protocol
  (:meth:`generate`).

Notation, batch-first everywhere: B batch, T time steps, D frame size (x_dim), Z latent size,
H recurrent units, K mixture components, S importance samples, R replicas, N = R * B rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence

from vrnn.inference.estimate import log_prob_of
from vrnn.inference.likelihood import LogProb, StepScores, check_method
from vrnn.inference.particles import ParticleFilter
from vrnn.inference.protocol import State, Step, StepTerms
from vrnn.inference.smc import smc_step_scores
from vrnn.models.config import ModelConfig
from vrnn.models.distributions import draw
from vrnn.models.generation import fast_sampler


class SequenceModel(nn.Module):
    """Per-step terms, the training loss, log p(x) and sampling, from one step protocol."""

    config: ModelConfig

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        init = torch.zeros(self.initial_state_shape(config))
        if config.learn_h0:
            self.initial_state = nn.Parameter(init)
        else:
            self.register_buffer("initial_state", init)

    @staticmethod
    def initial_state_shape(config: ModelConfig) -> tuple[int, int]:
        """The shape of ``initial_state``, the learned (``config.learn_h0``) or zero start of
        the recurrence: h_0 (and c_0), ``(1 or 2, H)``; a family with another start (the DMM's
        z_0) says so here."""
        return (2 if config.cell == "lstm" else 1, config.h_dim)

    # -- the protocol (vrnn.inference.protocol) ---------------------------------------------
    @property
    def latent_dim(self) -> int:
        """Z, the size of z_t (0 for a model without latent variables)."""
        return self.config.z_dim

    def init_state(self, batch: int) -> State:
        """The learned (or zero) initial state expanded to ``batch`` rows, each ``(B, H)``."""
        return tuple(s.unsqueeze(0).expand(batch, -1) for s in self.initial_state)

    def context(self, x: Tensor, mask: Tensor | None, state: State) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def step(self, carry: State, ctx_t: tuple[Tensor, ...] | None, eps: Tensor,
             temperature: float = 1.0) -> Step:
        raise NotImplementedError

    def observe(self, carry: State, x_t: Tensor, ctx_t: tuple[Tensor, ...] | None) -> State:
        raise NotImplementedError

    def reorder(self, state: State, rows: Tensor) -> State:
        """Particle i takes row ``rows[i]``'s state (every tensor of the state indexed)."""
        return tuple(s[rows] for s in state)

    def window_state(self, x: Tensor, mask: Tensor | None, state: State,
                     carry: State) -> State:
        """The state after a window: the last step's, for a family whose context carries none."""
        return carry

    # -- checks ---------------------------------------------------------------------------------
    def _check_input(self, x: Tensor, mask: Tensor | None) -> None:
        if x.dim() != 3 or x.shape[-1] != self.config.x_dim:
            raise ValueError(f"expected x of shape (B, T, D={self.config.x_dim}), "
                             f"got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("x has no time steps (T=0)")
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(f"mask must have shape (B, T)={tuple(x.shape[:2])}, "
                             f"got {tuple(mask.shape)}")

    def _checked_noise(self, x: Tensor, mask: Tensor | None, noise: Tensor | None,
                       generator: torch.Generator | None, replicas: int) -> Tensor:
        """A pass's checks: ``x``, ``mask`` and ``replicas``; then the noise of the
        reparameterised z_t, ``(replicas * B, T, Z)``: as given, or drawn from ``generator``."""
        self._check_input(x, mask)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be an int >= 1, got {replicas!r}")
        N, T, Z = replicas * x.shape[0], x.shape[1], self.latent_dim
        if noise is None:
            return torch.randn(N, T, Z, dtype=x.dtype, device=x.device, generator=generator)
        if noise.shape != (N, T, Z):
            raise ValueError(f"noise must have shape (replicas * B, T, Z)={(N, T, Z)}, got "
                             f"{tuple(noise.shape)}")
        return noise

    # -- one pass over time ---------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False,
                replicas: int = 1) -> StepTerms:
        """One pass over ``x (B, T, D)`` with ``mask (B, T)`` (true on the valid prefix of each
        row): the per-step terms. A family with a fast path overrides this; the default is
        :meth:`literal_forward`.

        Args:
            state: the state to start from (truncated BPTT); default the initial state.
            noise: ``(replicas * B, T, Z)`` standard-normal draws for the reparameterised z_t;
                drawn from ``generator`` when absent.
            sample_terms: also return log p(z_t) and log q(z_t) of the sampled z (for IS).
            return_latents: also return z and the posterior's and prior's parameters.
            replicas: pass every sequence this many times, each with its own noise, as if ``x``
                were ``x.repeat(replicas, 1, 1)``: every returned tensor then has
                ``replicas * B`` rows, row ``r * B + b`` being replica r of sequence b. What
                does not depend on z runs once per sequence (importance sampling, IWAE).
        """
        return self.literal_forward(x, mask, state=state, noise=noise, generator=generator,
                                    sample_terms=sample_terms, return_latents=return_latents,
                                    replicas=replicas)

    def literal_forward(self, x: Tensor, mask: Tensor | None = None, *,
                        state: State | None = None, noise: Tensor | None = None,
                        generator: torch.Generator | None = None, sample_terms: bool = False,
                        return_latents: bool = False, replicas: int = 1,
                        particles: ParticleFilter | None = None) -> StepTerms:
        """:meth:`forward` one step at a time through the protocol: the context once per
        sequence, then ``step`` and ``observe`` on ``(N, .)`` slices, the KL from
        ``torch.distributions.kl_divergence``. The arguments and result of :meth:`forward`;
        ``particles``: as :meth:`particle_pass`."""
        noise = self._checked_noise(x, mask, noise, generator, replicas)
        B = x.shape[0]
        R = replicas
        if state is None:  # every replica starts alike: the context once per sequence
            start = self.init_state(B)
            ctx = tuple(c.repeat(R, 1, 1) for c in self.context(x, mask, start))  # (N, T, .)
            start = tuple(s.repeat(R, 1) for s in start)
            xr = x.repeat(R, 1, 1)  # (N, T, D)
            mr = None if mask is None else mask.repeat(R, 1)
        else:  # a carried state of N rows: everything per row
            xr = x.repeat(R, 1, 1)
            mr = None if mask is None else mask.repeat(R, 1)
            start = state
            ctx = self.context(xr, mr, start)
        carry = start
        columns = []
        steps = zip(xr.unbind(1), noise.unbind(1), *(c.unbind(1) for c in ctx))
        for t, (x_t, eps_t, *ctx_t) in enumerate(steps):
            st = self.step(carry, tuple(ctx_t), eps_t)
            q, p = st.posterior, st.prior
            columns.append((st.emission.log_prob(x_t), kl_divergence(q, p), p.log_prob(st.z),
                            q.log_prob(st.z), st.z, q.base_dist.loc, q.base_dist.scale,
                            p.base_dist.loc, p.base_dist.scale))
            carry = self.observe(st.carry, x_t, tuple(ctx_t))
            if particles is not None:  # alpha_t, then the state of the ancestors
                log_px, _, log_pz, log_qz = columns[-1][:4]
                rows = particles(t, log_px + log_pz - log_qz)
                if rows is not None:
                    carry = self.reorder(carry, rows)
        log_px, kl, log_pz, log_qz, *lat = (torch.stack(c, 1) for c in zip(*columns))
        terms = StepTerms(log_px=log_px, kl=kl, state=self.window_state(xr, mr, start, carry))
        if sample_terms:
            terms.log_pz, terms.log_qz = log_pz, log_qz
        if return_latents:
            terms.latents = dict(zip(("z", "enc_loc", "enc_scale", "prior_loc", "prior_scale"),
                                     lat))
        return terms

    def particle_pass(self, x: Tensor, mask: Tensor | None, *, noise: Tensor,
                      particles: ParticleFilter, terms: bool = True) -> StepTerms | None:
        """One pass of K = ``particles.K`` particles per sequence that resamples as it goes:
        :meth:`forward` with ``replicas=K`` and ``sample_terms``, except that after each step
        ``particles`` (:class:`vrnn.inference.particles.ParticleFilter`) is handed the step's
        incremental log weights and may reorder the state by ancestor. Every returned per-step
        term is in its step's own row order, differentiable (FIVO:
        :func:`vrnn.inference.particles.resampled_log_likelihood`). ``terms=False``: only the
        filter's own figures are wanted (an estimate without gradient), and a fast path may
        skip what it computes after the loop and return None. Default: the literal pass; a
        family with a fast path runs the filter inside it."""
        return self.literal_forward(x, mask, noise=noise, sample_terms=True,
                                    replicas=particles.K, particles=particles)

    # -- what a researcher asks --------------------------------------------------------------
    def loss(self, x: Tensor, mask: Tensor | None = None, *, kl_weight: float = 1.0,
             state: State | None = None, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, StepTerms]:
        """Training objective: the negative ELBO summed over time, averaged over sequences.

        For a model without latents this is the exact negative log-likelihood. ``kl_weight`` < 1
        anneals the KL term (off by default, as in the paper). Returns ``(loss, terms)``.
        """
        terms = self(x, mask, state=state, noise=noise, generator=generator)
        return -terms.elbo(mask, kl_weight).mean(), terms

    @torch.no_grad()
    def log_prob(self, x: Tensor | Sequence, mask: Tensor | None = None, *, method: str = "is",
                 num_samples: int = 40, repeats: int = 4, threshold: float = 0.5,
                 resampling: str = "multinomial",
                 generator: torch.Generator | None = None) -> LogProb:
        """log p(x) of every sequence of ``x (B, T, D)``, ``mask (B, T)`` (or of a list of
        ``(T_i, D)`` arrays or tensors), in nats.

        Args:
            method: ``"is"``: importance sampling with ``num_samples`` whole trajectories from
                q (Chung et al.'s evaluation); ``"smc"``: ``repeats`` independent particle
                filters of ``num_samples`` particles, resampling when the effective sample size
                falls below ``threshold * num_samples``. A model without latent variables
                answers exactly under either.
            generator: the stream of the draws, for reproducible estimates.

        Returns:
            :class:`vrnn.inference.likelihood.LogProb`: the estimate per sequence, its standard
            error, the ELBO, the effective sample size (mean and least) and the resampling
            count, each ``(B,)``. Both estimates are logs of unbiased estimates of p(x), so
            stochastic lower bounds of log p(x). In nats of the data as handed in: a model
            :func:`vrnn.fit` normalised (``config.x_scale``) normalises ``x`` itself and adds the
            log-Jacobian, so the figure is on the user's own scale.
        """
        x, mask, jacobian = self._user_scale(x, mask, method, num_samples, repeats, threshold,
                                             resampling)
        est = log_prob_of(self, x, mask, method=method, num_samples=num_samples,
                          repeats=repeats, threshold=threshold, resampling=resampling,
                          generator=generator)
        return est.shifted(jacobian) if self.config.x_scale else est

    @torch.no_grad()
    def score(self, x: Tensor | Sequence, mask: Tensor | None = None, *, num_samples: int = 40,
              threshold: float = 0.5, resampling: str = "multinomial",
              generator: torch.Generator | None = None) -> StepScores:
        """log p(x_t | x_{<t}) at every step of ``x (B, T, D)``, ``mask (B, T)`` (or of a list of
        ``(T_i, D)`` arrays or tensors), in nats: how well the model predicted each frame from
        the frames before it. A frame the model finds unlikely (an outlier, a glitch, a change
        of regime) scores far below its neighbours.

        Args:
            num_samples: K, the particles of the one particle filter per sequence
                (:func:`vrnn.inference.smc.smc_step_scores`); it resamples when the effective
                sample size falls below ``threshold * num_samples`` (0: never, importance
                sampling step by step). A model without latent variables answers exactly.
            generator: the stream of the draws, for reproducible scores.

        Returns:
            :class:`vrnn.inference.likelihood.StepScores`, each ``(B, T)``: ``log_p`` (the
            filter's log sum_k W_{t-1}^k alpha_t^k, zero at padded steps), ``ess`` (ESS_t, in
            [1, K]; near 1 the step's figure rests on one particle), ``kl`` (KL(q || p) of z_t,
            averaged over the particles under W_{t-1}). A sequence's steps sum to the filter's
            log p^(x), a stochastic lower bound of log p(x) like ``log_prob(method="smc")``'s
            (which averages ``repeats`` filters). In nats of the data as handed in: a model
            :func:`vrnn.fit` normalised adds each step's log-Jacobian, -sum_d log
            ``config.x_scale[d]``, so the steps sum to the figure on the user's own scale.
        """
        x, mask, _ = self._user_scale(x, mask, "smc", num_samples, 1, threshold, resampling)
        scores = smc_step_scores(self, x, mask, particles=num_samples, threshold=threshold,
                                 resampling=resampling, generator=generator)
        return self._scores_on_user_scale(scores)

    def _scores_on_user_scale(self, scores: StepScores) -> StepScores:
        """``scores`` of the normalised frames plus the per-step log-Jacobian of the
        normalisation (-sum_d log ``config.x_scale[d]``) when the model has one."""
        if not self.config.x_scale:
            return scores
        _, scale = self._data_scale(scores.log_p)
        return scores.shifted(-scale.log().sum())

    def _user_scale(self, x: Tensor, mask: Tensor | None, method: str, num_samples: int,
                    repeats: int, threshold: float, resampling: str
                    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """``log_prob``'s checks, then ``x`` moved onto the scale the model was trained on
        (``config.x_loc``, ``config.x_scale``: the statistics :func:`vrnn.fit` normalised the
        data with) and the log-Jacobian of that change per sequence, ``(B,)``: log p(x) on the
        user's scale is the model's log-density of the normalised frames minus the sum over
        the valid steps of sum_d log scale_d."""
        check_method(method, num_samples, repeats, threshold, resampling)
        ref = self.initial_state
        if isinstance(x, (list, tuple)):  # (T_i, D) sequences: padded, with their mask
            if mask is not None:
                raise ValueError("log_prob: a list of sequences carries its own lengths; "
                                 "leave mask out")
            x, mask = pad_sequences(x, self.config.x_dim, ref)
        self._check_input(x, mask)
        x = x.to(device=ref.device, dtype=ref.dtype)
        steps = (x.new_full((x.shape[0],), float(x.shape[1])) if mask is None
                 else mask.to(x.dtype).sum(1))  # (B,) valid steps
        if not self.config.x_scale:
            return x, mask, torch.zeros_like(steps)
        loc, scale = self._data_scale(x)
        return (x - loc) / scale, mask, -steps * scale.log().sum()

    def _data_scale(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        """``config.x_loc``, ``config.x_scale`` as ``(D,)`` tensors like ``ref``."""
        c = self.config
        return (torch.tensor(c.x_loc, dtype=ref.dtype, device=ref.device),
                torch.tensor(c.x_scale, dtype=ref.dtype, device=ref.device))

    def sample(self, num: int, steps: int, *, prime: Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               include_prime: bool = False, literal: bool = False) -> Tensor:
        """Generate ``num`` sequences of ``steps`` frames -> ``(num, steps, D)``.

        Args:
            prime: optional prefix ``(P, D)`` or ``(num, P, D)``, read first (through the
                posterior q, with one draw of its noise) before sampling continues from the
                prior.
            temperature: divides mixture / Bernoulli / Categorical logits, multiplies output
                scales by its root.
            generator: the random stream, for reproducible samples.
            include_prime: prepend the prefix to the output -> ``(num, P + steps, D)``.
            literal: read the prefix and generate through the step protocol, one step at a time
                with its distribution objects (:meth:`literal_forward`, :meth:`generate`): the
                reference that the default, the model's ``forward`` and its fast sampler
                (:meth:`fast_generate`), is tested against. The same sequences from the same
                ``generator`` (up to rounding), slower.

        A model fitted on normalised data (``config.x_scale``, :func:`vrnn.fit`) reads the prefix
        and returns the frames on the user's own scale.
        """
        if num < 1 or steps < 0:
            raise ValueError(f"sample needs num >= 1 and steps >= 0, got num={num}, steps={steps}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        ref = self.initial_state
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                state = self.init_state(num)
                if prime is not None:
                    prime = prime.to(device=ref.device, dtype=ref.dtype)
                    if prime.dim() == 2:
                        prime = prime.unsqueeze(0).expand(num, -1, -1)  # (num, P, D)
                    if (prime.dim() != 3 or prime.shape[0] != num
                            or prime.shape[-1] != self.config.x_dim):
                        raise ValueError(f"prime must be (P, D={self.config.x_dim}) or "
                                         f"(num={num}, P, D); got {tuple(prime.shape)}")
                    loc, scale = self._data_scale(prime) if self.config.x_scale else (0, 1)
                    read = self.literal_forward if literal else self
                    state = read((prime - loc) / scale, state=state, generator=generator).state
                make = self.generate if literal else self.fast_generate
                out = make(state, steps, temperature, generator)
                if self.config.x_scale:  # back onto the user's scale
                    loc, scale = self._data_scale(out)
                    out = out * scale + loc
        finally:
            self.train(was_training)
        if include_prime and prime is not None:
            out = torch.cat([prime, out], 1)
        return out

    fast_sampler: type | None = None
    """The family's sampler class in :mod:`vrnn.models.generation` (None: generation goes by
    the step protocol)."""

    def fast_generate(self, state: State, steps: int, temperature: float = 1.0,
                      generator: torch.Generator | None = None) -> Tensor:
        """:meth:`generate`'s frames by the family's fast sampler (:mod:`vrnn.models.generation`:
        no distribution objects, the products with each input fused, the output preallocated),
        drawing the same random numbers in the same order; :meth:`generate` itself for a model
        without one (or with a network of its own swapped in) -> ``(num, steps, D)``."""
        with torch.no_grad():
            sampler = fast_sampler(self)
            if sampler is None:
                return self.generate(state, steps, temperature, generator)
            return sampler.run(state, steps, temperature, generator)

    def generate(self, state: State, steps: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """``steps`` frames from ``state`` (each ``(num, .)``) by the protocol: z_t from the
        prior, x_t from the emission at ``temperature``, both from ``generator``'s stream ->
        ``(num, steps, D)``."""
        num = state[0].shape[0]
        ref = self.initial_state
        frames = []
        for _ in range(steps):
            eps = torch.randn(num, self.latent_dim, dtype=ref.dtype, device=ref.device,
                              generator=generator)
            st = self.step(state, None, eps, temperature)
            x = draw(st.emission, generator)  # (num, D)
            state = self.observe(st.carry, x, None)
            frames.append(x)
        if not frames:
            return ref.new_zeros(num, 0, self.config.x_dim)
        return torch.stack(frames, 1)  # (num, steps, D)


def pad_sequences(seqs: Sequence, x_dim: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(T_i, D)`` arrays or tensors -> ``x (B, T_max, D)`` zero-padded like ``like`` (dtype,
    device) and ``mask (B, T_max)``; errors name the item and its shape."""
    rows = []
    for i, s in enumerate(seqs):
        t = torch.as_tensor(np.asarray(s) if not isinstance(s, Tensor) else s)
        if t.dim() != 2 or t.shape[-1] != x_dim or t.shape[0] < 1:
            raise ValueError(f"sequence {i}: expected (T, D={x_dim}) with T >= 1, got "
                             f"{tuple(t.shape)}")
        rows.append(t.to(device=like.device, dtype=like.dtype))
    if not rows:
        raise ValueError("no sequences")
    T = max(len(r) for r in rows)
    x = like.new_zeros(len(rows), T, x_dim)
    mask = torch.zeros(len(rows), T, dtype=torch.bool, device=like.device)
    for i, r in enumerate(rows):
        x[i, :len(r)], mask[i, :len(r)] = r, True
    return x, mask


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
