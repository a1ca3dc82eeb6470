r"""Differential privacy for the federated statistics: clipped features, the Gaussian mechanism on :math:`G` and
:math:`B`, accounted with ``dp-accounting`` (REFERENCE.md §8, "DP for sufficient statistics").

**Neighbouring datasets and sensitivity.** Two datasets are neighbours when one holds one more sample (add/remove
one, the relation ``dp-accounting`` accounts by default). Every feature vector is clipped first,
:math:`x \leftarrow x \min(1, C/\|x\|_2)` (:func:`clip_features`), and labels are one-hot, so one sample changes
the Gram by :math:`x x^\top` and the cross-moment by :math:`x y^\top`. The mechanism releases the *upper triangle*
of :math:`G` (diagonal included, row by row: the off-diagonal entries count once) and :math:`B`; their changes have

.. math::
    \|\operatorname{triu}(x x^\top)\|_2^2 = \sum_{i \le j} x_i^2 x_j^2 = \tfrac12\big(\|x\|^4 + \textstyle\sum_i x_i^4\big)
    \le \|x\|^4 \le C^4, \qquad \|x y^\top\|_F = \|x\|_2 \le C,

the first tight for an :math:`x` along one axis. G and B get separately scaled noise: with a share
:math:`s \in (0, 1)` of the budget for G (``gram_share``),

.. math::
    \tilde G = G + E, \quad E_{ij} = E_{ji} \sim \mathcal N\Big(0, \frac{z^2 C^4}{s}\Big) \ (i \le j), \qquad
    \tilde B = B + F, \quad F_{ic} \sim \mathcal N\Big(0, \frac{z^2 C^2}{1 - s}\Big),

which is the Gaussian mechanism with noise multiplier z on the vector
:math:`(\sqrt s\,\operatorname{triu}(G)/C^2, \sqrt{1-s}\,B/C)`, whose joint L2 sensitivity is
:math:`\sqrt{s + (1 - s)} = 1`. The noise is drawn on the upper triangle and mirrored, so :math:`\tilde G` is
symmetric. One noise scale for both blocks is the special case :math:`s = C^2/(C^2 + 1)` (joint sensitivity
:math:`C\sqrt{C^2+1}`). z is calibrated to a target (ε, δ) by ``dp_accounting.calibrate_dp_mechanism`` with its PLD
or RDP accountant (:func:`calibrate_noise_multiplier`). Only :math:`\tilde G, \tilde B` are released: the counts and
the feature sum would need their own share of the budget, so a private head has no intercept.

**Client-level DP** (``max_samples`` m). Where the unit to protect is a client (a hospital, a phone), two
datasets are neighbours when one holds one more *client*. A client that contributes at most m clipped samples
(:func:`cap_samples`) changes the released blocks by at most

.. math::
    \|\operatorname{triu}(\textstyle\sum_{k \le m} x_k x_k^\top)\|_2 \le m C^2, \qquad
    \|\textstyle\sum_{k \le m} x_k y_k^\top\|_F \le m C,

(triangle inequality), so the same mechanism with both noise stds multiplied by m is (ε, δ)-DP per client; m = 1
is sample-level DP. The cap is the clients' to keep (:func:`noisy_share` refuses statistics of more than m samples);
under central DP the server can check it on each upload's ``count`` before it sums.

**Central DP** (:func:`privatize_statistics`): the server, trusted with the exact aggregate, adds the noise once.

**Distributed DP** (:func:`noisy_share`, :func:`release_from_sum`): under secure aggregation
(:mod:`federated.secure`) the server only sees the sum, so each client adds a share of the noise to its own
fixed-point upload. Shares must be integers on the grid :math:`2^{-f}` (G's entries live on :math:`2^{-2f}`, B's on
:math:`2^{-f}`): each of K clients adds the discrete Gaussian :math:`\mathcal N_{\mathbb Z}(0, \sigma^2)` of
Kairouz, Liu & Steinke (ICML 2021) with :math:`\sigma^2 = \sigma_{\text{central}}^2 / K_{\min}` in grid units,
sampled exactly as Canonne, Kamath & Steinke (NeurIPS 2020, Algorithm 3) do (:func:`sample_discrete_gaussian`, with
floating-point acceptance tests). Features are clipped *and* truncated toward zero onto the grid, so the quantized
norm is still at most C and the integer sensitivities are exactly :math:`C^2 2^{2f}` and :math:`C 2^f`. The sum of
:math:`K_s` surviving shares satisfies, per block of dimension :math:`d_b` and for every Rényi order α ≥ 1
(Kairouz et al., Proposition 14),

.. math::
    D_\alpha \le \frac{\alpha \Delta_b^2}{2 K_s \sigma_b^2} + \tau_b d_b, \qquad
    \tau_b = 10 \sum_{k=1}^{K_s - 1} e^{-2\pi^2 \sigma_b^2 k/(k+1)},

and Rényi divergences of the independent blocks add: the release is
:math:`(\xi, \rho)`-zCDP with :math:`\rho = \frac{K_{\min}}{2 K_s z^2}` and :math:`\xi = \sum_b \tau_b d_b`, turned
into (ε, δ) by ``dp-accounting``'s RDP accountant (``ZCDpEvent``; :func:`distributed_epsilon`). What holds:
with :math:`K_s \ge K_{\min}` surviving clients the target (ε, δ) holds against the server (which sees only the
sum) and against any coalition of c clients that pool their own shares while :math:`K_s - c \ge K_{\min}`. If
clients drop out so that fewer than :math:`K_{\min}` shares reach the sum, ρ grows by :math:`K_{\min}/K_s`:
:func:`distributed_epsilon` gives the weaker ε that then holds. (At the scales used here
:math:`\sigma_b \gg 1` and :math:`\xi` underflows to 0: the distributed release is as private as the central one.)
The sum of the noisy shares must stay below :math:`2^{62}` (the secure sum modulo :math:`2^{64}` is then exact).

**Positive definiteness** (:func:`solve_private`). :math:`\tilde G` need not be positive semidefinite. The head is
solved from its projection onto the positive semidefinite cone — eigenvalues clipped at 0,
:math:`\hat G = V \max(\Lambda, 0) V^\top` — which is post-processing (no privacy cost), never farther from the true
:math:`G \succeq 0` in Frobenius norm, and makes :math:`\hat G + \gamma I \succeq \gamma I` for any γ > 0. The
ridge itself should exceed the noise: :func:`noise_spectral_bound` gives a high-probability bound on
:math:`\|E\|_2` (a γ floor in the spirit of Sheffet 2017, "Differentially private ordinary least squares", and
Wang 2018, "Revisiting differentially private linear regression"), with which :math:`\tilde G + \gamma I` is
positive definite even before the projection.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.linalg

import analytic
from analytic.internal import (
    check_choice,
    check_features,
    check_int,
    check_number,
    factorize_matrix,
    packed_length,
    unpack_upper,
)
from federated.payload import encode_statistics

ACCOUNTANTS = ("pld", "rdp")
PLD_INTERVAL = 1e-3  # the PLD accountant's loss discretization (pessimistic: ε is never underestimated)
MIN_NOISE_MULTIPLIER = 0.05  # the calibration searches above it (ε ≈ 100 or more below; PLD grids blow up there)


def _dp_accounting():
    try:
        import dp_accounting
    except ImportError as error:  # an optional extra
        raise ImportError(f"privacy accounting needs dp-accounting ({error}): "
                          "pip install 'analytic-learning[privacy]'") from error
    return dp_accounting


def _check_epsilon(epsilon) -> float:
    if isinstance(epsilon, (int, float, np.floating)) and not isinstance(epsilon, bool) and epsilon == math.inf:
        return math.inf
    return check_number("epsilon", epsilon, low=0, low_open=True)


def _check_delta(delta) -> float:
    return check_number("delta", delta, low=0, high=1, low_open=True, high_open=True)


def clip_features(features, clip_norm: float, *, frac_bits: int | None = None) -> np.ndarray:
    r"""Per-sample clipping :math:`x \leftarrow x \min(1, C/\|x\|_2)`, optionally truncated onto a fixed-point grid.

    The clipping that bounds one sample's contribution to :math:`G` by :math:`C^2` and to :math:`B` by C (module
    docstring). With ``frac_bits`` f the clipped values are truncated toward zero to multiples of :math:`2^{-f}`
    (never rounded up), so the quantized norm stays at most C: what distributed DP on fixed-point statistics needs.

    Args:
      features: (n, d) floating array (finite).
      clip_norm: C > 0.
      frac_bits: fractional bits f of the grid, or ``None`` to keep the clipped floats.

    Returns:
      (n, d) float64 clipped features, every row of norm ≤ C.

    Raises:
      analytic.InputError: ``clip_norm`` ≤ 0, a bad ``frac_bits``, or features that are not a finite (n, d) array.

    Example:
      >>> clipped = clip_features(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0)
      >>> clipped, np.linalg.norm(clipped, axis=1)
      (array([[0.6, 0.8],
             [0.3, 0.4]]), array([1. , 0.5]))
      >>> clip_features(np.array([[3.0, 4.0]]), 1.0, frac_bits=2)  # truncated to quarters: norm ≤ 1 still
      array([[0.5 , 0.75]])
    """
    clip_norm = check_number("clip_norm", clip_norm, low=0, low_open=True)
    if frac_bits is not None:
        frac_bits = check_int("frac_bits", frac_bits, minimum=0)
    x = check_features(features, finite=True).astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    clipped = x * np.minimum(1.0, clip_norm / np.maximum(norms, np.finfo(np.float64).tiny))
    if frac_bits is None:
        return clipped
    return np.trunc(clipped * 2.0**frac_bits) / 2.0**frac_bits


def cap_samples(n_samples: int, max_samples: int, *, seed=None) -> np.ndarray:
    r"""The rows a client keeps under client-level DP: all of them when it has at most m, else m drawn uniformly
    without replacement (module docstring: the cap bounds a client's contribution by :math:`m C^2` and mC).

    Args:
      n_samples: the client's number of samples n ≥ 0.
      max_samples: the cap m ≥ 1 of the calibration (``max_samples``).
      seed: the client's randomness (anything :func:`numpy.random.default_rng` accepts).

    Returns:
      (min(n, m),) sorted row indices.

    Raises:
      analytic.InputError: n < 0 or m < 1.

    Example:
      >>> cap_samples(5, 10), cap_samples(6, 3, seed=0).size
      (array([0, 1, 2, 3, 4]), 3)
    """
    n_samples = check_int("n_samples", n_samples, minimum=0)
    max_samples = check_int("max_samples", max_samples)
    if n_samples <= max_samples:
        return np.arange(n_samples)
    return np.sort(np.random.default_rng(seed).choice(n_samples, max_samples, replace=False))


def sample_discrete_gaussian(sigma: float, size: int, seed=None) -> np.ndarray:
    r"""Draws of the discrete Gaussian :math:`\mathcal N_{\mathbb Z}(0, \sigma^2)`,
    :math:`P(k) \propto e^{-k^2/(2\sigma^2)}` on the integers.

    Canonne, Kamath & Steinke (2020), Algorithm 3, vectorized: with :math:`t = \lfloor\sigma\rfloor + 1`, draw a
    discrete Laplace :math:`Y` (the difference of two geometric variables, :math:`P(y) \propto e^{-|y|/t}`) and keep
    it with probability :math:`\exp(-(|Y| - \sigma^2/t)^2 / (2\sigma^2))`. The acceptance test is computed in
    float64 (the paper's exact rational arithmetic is not reproduced). Its variance is at most σ², within
    :math:`10^{-8}` relative of it for σ ≥ 1.

    Args:
      sigma: the scale σ > 0 (Kairouz et al.'s accounting needs σ ≥ 1/2).
      size: number of draws.
      seed: anything :func:`numpy.random.default_rng` accepts.

    Returns:
      (size,) int64 draws.

    Raises:
      analytic.InputError: σ ≤ 0 or a negative ``size``.

    Example:
      >>> draws = sample_discrete_gaussian(3.0, 100_000, seed=0)
      >>> draws.dtype, bool(abs(draws.std() - 3.0) < 0.05), bool(abs(draws.mean()) < 0.05)
      (dtype('int64'), True, True)
    """
    sigma = check_number("sigma", sigma, low=0, low_open=True)
    size = check_int("size", size, minimum=0)
    rng = np.random.default_rng(seed)
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)  # geometric success probability: P(y) ∝ exp(−|y|/t)
    out = np.empty(size, np.int64)
    filled = 0
    while filled < size:
        tries = int(1.4 * (size - filled)) + 64  # the acceptance rate is above 0.7 for every σ
        laplace = rng.geometric(p, tries) - rng.geometric(p, tries)
        keep = rng.random(tries) < np.exp(-((np.abs(laplace) - sigma**2 / t) ** 2) / (2 * sigma**2))
        accepted = laplace[keep][: size - filled]
        out[filled:filled + accepted.size] = accepted
        filled += accepted.size
    return out


def gaussian_epsilon(noise_multiplier: float, delta: float, *, sampling_rate: float = 1.0, rounds: int = 1,
                     accountant: str = "rdp") -> float:
    r"""ε of the Gaussian mechanism with noise multiplier z (noise std / L2 sensitivity) at δ, by ``dp-accounting``:
    optionally Poisson-subsampled with rate q and composed over T rounds (DP-FedAvg's accounting).

    .. math::
        \varepsilon(z, \delta) = \text{accountant}\big((\text{PoissonSampled}_q \circ \text{Gaussian}_z)^{T}\big)
        \text{ at } \delta

    Args:
      noise_multiplier: z ≥ 0 (0 gives ε = ∞).
      delta: δ in (0, 1).
      sampling_rate: q in (0, 1], the probability that a record takes part in a round.
      rounds: T ≥ 1, the number of compositions.
      accountant: ``"rdp"`` (default) or ``"pld"``.

    Returns:
      ε (``math.inf`` when z = 0).

    Raises:
      analytic.InputError: a bad argument.

    Example:
      >>> round(gaussian_epsilon(1.0, 1e-5), 2)  # one Gaussian mechanism, z = 1
      4.73
      >>> gaussian_epsilon(2.0, 1e-5) < gaussian_epsilon(1.0, 1e-5)  # more noise, less ε
      True
    """
    noise_multiplier = check_number("noise_multiplier", noise_multiplier, low=0)
    delta = _check_delta(delta)
    if noise_multiplier == 0:
        return math.inf
    accountant = _accountant(accountant)
    return float(accountant.compose(_gaussian_event(noise_multiplier, sampling_rate, rounds)).get_epsilon(delta))


def _accountant(name: str):
    dp_accounting = _dp_accounting()
    check_choice("accountant", name, ACCOUNTANTS)
    return dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_INTERVAL) if name == "pld" else dp_accounting.rdp.RdpAccountant()


def _gaussian_event(noise_multiplier: float, sampling_rate: float, rounds: int):
    dp_accounting = _dp_accounting()
    sampling_rate = check_number("sampling_rate", sampling_rate, low=0, high=1, low_open=True)
    rounds = check_int("rounds", rounds)
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    return dp_accounting.SelfComposedDpEvent(event, rounds) if rounds > 1 else event


def calibrate_noise_multiplier(epsilon: float, delta: float, *, sampling_rate: float = 1.0, rounds: int = 1,
                               accountant: str = "rdp") -> float:
    r"""The smallest noise multiplier z with :func:`gaussian_epsilon` ≤ ε at δ
    (``dp_accounting.calibrate_dp_mechanism``, within 1e-5 and on the safe side).

    .. math::
        z^\star = \min\{z : \varepsilon(z, \delta) \le \varepsilon\}

    Args:
      epsilon: the target ε > 0, or ``math.inf`` (then z = 0: no noise).
      delta: δ in (0, 1).
      sampling_rate: q in (0, 1] (Poisson subsampling per round).
      rounds: T ≥ 1 compositions.
      accountant: ``"rdp"`` (default) or ``"pld"``.

    Returns:
      z ≥ 0.

    Raises:
      analytic.InputError: ε ≤ 0, δ outside (0, 1), or another bad argument.

    Example:
      >>> z = calibrate_noise_multiplier(1.0, 1e-5)
      >>> round(z, 3), round(gaussian_epsilon(z, 1e-5), 4)
      (4.045, 1.0)
      >>> round(calibrate_noise_multiplier(1.0, 1e-5, accountant="pld"), 3)  # tighter
      3.731
      >>> calibrate_noise_multiplier(float("inf"), 1e-5)
      0.0
    """
    epsilon = _check_epsilon(epsilon)
    delta = _check_delta(delta)
    check_choice("accountant", accountant, ACCOUNTANTS)
    _gaussian_event(1.0, sampling_rate, rounds)  # validates q and T before any search
    if epsilon == math.inf:
        return 0.0
    dp_accounting = _dp_accounting()
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant), lambda z: _gaussian_event(z, sampling_rate, rounds), epsilon, delta,
        dp_accounting.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 1.0), tol=1e-5,
    ))


@dataclasses.dataclass(frozen=True)
class NoiseCalibration:
    r"""The noise a private release carries, and the guarantee it was calibrated for (module docstring).

    Attributes:
      epsilon: the target ε (``math.inf``: no noise).
      delta: the target δ.
      clip_norm: the clipping norm C of every feature vector.
      noise_multiplier: z, the noise std per unit of the joint sensitivity.
      gram_share: s, the share of the sensitivity budget given to G.
      accountant: ``"pld"`` or ``"rdp"``.
      min_clients: :math:`K_{\min}` for distributed DP (the shares sum to the full noise once this many clients
        survive), ``None`` for central DP.
      frac_bits: the fixed-point grid f of distributed shares (``None`` for central DP).
      max_samples: m, the most samples one protected unit contributes: 1 for sample-level DP, a client's cap for
        client-level DP (module docstring).

    Example:
      >>> calibration = calibrate_noise(1.0, 1e-5, 2.0, accountant="rdp")
      >>> round(calibration.gram_std, 2), round(calibration.cross_std, 2)  # z C²/√s, z C/√(1 − s)
      (22.88, 11.44)
      >>> round(calibrate_noise(1.0, 1e-5, 2.0, accountant="rdp", max_samples=10).gram_std, 1)  # z m C²/√s
      228.8
    """

    epsilon: float
    delta: float
    clip_norm: float
    noise_multiplier: float
    gram_share: float
    accountant: str
    min_clients: int | None = None
    frac_bits: int | None = None
    max_samples: int = 1

    @property
    def gram_std(self) -> float:
        """Std :math:`z m C^2/\\sqrt s` of the central noise on each upper-triangle entry of G."""
        return self.noise_multiplier * self.max_samples * self.clip_norm**2 / math.sqrt(self.gram_share)

    @property
    def cross_std(self) -> float:
        """Std :math:`z m C/\\sqrt{1 - s}` of the central noise on each entry of B."""
        return self.noise_multiplier * self.max_samples * self.clip_norm / math.sqrt(1.0 - self.gram_share)


def _check_clip_and_share(clip_norm, gram_share) -> tuple[float, float]:
    return (check_number("clip_norm", clip_norm, low=0, low_open=True),
            check_number("gram_share", gram_share, low=0, high=1, low_open=True, high_open=True))


def calibrate_noise(epsilon: float, delta: float, clip_norm: float, *, gram_share: float = 0.5,
                    accountant: str = "pld", max_samples: int = 1) -> NoiseCalibration:
    r"""Central DP: the Gaussian noise on :math:`(\operatorname{triu} G, B)` for a target (ε, δ) (module docstring).

    .. math::
        \sigma_G = \frac{z m C^2}{\sqrt s}, \qquad \sigma_B = \frac{z m C}{\sqrt{1-s}}, \qquad
        z = \min\{z : \varepsilon_{\text{Gauss}}(z, \delta) \le \varepsilon\}

    Args:
      epsilon: target ε > 0, or ``math.inf`` for no noise.
      delta: target δ in (0, 1), e.g. 1/n.
      clip_norm: C > 0, the bound on every feature vector's norm (:func:`clip_features`).
      gram_share: s in (0, 1), the share of the sensitivity budget spent on G (0.5 by default;
        :math:`C^2/(C^2+1)` gives both blocks the same noise std).
      accountant: ``"pld"`` (default, the tighter) or ``"rdp"``.
      max_samples: m ≥ 1, the most samples one protected unit contributes: 1 (default) for sample-level DP, each
        client's cap (:func:`cap_samples`) for client-level DP.

    Returns:
      The :class:`NoiseCalibration` (``min_clients`` ``None``).

    Raises:
      analytic.InputError: ε ≤ 0, δ outside (0, 1), C ≤ 0, s outside (0, 1), m < 1, an unknown accountant.

    Example:
      >>> calibration = calibrate_noise(1.0, 1e-5, 1.0, accountant="rdp")
      >>> round(calibration.noise_multiplier, 2), calibration.gram_share
      (4.05, 0.5)
      >>> calibrate_noise(float("inf"), 1e-5, 1.0).gram_std
      0.0
    """
    clip_norm, gram_share = _check_clip_and_share(clip_norm, gram_share)
    max_samples = check_int("max_samples", max_samples)
    z = calibrate_noise_multiplier(epsilon, delta, accountant=accountant)
    return NoiseCalibration(float(epsilon), float(delta), clip_norm, z, gram_share, accountant,
                            max_samples=max_samples)


def _block_scales(calibration: NoiseCalibration) -> tuple[float, float]:
    """The per-client integer scales :math:`\\sigma_b` of the G and B shares, in grid units."""
    f = calibration.frac_bits
    root = math.sqrt(calibration.min_clients)
    return calibration.gram_std * 2.0 ** (2 * f) / root, calibration.cross_std * 2.0**f / root


def _distributed_event(calibration: NoiseCalibration, survivors: int, dim: int, n_classes: int):
    r"""``ZCDpEvent`` of the sum of ``survivors`` discrete-Gaussian shares (Kairouz et al., Proposition 14)."""
    dp_accounting = _dp_accounting()
    tail = 0.0
    for sigma, size in zip(_block_scales(calibration), (packed_length(dim), dim * n_classes)):
        tau = 10.0 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, survivors))
        tail += tau * size
    rho = calibration.min_clients / (2.0 * survivors * calibration.noise_multiplier**2)
    return dp_accounting.ZCDpEvent(rho=rho, xi=tail)


def calibrate_distributed_noise(epsilon: float, delta: float, clip_norm: float, min_clients: int, dim: int,
                                n_classes: int, *, gram_share: float = 0.5, frac_bits: int = 12,
                                max_samples: int = 1) -> NoiseCalibration:
    r"""Distributed DP: each client's discrete-Gaussian share, such that any :math:`K_{\min}` shares together meet
    (ε, δ) (module docstring; Kairouz, Liu & Steinke 2021, Proposition 14, RDP accountant).

    .. math::
        \sigma_{G,\text{client}} = \frac{z m C^2 2^{2f}}{\sqrt{s K_{\min}}}, \quad
        \sigma_{B,\text{client}} = \frac{z m C 2^{f}}{\sqrt{(1 - s) K_{\min}}} \text{ (grid units)}, \quad
        \rho = \frac{1}{2 z^2}, \ \xi = \sum_b \tau_b d_b

    Args:
      epsilon: target ε > 0, or ``math.inf`` for no noise.
      delta: target δ in (0, 1).
      clip_norm: C > 0 (:func:`clip_features` with ``frac_bits``).
      min_clients: :math:`K_{\min}` ≥ 1, the fewest surviving clients for which the target must hold.
      dim: feature dimension d.
      n_classes: number of agreed classes m.
      gram_share: s in (0, 1) as in :func:`calibrate_noise`.
      frac_bits: the fixed-point grid f of the clients' statistics.
      max_samples: m ≥ 1 as in :func:`calibrate_noise` (client-level DP: each client's cap).

    Returns:
      The :class:`NoiseCalibration` (accountant ``"rdp"``).

    Raises:
      analytic.InputError: a bad argument, or a share scale below 1/2 (the proposition's condition).

    Example:
      >>> calibration = calibrate_distributed_noise(1.0, 1e-5, 1.0, 10, 3, 2)
      >>> round(calibration.noise_multiplier, 2)  # as central DP under RDP: the τ terms vanish at these scales
      4.05
      >>> round(distributed_epsilon(calibration, 10, 3, 2), 4), round(distributed_epsilon(calibration, 5, 3, 2), 2)
      (1.0, 1.46)
    """
    clip_norm, gram_share = _check_clip_and_share(clip_norm, gram_share)
    min_clients = check_int("min_clients", min_clients)
    dim, n_classes, frac_bits = check_int("dim", dim), check_int("n_classes", n_classes), check_int(
        "frac_bits", frac_bits, minimum=0)
    max_samples = check_int("max_samples", max_samples)
    epsilon, delta = _check_epsilon(epsilon), _check_delta(delta)

    def calibration_for(z: float) -> NoiseCalibration:
        return NoiseCalibration(float(epsilon), float(delta), clip_norm, float(z), gram_share, "rdp", min_clients,
                                frac_bits, max_samples)

    if epsilon == math.inf:
        return calibration_for(0.0)
    dp_accounting = _dp_accounting()
    z = dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant("rdp"), lambda z: _distributed_event(calibration_for(z), min_clients, dim, n_classes),
        epsilon, delta, dp_accounting.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 1.0), tol=1e-5,
    )
    calibration = calibration_for(z)
    if min(_block_scales(calibration)) < 0.5:
        raise analytic.InputError("the clients' noise shares fall below 1/2 grid unit: raise frac_bits or C")
    return calibration


def distributed_epsilon(calibration: NoiseCalibration, survivors: int, dim: int, n_classes: int) -> float:
    r"""The ε (at the calibration's δ) that holds when ``survivors`` clients' shares reach the sum: the target for
    :math:`K_s \ge K_{\min}`, weaker below it (ρ grows by :math:`K_{\min}/K_s`; module docstring).

    .. math::
        \rho = \frac{K_{\min}}{2 K_s z^2}, \qquad \xi = \sum_b \tau_b(K_s)\, d_b

    Args:
      calibration: a :func:`calibrate_distributed_noise` result.
      survivors: :math:`K_s` ≥ 1, the shares in the sum (clients that were not dropped, minus any colluding ones).
      dim: feature dimension d.
      n_classes: number of agreed classes m.

    Returns:
      ε (``math.inf`` for a calibration without noise).

    Raises:
      analytic.InputError: a central calibration or a bad count.

    Example:
      >>> calibration = calibrate_distributed_noise(2.0, 1e-5, 1.0, 50, 4, 3)
      >>> [round(distributed_epsilon(calibration, k, 4, 3), 2) for k in (100, 50, 25)]
      [1.37, 2.0, 2.94]
    """
    if calibration.min_clients is None:
        raise analytic.InputError("distributed_epsilon needs a distributed calibration (calibrate_distributed_noise)")
    survivors = check_int("survivors", survivors)
    if calibration.noise_multiplier == 0:
        return math.inf
    event = _distributed_event(calibration, survivors, check_int("dim", dim), check_int("n_classes", n_classes))
    return float(_accountant("rdp").compose(event).get_epsilon(calibration.delta))


@dataclasses.dataclass(frozen=True)
class PrivateStatistics:
    r"""A differentially private release :math:`(\tilde G, \tilde B)` of summed statistics (module docstring).

    Not an :class:`analytic.Statistics`: it carries no counts or feature sum (they are not released) and
    :math:`\tilde G` need not be positive semidefinite. Solve it with :func:`solve_private`.

    Attributes:
      gram: (d, d) symmetric noisy Gram :math:`\tilde G = G + E`.
      cross: (d, m) noisy cross-moment :math:`\tilde B = B + F`.
      class_ids: (m,) the agreed class ids (public).
      gram_std: the std of each entry of E (:math:`\sigma_G`, or the summed shares' std).
      cross_std: the std of each entry of F.
      calibration: the :class:`NoiseCalibration` it was drawn with.

    Example:
      >>> stats = federated.client_statistics(np.eye(3), np.array([0, 1, 1]), 3)
      >>> release = privatize_statistics(stats, calibrate_noise(1.0, 0.01, 1.0, accountant="rdp"), seed=0)
      >>> release.gram.shape, release.cross.shape, bool(np.array_equal(release.gram, release.gram.T))
      ((3, 3), (3, 2), True)
    """

    gram: np.ndarray
    cross: np.ndarray
    class_ids: np.ndarray
    gram_std: float
    cross_std: float
    calibration: NoiseCalibration


def _symmetric_noise(dim: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise drawn on the upper triangle (diagonal included) and mirrored."""
    return unpack_upper(rng.normal(0.0, std, packed_length(dim)), dim)


def privatize_statistics(stats: analytic.Statistics, calibration: NoiseCalibration, *, seed=None) -> PrivateStatistics:
    r"""Central DP: the Gaussian mechanism on an aggregate's :math:`(\operatorname{triu} G, B)`, noise mirrored.

    .. math::
        \tilde G = G + E,\ E = E^\top,\ E_{ij} \sim \mathcal N(0, \sigma_G^2)\ (i \le j); \qquad
        \tilde B = B + F,\ F_{ic} \sim \mathcal N(0, \sigma_B^2)

    Args:
      stats: classification :class:`analytic.Statistics` of features clipped to ``calibration.clip_norm``
        (:func:`clip_features`), e.g. a server aggregate's ``statistics``; left unchanged.
      calibration: a central :func:`calibrate_noise` result.
      seed: anything :func:`numpy.random.default_rng` accepts.

    Returns:
      The :class:`PrivateStatistics` (float64 host arrays).

    Raises:
      analytic.InputError: regression statistics, or a distributed calibration.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x = clip_features(rng.normal(size=(50, 4)), 1.0)
      >>> stats = federated.client_statistics(x, rng.integers(0, 2, 50), 4)
      >>> exact = privatize_statistics(stats, calibrate_noise(float("inf"), 0.02, 1.0))  # ε = ∞: no noise
      >>> np.array_equal(exact.gram, x.T @ x), exact.gram_std
      (True, 0.0)
    """
    if not stats.is_classification:
        raise analytic.InputError("private releases cover classification statistics (one-hot labels)")
    if calibration.min_clients is not None:
        raise analytic.InputError("a distributed calibration is spent by the clients' shares (noisy_share)")
    rng = np.random.default_rng(seed)
    gram, cross = analytic.gram_matrix(stats), analytic.cross_matrix(stats)
    if calibration.noise_multiplier > 0:
        gram = gram + _symmetric_noise(stats.dim, calibration.gram_std, rng)
        cross = cross + rng.normal(0.0, calibration.cross_std, cross.shape)
    return PrivateStatistics(gram, cross, stats.class_ids, calibration.gram_std, calibration.cross_std, calibration)


def noisy_share(stats: analytic.Statistics, calibration: NoiseCalibration, class_ids, *, seed=None) -> dict:
    r"""Distributed DP, client side: the fixed-point upload with this client's discrete-Gaussian share added to
    the packed Gram and the cross-moment; the counts and feature sum are zeroed (they are not released).

    .. math::
        \operatorname{triu}(G_k) 2^{2f} + \mathcal N_{\mathbb Z}(0, \sigma_{G,\text{client}}^2), \qquad
        B_k 2^{f} + \mathcal N_{\mathbb Z}(0, \sigma_{B,\text{client}}^2)

    Args:
      stats: the client's fixed-point classification statistics (:func:`federated.client_statistics` with
        ``precision="fixed"`` and the calibration's ``frac_bits``) of features from :func:`clip_features` with the
        same ``frac_bits``; possibly empty.
      calibration: a :func:`calibrate_distributed_noise` result.
      class_ids: the agreed class ids (every share has the same shapes).
      seed: this client's own randomness (anything :func:`numpy.random.default_rng` accepts).

    Returns:
      A payload in the :func:`federated.encode_statistics` layout (int64), ready for
      :mod:`federated.secure`.

    Raises:
      analytic.InputError: a central calibration, statistics that are not fixed point on the calibration's grid, or
        of more samples than the calibration's ``max_samples``.

    Example:
      >>> calibration = calibrate_distributed_noise(4.0, 1e-3, 1.0, 2, 2, 2, frac_bits=8)
      >>> x = clip_features(np.array([[0.6, 0.8], [1.0, 0.0]]), 1.0, frac_bits=8)
      >>> stats = federated.client_statistics(x, np.array([0, 1]), 2, precision="fixed", frac_bits=8)
      >>> share = noisy_share(stats, calibration, [0, 1], seed=0)
      >>> share["gram"].dtype, share["gram"].shape, int(share["count"])
      (dtype('int64'), (3,), 0)
    """
    if calibration.min_clients is None:
        raise analytic.InputError("noisy_share needs a distributed calibration (calibrate_distributed_noise)")
    if stats.precision != "fixed" or stats.frac_bits != calibration.frac_bits:
        raise analytic.InputError(
            f"shares are added on the fixed-point grid 2^-{calibration.frac_bits}: got {stats.precision} statistics"
            f" with frac_bits {stats.frac_bits}"
        )
    if calibration.max_samples > 1 and int(stats.count) > calibration.max_samples:
        raise analytic.InputError(
            f"client-level DP calibrated for at most {calibration.max_samples} samples per client, got "
            f"{int(stats.count)}: cap the client's samples first (cap_samples)")
    payload = encode_statistics(stats, class_ids)
    rng = np.random.default_rng(seed)
    gram_scale, cross_scale = _block_scales(calibration)
    if calibration.noise_multiplier > 0:
        payload["gram"] = payload["gram"] + sample_discrete_gaussian(gram_scale, payload["gram"].size, rng)
        noise = sample_discrete_gaussian(cross_scale, payload["cross"].size, rng)
        payload["cross"] = payload["cross"] + noise.reshape(payload["cross"].shape)
    for name in ("feature_sum", "count", "class_counts"):
        payload[name] = np.zeros_like(payload[name])
    return payload


def release_from_sum(total: dict, dim: int, calibration: NoiseCalibration, survivors: int) -> PrivateStatistics:
    r"""Distributed DP, server side: the release :math:`(\tilde G, \tilde B)` from the (securely) summed shares of
    ``survivors`` clients, rescaled from the grid.

    .. math::
        \tilde G = 2^{-2f} \sum_k \big(\operatorname{triu}(G_k) 2^{2f} + N_k\big) \text{ (mirrored)}, \qquad
        \tilde B = 2^{-f} \sum_k \big(B_k 2^f + M_k\big)

    Args:
      total: the summed payload (:func:`federated.secure.unmask`'s result, or a sum of :func:`noisy_share`
        payloads).
      dim: feature dimension d.
      calibration: the clients' :func:`calibrate_distributed_noise` result.
      survivors: how many clients' shares the sum holds (its noise std is :math:`\sqrt{K_s}` times a share's).

    Returns:
      The :class:`PrivateStatistics`.

    Raises:
      analytic.InputError: a central calibration, or a bad count.

    Example:
      >>> calibration = calibrate_distributed_noise(float("inf"), 1e-3, 1.0, 1, 2, 2, frac_bits=8)
      >>> x = clip_features(np.array([[0.6, 0.8], [1.0, 0.0]]), 1.0, frac_bits=8)
      >>> stats = federated.client_statistics(x, np.array([0, 1]), 2, precision="fixed", frac_bits=8)
      >>> release = release_from_sum(noisy_share(stats, calibration, [0, 1]), 2, calibration, 1)
      >>> np.array_equal(release.gram, x.T @ x)  # ε = ∞: the exact sum
      True
    """
    if calibration.min_clients is None:
        raise analytic.InputError("release_from_sum needs a distributed calibration (calibrate_distributed_noise)")
    survivors = check_int("survivors", survivors)
    f = calibration.frac_bits
    gram = unpack_upper(np.asarray(total["gram"]), dim) * 2.0 ** (-2 * f)
    cross = np.asarray(total["cross"]) * 2.0**-f
    gram_scale, cross_scale = _block_scales(calibration)
    root = math.sqrt(survivors)
    return PrivateStatistics(gram, cross, np.asarray(total["class_ids"]), gram_scale * root * 2.0 ** (-2 * f),
                             cross_scale * root * 2.0**-f, calibration)


def noise_spectral_bound(release: PrivateStatistics, *, failure_probability: float = 0.01) -> float:
    r"""A bound on the noise's spectral norm :math:`\|E\|_2` that holds with probability ≥ 1 − β: a ridge γ above
    it keeps :math:`\tilde G + \gamma I` positive definite with that probability (module docstring).

    .. math::
        \|E\|_2 \le \sigma_G \big(2\sqrt d + 2\sqrt{\ln(2/\beta)}\big)

    For a symmetric E with independent :math:`\mathcal N(0, \sigma^2)` entries on and above the diagonal,
    :math:`\mathbb E\,\lambda_{\max}(E) \le 2\sigma\sqrt d` (Sudakov–Fernique comparison of
    :math:`u^\top E u` with :math:`2\sigma\langle g, u\rangle`, as for the GOE), and :math:`\lambda_{\max}` is
    :math:`\sqrt2\sigma`-Lipschitz in the independent entries, so Gaussian concentration gives
    :math:`P(\|E\|_2 \ge 2\sigma\sqrt d + t) \le 2 e^{-t^2/(4\sigma^2)}`. Exact for central releases; for the
    sum of discrete-Gaussian shares (sub-Gaussian, not Gaussian) it is a close approximation at large scales —
    :func:`solve_private`'s projection, not this bound, is what guarantees definiteness.

    Args:
      release: the :class:`PrivateStatistics`.
      failure_probability: β in (0, 1).

    Returns:
      The bound (0 for a release without noise).

    Raises:
      analytic.InputError: β outside (0, 1).

    Example:
      >>> stats = federated.client_statistics(np.zeros((1, 400)), np.array([0]), 400)
      >>> release = privatize_statistics(stats, calibrate_noise(1.0, 1e-5, 1.0, accountant="rdp"), seed=0)
      >>> bound = noise_spectral_bound(release)
      >>> bool(np.linalg.norm(release.gram, 2) <= bound), round(bound / release.gram_std, 1)  # (2√400 + 2√ln 200)
      (True, 44.6)
    """
    beta = check_number("failure_probability", failure_probability, low=0, high=1, low_open=True, high_open=True)
    dim = release.gram.shape[0]
    return release.gram_std * (2 * math.sqrt(dim) + 2 * math.sqrt(math.log(2 / beta)))


def solve_private(release: PrivateStatistics, ridge: float) -> analytic.Head:
    r"""The private ridge head from a release: :math:`\tilde G` projected onto the positive semidefinite cone, then
    :math:`W = (\hat G + \gamma I)^{-1} \tilde B` (module docstring).

    .. math::
        \tilde G = V \Lambda V^\top, \quad \hat G = V \max(\Lambda, 0) V^\top, \quad
        W = (\hat G + \gamma I)^{-1} \tilde B, \qquad \lambda_{\min}(\hat G + \gamma I) \ge \gamma

    Post-processing of the release (no privacy cost). The projection is the Frobenius-nearest positive
    semidefinite matrix, so :math:`\|\hat G - G\|_F \le \|\tilde G - G\|_F`; without noise it leaves G as it is (to
    rounding), and the head is the exact ridge head.

    Args:
      release: the :class:`PrivateStatistics`.
      ridge: γ > 0 (e.g. at least :func:`noise_spectral_bound`).

    Returns:
      The :class:`analytic.Head` (no bias), over the release's class ids.

    Raises:
      analytic.InputError: γ ≤ 0.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = clip_features(rng.normal(size=(200, 3)), 1.0), rng.integers(0, 2, 200)
      >>> stats = federated.client_statistics(x, y, 3)
      >>> head = solve_private(privatize_statistics(stats, calibrate_noise(float("inf"), 1e-3, 1.0)), 0.5)
      >>> np.allclose(head.weights, np.linalg.solve(x.T @ x + 0.5 * np.eye(3), x.T @ np.eye(2)[y]), rtol=1e-12)
      True
    """
    ridge = check_number("ridge", ridge, low=0, low_open=True)
    eigenvalues, vectors = scipy.linalg.eigh(release.gram, check_finite=False)
    projected = (vectors * np.maximum(eigenvalues, 0.0)) @ vectors.T
    projected = (projected + projected.T) / 2  # exactly symmetric for the Cholesky factorization
    weights = factorize_matrix(projected, ridge).solve(release.cross)
    return analytic.Head(weights, release.class_ids, ridge)
