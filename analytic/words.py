r"""Exact 64-bit integers that live anywhere JAX does: three int32 words of 21 bits.

Fixed-precision moments and every count of a state are exact integers that outgrow int32, and JAX without
``jax_enable_x64`` has no int64. They are stored as int32 arrays with a trailing axis of three words,

.. math::
    v = w_0 + 2^{21} w_1 + 2^{42} w_2, \qquad 0 \le w_0, w_1 < 2^{21} \;(\text{canonical form}),

so a state keeps its values on the host, on a device without x64 and through ``jax.tree.map(jnp.asarray, ...)``.
The words stay additive: the word-wise sum of two canonical arrays is a valid (redundant) representation of the
exact sum as long as the low words stay below 2³¹ (up to 1,024 canonical terms), so ``jax.tree.map(jnp.add, a, b)``
of two states is their merge. Every library operation returns canonical words.

Values are kept within :math:`|v| < 2^{62}` (``INT_HEADROOM``): that range converts to and from NumPy int64 exactly
(:func:`to_int64`, :func:`from_int64`), which is how the host path adds them at BLAS speed and how state hashes are
made, so the hash is the same in every home.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

WORD_BITS = 21
N_WORDS = 3
WORD_MASK = (1 << WORD_BITS) - 1
INT_HEADROOM = 2**62  # exact integer totals are refused at or above this magnitude
_TOP_LIMIT = INT_HEADROOM >> (2 * WORD_BITS)  # |w_2| below this keeps |v| < 2^62


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    """Host words of value 0 for an integer array of ``shape``."""
    return np.zeros((*shape, N_WORDS), np.int32)


def from_int64(values) -> np.ndarray:
    """Canonical words of host integers (|v| < 2⁶²)."""
    v = np.asarray(values, np.int64)
    words = np.empty((*v.shape, N_WORDS), np.int32)
    words[..., 0] = v & WORD_MASK
    words[..., 1] = (v >> WORD_BITS) & WORD_MASK
    words[..., 2] = v >> (2 * WORD_BITS)
    return words


def to_int64(words) -> np.ndarray:
    """Host int64 values of words (canonical or not); raises ``OverflowError`` outside |v| < 2⁶²."""
    w = np.asarray(words)
    top = w[..., 2].astype(np.int64)
    if top.size and not -_TOP_LIMIT < int(top.min()) - 1 <= int(top.max()) + 1 < _TOP_LIMIT:  # + carries of w_1
        raise OverflowError("exact integer total outside ±2^62")
    top <<= 2 * WORD_BITS
    top += w[..., 1].astype(np.int64) << WORD_BITS
    top += w[..., 0]
    return top


def fits(values: np.ndarray) -> bool:
    """Whether host int64 values stay inside the exact range |v| < 2⁶²."""
    return not values.size or int(max(values.max(), -values.min())) < INT_HEADROOM


# ----------------------------------------------------------------------------------------------------------------
# Device arithmetic (jnp, int32 only: valid with and without x64, under jit).


def canonical(words: jnp.ndarray) -> jnp.ndarray:
    """Carry each low word into the next: low words into [0, 2²¹) (arithmetic shifts floor negative values)."""
    w0, w1, w2 = words[..., 0], words[..., 1], words[..., 2]
    w1 = w1 + (w0 >> WORD_BITS)
    w2 = w2 + (w1 >> WORD_BITS)
    return jnp.stack([w0 & WORD_MASK, w1 & WORD_MASK, w2], axis=-1)


def add(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Canonical words of a + b (a, b canonical)."""
    return canonical(a + b)


def negate(words: jnp.ndarray) -> jnp.ndarray:
    """Canonical words of −v."""
    return canonical(-words)


def in_range(words: jnp.ndarray) -> jnp.ndarray:
    """True where canonical words hold |v| < 2⁶² (a scalar bool over the whole array)."""
    top = words[..., 2]
    return jnp.all((top < _TOP_LIMIT) & (top >= -_TOP_LIMIT))


def is_negative(words: jnp.ndarray) -> jnp.ndarray:
    """v < 0 for canonical words (elementwise)."""
    return words[..., 2] < 0


def from_int32(values: jnp.ndarray) -> jnp.ndarray:
    """Canonical words of int32 values."""
    v = values.astype(jnp.int32)
    return jnp.stack([v & WORD_MASK, (v >> WORD_BITS) & WORD_MASK, v >> (2 * WORD_BITS)], axis=-1)


def to_float(words: jnp.ndarray, dtype) -> jnp.ndarray:
    """The values as floats: :math:`(2^{21} w_2 + w_1) 2^{21} + w_0`, one rounding in float64 (as int64 → float64)."""
    w = canonical(words).astype(dtype)
    scale = jnp.asarray(1 << WORD_BITS, dtype)
    return (w[..., 2] * scale + w[..., 1]) * scale + w[..., 0]


def to_jax_int64(words: jnp.ndarray) -> jnp.ndarray:
    """The values as JAX int64, :math:`(w_2 2^{21} + w_1) 2^{21} + w_0` (exact; needs ``jax_enable_x64``)."""
    w = canonical(jnp.asarray(words)).astype(jnp.int64)
    return (w[..., 2] << 2 * WORD_BITS) + (w[..., 1] << WORD_BITS) + w[..., 0]


def from_digits(digits: list[jnp.ndarray], digit_bits: int) -> jnp.ndarray:
    r"""Canonical words of :math:`\sum_s 2^{b s} P_s` for int32 arrays :math:`P_s` (``digit_bits`` = b divides 21).

    The carries run digit by digit (each digit kept in [0, 2^b)), then every 21/b digits form one word; the last
    carry goes into the top word. Exact as long as no :math:`|P_s| + 2^{31-b}` reaches 2³¹.
    """
    per_word = WORD_BITS // digit_bits
    mask = (1 << digit_bits) - 1
    carry = jnp.zeros_like(digits[0])
    kept = []
    for s in range(2 * per_word + 1):  # digits up to 2^42 go into the two low words
        value = carry + (digits[s] if s < len(digits) else 0)
        kept.append(value & mask)
        carry = value >> digit_bits
    top = carry
    for s in range(2 * per_word + 1, len(digits)):  # digits above 2^42 land in the top word whole
        top = top + (digits[s] << (digit_bits * (s - 2 * per_word)))
    words = []
    for w in range(2):
        word = kept[w * per_word]
        for k in range(1, per_word):
            word = word | (kept[w * per_word + k] << (digit_bits * k))
        words.append(word)
    top_word = kept[2 * per_word] + (top << digit_bits)
    return canonical(jnp.stack([*words, top_word], axis=-1))
