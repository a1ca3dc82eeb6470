r"""An online stream as one ``jax.lax.scan``: predict each small batch with the head so far, then learn it.

The recursive (RLS) form keeps :math:`R = (G + \gamma I)^{-1}` and :math:`W`, and each step is ACIL's update
(eqs. 9–10, README: the math in brief)

.. math::
    \hat y_t = \arg\max_{c\ \text{seen}} (x_t W_{t-1})_c, \qquad
    K = (I + X_t R X_t^\top)^{-1}, \quad R \leftarrow R - R X_t^\top K X_t R, \quad
    W \leftarrow W + R X_t^\top (Y_t - X_t W),

so the predictions are the prequential (test-then-train) ones of online continual learning, and the final head is
the joint ridge solution on the whole stream. The scan compiles once for the stream's shape and runs on the head's
device; the recursive form is float64 and needs ``jax_enable_x64`` on a device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import analytic


@jax.jit
def online_stream(head: analytic.RecursiveHead, features, labels) -> tuple[analytic.RecursiveHead, jax.Array]:
    r"""Run a stream of T batches through ``head`` (declared classes, :func:`analytic.init_recursive`).

    Each step predicts the batch with the current weights, then learns it with ACIL's recursive update
    (REFERENCE.md §2, ACIL eqs. 9–10):

    .. math::
        \hat y_t = \arg\max_{c\ \text{seen}} (X_t W)_c, \quad K = (I + X_t R X_t^\top)^{-1}, \quad
        R \leftarrow R - R X_t^\top K X_t R, \quad W \leftarrow W + R X_t^\top (Y_t - X_t W).

    Jitted (one compilation per stream shape). The head is float64: on a device it needs ``jax_enable_x64``, as in
    the example. A label outside the head's classes gives NaN weights (no error is raised inside the scan).

    Args:
      head: the starting recursive head, with its classes declared.
      features: (T, b, d) the stream's batches.
      labels: (T, b) their class ids, among the head's classes.

    Returns:
      The head after the whole stream, and (T, b) the class predicted for each sample before its batch was learned
      (among the classes seen so far; the first batch, seen by an empty head, gets the first declared class).

    Example:
      A stream of 8 batches of 8 rows, 3 classes in 4 dimensions:

      >>> rng = np.random.default_rng(0)
      >>> labels = rng.integers(0, 3, 64)
      >>> features = rng.normal(size=(64, 4)) + 4.0 * np.eye(3, 4)[labels]
      >>> with jax.enable_x64(True):
      ...     head = jax.device_put(analytic.init_recursive(4, 0.1, class_ids=range(3)))
      ...     head, predicted = continual.online_stream(head, features.reshape(8, 8, 4), labels.reshape(8, 8))
      >>> predicted = np.asarray(predicted)
      >>> predicted.shape, int(head.count)
      ((8, 8), 64)
      >>> float(np.mean(predicted[1:] == labels.reshape(8, 8)[1:]))  # prequential accuracy after the first batch
      1.0
      >>> oracle = analytic.solve(analytic.accumulate(analytic.init_statistics(4), features, labels), 0.1)
      >>> np.allclose(head.weights, oracle.weights)  # the final head is the joint ridge solution
      True
    """
    class_ids = jnp.asarray(head.class_ids)

    def step(current: analytic.RecursiveHead, batch):
        x, y = batch
        scores = analytic.predict(analytic.recursive_solve(current), x)
        seen = current.class_counts > 0
        predicted = class_ids[jnp.argmax(jnp.where(seen[None, :], scores, -jnp.inf), axis=1)]
        return analytic.recursive_learn(current, x, y), predicted

    return jax.lax.scan(step, jax.tree.map(jnp.asarray, head), (features, labels))
