"""The paper's RNN baselines (RNN-Gauss, RNN-GMM, and the Bernoulli and Categorical forms).

Chung et al. 2015, Section 5: h_t = f(phi_x(x_t), h_{t-1}) and x_t ~ phi_dec(h_{t-1}), widened to
the VRNN's parameter count. No latent variables: in the step protocol z_t has size 0, its prior
and posterior are the empty Gaussian, so the KL and every log-ratio are zero and every estimator
of log p(x) (importance sampling, the particle filter, IWAE, FIVO) returns the exact
log-likelihood; :meth:`RNN.log_prob` skips the estimators and answers exactly at once. The whole
recurrence runs as one fused library LSTM/GRU.

Notation as in :mod:`vrnn.models.base`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vrnn.inference.likelihood import LogProb, StepScores, exact_log_prob, exact_step_scores
from vrnn.inference.protocol import State, Step, StepTerms, masked_sum
from vrnn.models.base import SequenceModel
from vrnn.models.config import ModelConfig
from vrnn.models.distributions import diagonal_normal
from vrnn.models.generation import RNNSampler
from vrnn.models.layers import MLP, Decoder


class RNN(SequenceModel):
    """The baselines: ``phi_x``, ``rnn`` (the library LSTM/GRU over phi_x(x_t)) and ``decoder``
    (an MLP of h_{t-1} and the output head). The state is the RNN's ``(h, c)`` or ``(h,)``."""

    fast_sampler = RNNSampler
    """Generation without the step protocol's objects (:mod:`vrnn.models.generation`)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        cfg = config
        if cfg.family != "rnn":
            raise ValueError(f"RNN needs config.family='rnn', got {cfg.family!r}")
        self.phi_x = MLP(cfg.x_dim, cfg.phi_x)
        rnn_cls = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(self.phi_x.out_dim, cfg.h_dim, batch_first=True)
        self.decoder = Decoder(cfg.h_dim, cfg)

    @property
    def latent_dim(self) -> int:
        return 0

    def _rnn_state(self, state: State) -> Tensor | tuple[Tensor, Tensor]:
        s = tuple(t.unsqueeze(0).contiguous() for t in state)  # (1, B, H) each
        return s if self.config.cell == "lstm" else s[0]

    def _from_rnn_state(self, s) -> State:
        return tuple(t.squeeze(0) for t in s) if isinstance(s, tuple) else (s.squeeze(0),)

    # -- the step protocol ----------------------------------------------------------------------
    def context(self, x: Tensor, mask: Tensor | None, state: State) -> tuple[Tensor, ...]:
        return (self.phi_x(x),)  # (B, T, X)

    def step(self, carry: State, ctx_t: tuple[Tensor, ...] | None, eps: Tensor,
             temperature: float = 1.0) -> Step:
        h = carry[0]  # h_{t-1}, (N, H)
        empty = h.new_zeros(h.shape[0], 0)
        none = diagonal_normal(empty, torch.ones_like(empty))  # z_t has no dimensions
        return Step(none, None if ctx_t is None else none, empty,
                    self.decoder(h, temperature), carry)

    def observe(self, carry: State, x_t: Tensor, ctx_t: tuple[Tensor, ...] | None) -> State:
        feat_x = self.phi_x(x_t) if ctx_t is None else ctx_t[0]  # (N, X)
        _, s = self.rnn(feat_x.unsqueeze(1), self._rnn_state(carry))
        return self._from_rnn_state(s)

    # -- the fast path --------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None, *, state: State | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None,
                sample_terms: bool = False, return_latents: bool = False,
                replicas: int = 1) -> StepTerms:
        """Exact per-step log-likelihood of ``x (B, T, D)``; ``kl`` is zero. With ``replicas``
        the rows are copies (no latents, nothing to draw): the arguments and result of
        :meth:`vrnn.models.base.SequenceModel.forward`; ``noise`` and ``generator`` are not
        read (nothing is drawn)."""
        self._check_input(x, mask)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be an int >= 1, got {replicas!r}")
        if return_latents:
            raise ValueError(f"{self.config.name or 'an RNN'} has no latent variables: there is "
                             f"no posterior or prior to report")
        B = x.shape[0]
        if state is not None and state[0].shape[0] != B:  # a carried state per replica
            x = x.repeat(replicas, 1, 1)
            replicas, B = 1, x.shape[0]
        state = self.init_state(B) if state is None else state
        out, last = self.rnn(self.phi_x(x), self._rnn_state(state))  # (B, T, H)
        h_prev = torch.cat([state[0].unsqueeze(1), out[:, :-1]], 1)  # (B, T, H): h_{t-1}
        log_px = self.decoder(h_prev).log_prob(x)  # (B, T)
        last = self._from_rnn_state(last)
        if replicas > 1:
            log_px = log_px.repeat(replicas, 1)  # (N, T)
            last = tuple(s.repeat(replicas, 1) for s in last)
        zeros = torch.zeros_like(log_px)
        terms = StepTerms(log_px=log_px, kl=zeros, state=last)
        if sample_terms:
            terms.log_pz, terms.log_qz = zeros, zeros
        return terms

    @torch.no_grad()
    def log_prob(self, x: Tensor, mask: Tensor | None = None, *, method: str = "is",
                 num_samples: int = 40, repeats: int = 4, threshold: float = 0.5,
                 resampling: str = "multinomial",
                 generator: torch.Generator | None = None) -> LogProb:
        """The exact log-likelihood of every sequence, whatever ``method`` (checked) asks:
        :meth:`vrnn.models.base.SequenceModel.log_prob`'s result with ``method == "exact"``."""
        x, mask, jacobian = self._user_scale(x, mask, method, num_samples, repeats, threshold,
                                             resampling)
        ll = masked_sum(self(x, mask).log_px, mask) + jacobian  # (B,)
        return exact_log_prob(ll)

    @torch.no_grad()
    def score(self, x: Tensor, mask: Tensor | None = None, *, num_samples: int = 40,
              threshold: float = 0.5, resampling: str = "multinomial",
              generator: torch.Generator | None = None) -> StepScores:
        """The exact log p(x_t | x_{<t}) of every step, whatever the arguments (checked) ask:
        :meth:`vrnn.models.base.SequenceModel.score`'s result with ``method == "exact"``."""
        x, mask, _ = self._user_scale(x, mask, "smc", num_samples, 1, threshold, resampling)
        return self._scores_on_user_scale(exact_step_scores(self(x, mask).log_px, mask))
