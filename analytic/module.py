r"""A closed-form head as a flax module: put an exact ridge head at the end of any flax model.

The head keeps its :class:`analytic.Statistics` in the variable collection ``"statistics"`` and its weights in
``"head"`` (not ``"params"``: no gradient ever touches them). Learning a batch adds to the statistics
(:func:`analytic.accumulate`), :meth:`ClosedFormHead.solve` sets :math:`W = (G + \gamma I)^{-1} B`
(:func:`analytic.solve`), and the forward pass is :math:`XW` — all three inside the model's jitted ``apply``.
The precision defaults to ``"fixed"``: exact and order-free on any device without x64 (the solve then runs in
float32 unless x64 is on).

Example:
  >>> class Classifier(nn.Module):
  ...     def setup(self):
  ...         self.backbone = nn.Dense(8)  # any flax module, frozen
  ...         self.head = ClosedFormHead(class_ids=(0, 1, 2))
  ...     def __call__(self, images):
  ...         return self.head(self.backbone(images))
  ...     def learn(self, images, labels):
  ...         self.head.learn(self.backbone(images), labels)
  ...     def solve(self):
  ...         self.head.solve()
  >>> images = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
  >>> labels = np.arange(12) % 3
  >>> model = Classifier()
  >>> variables = model.init(jax.random.key(0), images)
  >>> learn = jax.jit(lambda v, x, y: model.apply(v, x, y, method="learn", mutable=["statistics"])[1])
  >>> for x, y in zip(np.split(images, 3), np.split(labels, 3)):  # a stream of three batches
  ...     variables = {**variables, **learn(variables, x, y)}
  >>> solve_head = jax.jit(lambda v: model.apply(v, method="solve", mutable=["head"])[1])
  >>> variables = {**variables, **solve_head(variables)}
  >>> scores = jax.jit(model.apply)(variables, images)
  >>> scores.shape, variables["statistics"]["head"]["state"].class_counts
  ((12, 3), array([4, 4, 4]))
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from analytic.ridge import solve
from analytic.statistics import accumulate, init_statistics


class ClosedFormHead(nn.Module):
    """An exact ridge head over declared classes (module docstring).

    Attributes:
      class_ids: the classes, declared up front (static shapes under jit).
      ridge: γ.
      precision: precision of the statistics (:func:`analytic.init_statistics`).
    """

    class_ids: Sequence[int]
    ridge: float = 0.1
    precision: str = "fixed"

    @nn.compact
    def __call__(self, features) -> jax.Array:
        """Class scores :math:`XW` (n, C), in the column order of ``class_ids`` (``init`` creates the variables)."""
        dim = features.shape[-1]
        self.variable("statistics", "state",
                      lambda: init_statistics(dim, class_ids=list(self.class_ids), precision=self.precision))
        weights = self.variable("head", "weights", lambda: jnp.zeros((dim, len(self.class_ids)), jnp.result_type(float)))
        return jnp.matmul(features.astype(weights.value.dtype), weights.value, precision=jax.lax.Precision.HIGHEST)

    def learn(self, features, labels, mask=None) -> None:
        """Add a batch to the statistics (apply with ``mutable=["statistics"]``); ``mask`` as in accumulate."""
        statistics = self.get_variable("statistics", "state")
        self.put_variable("statistics", "state", accumulate(statistics, features, labels, mask=mask))

    def solve(self) -> None:
        """Set the weights from the statistics (apply with ``mutable=["head"]``); NaN weights inside jit flag an
        invalid state (:func:`analytic.solve`)."""
        weights = self.get_variable("head", "weights")
        solved = solve(self.get_variable("statistics", "state"), self.ridge).weights
        self.put_variable("head", "weights", solved.astype(weights.dtype))

    def predict_labels(self, features) -> jax.Array:
        """Class id of the highest score among the classes learned so far."""
        learned = jnp.any(self.get_variable("statistics", "state").class_count_words != 0, axis=-1)
        scores = jnp.where(learned[None, :], self(features), -jnp.inf)
        return jnp.asarray(self.class_ids)[jnp.argmax(scores, axis=1)]
