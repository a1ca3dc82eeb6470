"""The closed-form head as a flax module: learned and solved inside jitted applies, equal to the core functions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from conftest import make_classification

import analytic
from analytic.module import ClosedFormHead

CLASSES = (0, 3, 7, 11)


class Classifier(nn.Module):
    def setup(self):
        self.backbone = nn.Dense(32)
        self.head = ClosedFormHead(class_ids=CLASSES, ridge=0.1)

    def features(self, x):
        return jnp.tanh(self.backbone(x))

    def __call__(self, x):
        return self.head(self.features(x))

    def learn(self, x, y):
        self.head.learn(self.features(x), y)

    def solve(self):
        self.head.solve()

    def predict_labels(self, x):
        return self.head.predict_labels(self.features(x))


def test_head_learns_solves_and_predicts_inside_jitted_applies():
    features, labels = make_classification(n=600, d=24, classes=CLASSES)
    x, y = features.astype(np.float32), labels.astype(np.int32)
    model = Classifier()
    variables = model.init(jax.random.key(0), x[:2])
    learn = jax.jit(lambda v, x, y: model.apply(v, x, y, method="learn", mutable=["statistics"])[1])
    for start in range(0, 600, 200):
        variables = {**variables, **learn(variables, x[start : start + 200], y[start : start + 200])}
    solve = jax.jit(lambda v: model.apply(v, method="solve", mutable=["head"])[1])
    variables = {**variables, **solve(variables)}
    embedded = np.asarray(jax.jit(lambda v, x: model.apply(v, x, method="features"))(variables, x))
    host = analytic.accumulate(analytic.init_statistics(32, precision="fixed"), embedded, y)
    assert analytic.state_hash(variables["statistics"]["head"]["state"]) == analytic.state_hash(host)
    expected = analytic.solve(host, 0.1)
    scores = jax.jit(model.apply)(variables, x)
    np.testing.assert_allclose(scores, embedded @ expected.weights, rtol=1e-3, atol=1e-3)
    predicted = jax.jit(lambda v, x: model.apply(v, x, method="predict_labels"))(variables, x)
    assert np.mean(np.asarray(predicted) == analytic.predict_labels(expected, embedded)) >= 0.99
