"""Float64 numpy references for the losses, written directly from the formulas in design §2.

They materialise the full `[B, B]` / `[B, B, K]` tensors, so they are only for small shapes.
"""

import numpy as np

EPS = 1e-6


def _softplus(z):
    return np.logaddexp(0.0, z)


def _cos(u, v):
    """`cos(u_i, v_j)` for all pairs of the last-axis vectors: `[..., B, D] x [..., B, D]`."""
    nu = np.maximum(np.linalg.norm(u, axis=-1), EPS)
    nv = np.maximum(np.linalg.norm(v, axis=-1), EPS)
    return (u @ np.swapaxes(v, -1, -2)) / (nu[..., :, None] * nv[..., None, :])


def sigmoid_loss(x, t, scale, bias, pair_ids=None):
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    z = scale * _cos(x, t) + bias
    ids = np.arange(len(x)) if pair_ids is None else np.asarray(pair_ids)
    y = np.where(ids[:, None] == ids[None, :], 1.0, -1.0)
    return _softplus(-y * z).sum() / len(x)


def softmax_loss(x, t, scale):
    """CLIP: the mean of image->text and text->image cross-entropy, halved (open_clip)."""
    z = scale * _cos(np.asarray(x, np.float64), np.asarray(t, np.float64))

    def ce(logits):  # rows' cross-entropy against the diagonal target
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        return np.mean(lse - np.diag(logits))

    return (ce(z) + ce(z.T)) / 2


def concept_sigmoid_loss(x, c, labels, scale, bias, unknown_weight=1.0):
    """The `tags` control: image × concept sigmoid, a weighted mean over counted pairs."""
    z = scale * _cos(np.asarray(x, np.float64), np.asarray(c, np.float64)) + bias  # [B, K]
    labels = np.asarray(labels)
    w = (labels == 1) + (labels == -1) + unknown_weight * (labels == 0)
    y = np.where(labels == 1, 1.0, -1.0)
    return (w * _softplus(-y * z)).sum() / w.sum() if w.sum() > 0 else 0.0


def conditional_sigmoid_loss(
    x, t, c, labels, scale, bias, unknown_weight=1.0, cross_positive_weight=1.0, normalize="batch"
):
    x, t, c = (np.asarray(a, np.float64) for a in (x, t, c))
    labels = np.asarray(labels)
    xg = x[None, :, :] * c[:, None, :]  # [K, B, D]: x_i ⊙ g_k
    tg = t[None, :, :] * c[:, None, :]
    z = scale * _cos(xg, tg) + bias  # [K, B(i), B(j)]
    a = labels.T[:, :, None]  # L[i, k]
    b = labels.T[:, None, :]  # L[j, k]
    pos = (a == 1) & (b == 1)
    same_image = np.eye(len(x), dtype=bool)[None]
    w_pos = pos * np.where(same_image, 1.0, cross_positive_weight)
    neg1 = ((a == 1) & (b == -1)) | ((a == -1) & (b == 1))
    negu = ((a == 1) & (b == 0)) | ((a == 0) & (b == 1))
    w_neg = neg1 + unknown_weight * negu
    loss = w_pos * _softplus(-z) + w_neg * _softplus(z)
    if normalize == "batch":
        return loss.sum() / len(x)
    weight = (w_pos + w_neg).sum()  # the counted triples, weighted
    return loss.sum() / weight if weight > 0 else 0.0


def numeric_grad(f, args, index, h=1e-6):
    """Central-difference gradient of scalar `f(*args)` w.r.t. `args[index]`, in float64."""
    args = [np.array(a, np.float64) if np.ndim(a) or isinstance(a, float) else a for a in args]
    base = np.array(args[index], np.float64)
    grad = np.zeros_like(base)
    for pos in np.ndindex(base.shape):
        for sign in (1.0, -1.0):
            bumped = base.copy()
            bumped[pos] += sign * h
            grad[pos] += sign * f(*args[:index], bumped, *args[index + 1 :])
    return grad / (2 * h)


def conditional_ranking_loss(x, t, c, labels, scale, unknown_weight=1.0):
    """The multi-positive (MIL-NCE) softmax form of the conditional loss, both directions.

    For each `+1` entry `(i, k)`: `-log(Σ_{j: L[j,k]=+1} e^z_ijk / Σ_j w_jk e^z_ijk)`, `w = 1` for
    `±1`, `uw` for `0`, 0 otherwise; the same for each `+1` caption entry `(j, k)` over images
    `i`; the mean over both directions' entries (0 without any `+1`). Plain exponentials: float64
    holds `e^±100`, enough for the scales tested.
    """
    x, t, c = (np.asarray(a, np.float64) for a in (x, t, c))
    lab = np.asarray(labels).T  # [K, B]
    z = scale * _cos(x[None, :, :] * c[:, None, :], t[None, :, :] * c[:, None, :])  # [K, i, j]
    e = np.exp(z)
    pos = (lab == 1).astype(np.float64)
    w = pos + (lab == -1) + unknown_weight * (lab == 0)
    count = pos.sum()
    if count == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        img = np.log((e * w[:, None, :]).sum(2) / (e * pos[:, None, :]).sum(2))  # entry (k, i)
        cap = np.log((e * w[:, :, None]).sum(1) / (e * pos[:, :, None]).sum(1))  # entry (k, j)
    return (np.where(pos > 0, img, 0.0).sum() + np.where(pos > 0, cap, 0.0).sum()) / (2 * count)


def pooled_conditional_sigmoid_loss(
    xc, t, labels, scale, bias, unknown_weight=1.0, cross_positive_weight=1.0, normalize="triples"
):
    """The pool arm: `z_ijk = scale·cos(x_{i|k}, t_j) + bias` with `xc [B, K, D]` holding
    `x_{i|k}`, and the labels' weights of `conditional_sigmoid_loss`."""
    xc, t = np.asarray(xc, np.float64), np.asarray(t, np.float64)
    labels = np.asarray(labels)
    z = scale * _cos(np.swapaxes(xc, 0, 1), t[None]) + bias  # [K, B(i), B(j)]
    a = labels.T[:, :, None]  # L[i, k]
    b = labels.T[:, None, :]  # L[j, k]
    pos = (a == 1) & (b == 1)
    same_image = np.eye(len(t), dtype=bool)[None]
    w_pos = pos * np.where(same_image, 1.0, cross_positive_weight)
    neg1 = ((a == 1) & (b == -1)) | ((a == -1) & (b == 1))
    negu = ((a == 1) & (b == 0)) | ((a == 0) & (b == 1))
    w_neg = neg1 + unknown_weight * negu
    loss = w_pos * _softplus(-z) + w_neg * _softplus(z)
    if normalize == "batch":
        return loss.sum() / len(t)
    weight = (w_pos + w_neg).sum()
    return loss.sum() / weight if weight > 0 else 0.0


def softmax_loss_negclip(x, t, h, valid, scale):
    """NegCLIP: image->text rows over the B captions plus the valid hard negatives `h[valid]`
    of the whole batch (target: the row's own caption); text->image as in `softmax_loss`."""
    x, t, h = (np.asarray(a, np.float64) for a in (x, t, h))
    z = scale * _cos(x, t)
    zh = (scale * _cos(x, h))[:, np.asarray(valid, bool)]
    rows = np.concatenate([z, zh], axis=1)
    lse = lambda a: np.log(np.exp(a - a.max(1, keepdims=True)).sum(1)) + a.max(1)
    i2t = np.mean(lse(rows) - np.diag(z))
    t2i = np.mean(lse(z.T) - np.diag(z))
    return (i2t + t2i) / 2


def sigmoid_loss_negclip(x, t, h, valid, scale, bias, pair_ids=None):
    """SigLIP plus `Σ_{j valid} softplus(scale·cos(x_j, h_j) + bias)`, all over B."""
    x, h = np.asarray(x, np.float64), np.asarray(h, np.float64)
    zh = scale * np.diag(_cos(x, h)) + bias
    extra = (_softplus(zh) * np.asarray(valid, bool)).sum() / len(x)
    return sigmoid_loss(x, t, scale, bias, pair_ids) + extra
