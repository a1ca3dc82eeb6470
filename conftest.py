"""Configuration shared by the test suite and the docstring examples (run as doctests)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def strict_jax():
    """Every test and example runs with strict dtype promotion and no implicit rank promotion: accidental float64
    leaks or broadcasts fail loudly."""
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture(autouse=True)
def example_namespace(doctest_namespace):
    """The names every docstring example may use without importing them."""
    import analytic
    import continual
    import federated
    import unlearning

    doctest_namespace.update(np=np, jnp=jnp, jax=jax, analytic=analytic, federated=federated, continual=continual,
                             unlearning=unlearning)
