"""ActiveFT core selection (ActiveFT, Xie et al. CVPR 2023; SPEC §2).

K centroids θ on the unit sphere are moved by Adam so that they cover the pool's distribution (each
sample pulls its nearest centroid) while staying apart (each centroid is pushed from the others);
the readout then gives each centroid, in order, its most similar sample not yet taken.

Speed: the loss sees the n×K similarity matrix only through s_i = max_j f_i·θ̂_j, whose gradient
reaches only the argmax column k_i. So an iteration is one blocked n×d×K product (max and argmax)
plus an O(n·d) grouped sum for the gradient and the tiny K×K term, instead of the three n×d×K
products that full autograd needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bilaf.selection.base import (
    ROW_CHUNK,
    SelectionError,
    check_ids,
    check_option,
    iter_row_chunks,
    register,
)
from bilaf.selection.neighbors import resolve_device

MAX_BLOCK = 1 << 24  # entries of a temporary computed at once off CPU (64 MiB of float32)
CPU_BLOCK = 1 << 22  # the same on CPU (16 MiB): measured fastest with the 2 cores contended
SHORTLIST = 64  # readout candidates kept per centroid by one streaming pass

Blocks = Callable[[], Iterator[tuple[int, torch.Tensor]]]
_device = resolve_device  # the name bench/bench_selection.py calls


def _check_options(
    iters: int, lr: float, temperature: float, balance: float, batch_size: int | None
) -> None:
    """Raise SelectionError for a hyperparameter outside its valid range."""
    check_option(iters, "iters", int, low=1)
    check_option(lr, "lr", low=0, open_low=True)
    check_option(temperature, "temperature", low=0, open_low=True)
    check_option(balance, "balance", low=0)
    check_option(batch_size, "batch_size", int, low=1, optional=True)


def _normalise(block: np.ndarray, device: torch.device) -> torch.Tensor:
    """L2-normalise float32 rows on ``device`` (the features ActiveFT works on)."""
    return F.normalize(torch.from_numpy(np.require(block, np.float32, "CW")).to(device), dim=1)


def _load(features: Any, device: torch.device) -> torch.Tensor:
    """The whole pool, L2-normalised float32 on ``device``, read one row chunk at a time."""
    pool = torch.empty(tuple(features.shape), dtype=torch.float32, device=device)
    for start, block in iter_row_chunks(features):
        pool[start : start + block.shape[0]] = _normalise(block, device)
    return pool


class _MaxSimilarity(torch.autograd.Function):
    """s_i = max_j f_i·θ̂_j with k_i its argmax; the gradient reaches column k_i only.

    Forward is one n×d×K product in row blocks (the n×K similarities never exist at once);
    backward is G_j = Σ_{i: k_i = j} ∂L/∂s_i · f_i, O(n·d), instead of the two n×d×K products
    autograd would do.
    """

    @staticmethod
    def forward(
        ctx: Any, feats: torch.Tensor, centres: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = feats.shape[0]
        s = torch.empty(n, dtype=feats.dtype, device=feats.device)
        k = torch.empty(n, dtype=torch.long, device=feats.device)
        block = CPU_BLOCK if feats.device.type == "cpu" else MAX_BLOCK
        rows = max(1, block // centres.shape[0])
        for a in range(0, n, rows):
            torch.max(
                feats[a : a + rows] @ centres.T, dim=1, out=(s[a : a + rows], k[a : a + rows])
            )
        ctx.save_for_backward(feats, k)
        ctx.num_centres = centres.shape[0]
        ctx.mark_non_differentiable(k)
        return s, k

    @staticmethod
    def backward(ctx: Any, grad_s: torch.Tensor, _grad_k: Any) -> tuple[None, torch.Tensor]:
        feats, k = ctx.saved_tensors
        # Weighted row sums grouped by centroid: one embedding_bag over the samples sorted by k,
        # with no n×d temporary.
        order = torch.argsort(k, stable=True)
        offsets = torch.zeros(ctx.num_centres, dtype=torch.long, device=k.device)
        offsets[1:] = torch.bincount(k, minlength=ctx.num_centres).cumsum(0)[:-1]
        grad = F.embedding_bag(order, feats, offsets, mode="sum", per_sample_weights=grad_s[order])
        return None, grad


def _loss(
    feats: torch.Tensor,
    theta: torch.Tensor,
    temperature: float,
    balance: float,
    fixed: torch.Tensor | None = None,
) -> torch.Tensor:
    """SPEC §2 loss: −mean_i[s_i − log(e^{s_i} + λ·c_{k_i})].

    s_i = max_j f_i·θ̂_j/τ with k_i its argmax, c_j = Σ_l exp(θ̂_l^detached·θ̂_j/τ); written with
    logaddexp/logsumexp so a large 1/τ cannot overflow. ``fixed``: unit centroids that take part
    in both terms but do not move (the labeled samples, already cores).
    """
    centres = F.normalize(theta, dim=1)
    if fixed is not None:
        centres = torch.cat([fixed, centres])
    s, k = _MaxSimilarity.apply(feats, centres)
    s = s / temperature
    log_c = torch.logsumexp(centres.detach() @ centres.T / temperature, dim=0)
    log_balance = math.log(balance) if balance > 0 else -math.inf
    return -(s - torch.logaddexp(s, log_c[k] + log_balance)).mean()


def _step(
    feats: torch.Tensor,
    theta: torch.Tensor,
    opt: torch.optim.Optimizer,
    temperature: float,
    balance: float,
    fixed: torch.Tensor | None = None,
) -> None:
    """One Adam step of the SPEC §2 loss on the (already normalised) rows ``feats``."""
    opt.zero_grad()
    _loss(feats, theta, temperature, balance, fixed).backward()
    opt.step()


@torch.no_grad()
def _shortlists(
    blocks: Blocks, centres: torch.Tensor, taken: torch.Tensor, depth: int
) -> np.ndarray:
    """Per centroid, its ``depth`` most similar untaken samples, best first (R×depth ids).

    One streaming pass: each row block's similarities are merged into running top-``depth`` lists.
    Slots that no untaken sample could fill hold -1 or a taken id; callers skip both.
    """
    r = centres.shape[0]
    device = centres.device
    vals = torch.full((r, depth), -math.inf, device=device)
    ids = torch.full((r, depth), -1, dtype=torch.long, device=device)
    rows = max(1, MAX_BLOCK // r)  # top-k merges want big blocks; this pass runs once
    for start, block in blocks():
        for a in range(0, block.shape[0], rows):
            sub = block[a : a + rows]
            first = start + a
            sim = centres @ sub.T
            sim[:, taken[first : first + sub.shape[0]]] = -math.inf
            sub_ids = torch.arange(first, first + sub.shape[0], device=device).expand(r, -1)
            vals, pos = torch.cat([vals, sim], dim=1).topk(depth, dim=1)
            ids = torch.cat([ids, sub_ids], dim=1).gather(1, pos)
    return ids.cpu().numpy()


def stream_readout(
    blocks: Blocks,
    n: int,
    centres: torch.Tensor,
    shortlist: int = SHORTLIST,
    labeled: np.ndarray | None = None,
) -> np.ndarray:
    """SPEC §2 readout, exact and streamed: centroid j = 0..K-1 in turn takes its most similar
    sample not yet taken (a ``labeled`` one counts as taken from the start).

    A shortlist is the top of one centroid's exact order among samples untaken at the pass, so its
    first entry still untaken is the exact answer. Only when earlier centroids took a whole
    shortlist does another pass refill the lists of the centroids still to go. Exactly equal
    similarities (duplicate rows) may go to either sample.
    """
    k = centres.shape[0]
    depth = min(shortlist, n)
    taken = np.zeros(n, dtype=bool)
    if labeled is not None:
        taken[labeled] = True
    picks = np.empty(k, dtype=np.int64)
    j = 0
    while j < k:
        first = j
        lists = _shortlists(
            blocks, centres[first:], torch.from_numpy(taken).to(centres.device), depth
        )
        while j < k:
            pick = next((i for i in lists[j - first] if i >= 0 and not taken[i]), None)
            if pick is None:
                break
            picks[j] = pick
            taken[pick] = True
            j += 1
    return picks


@register()
def activeft(
    features: Any,
    budget: int,
    seed: int,
    *,
    iters: int = 300,
    lr: float = 1e-3,
    temperature: float = 0.07,
    balance: float = 1.0,
    init_ids: Any = None,
    batch_size: int | None = None,
    labeled: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """ActiveFT (Xie et al. CVPR 2023, SPEC §2): ``budget`` = K core indices, sorted ascending.

    Centroids start at ``init_ids`` (K distinct rows) or K rows drawn with
    ``np.random.default_rng(seed)``, L2-normalised; then ``iters`` Adam steps (``lr``, no schedule)
    on the full pool, or, with ``batch_size``, each on a fresh seeded random batch of that many rows
    (the ImageNet recipe: 100 iterations of 100k rows); the pool is read into memory once. All
    randomness comes from that one numpy generator. ``labeled`` samples (ids) count as cores
    already: fixed centroids in the loss (the K free ones spread over what they leave uncovered,
    initial rows drawn from the others) that the readout never returns. ``device`` defaults to
    CUDA when available; CPU results are the reference.
    """
    _check_options(iters, lr, temperature, balance, batch_size)
    pool, centres = fit_centres(
        features,
        budget,
        seed,
        iters=iters,
        lr=lr,
        temperature=temperature,
        balance=balance,
        init_ids=init_ids,
        batch_size=batch_size,
        labeled=labeled,
        device=device,
    )
    return readout(pool, centres, labeled=labeled)


def fit_centres(
    features: Any,
    budget: int,
    seed: int,
    *,
    iters: int,
    lr: float,
    temperature: float,
    balance: float,
    init_ids: Any,
    batch_size: int | None,
    device: str | torch.device | None,
    labeled: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ActiveFT's optimisation (options as :func:`activeft`, checked there): the pool as read
    (n, d) and the K free unit centroids (K, d) the readout matches to samples."""
    dev = resolve_device(device)
    n = features.shape[0]
    rng = np.random.default_rng(seed)
    if init_ids is None and labeled is not None:
        init = rng.choice(np.setdiff1d(np.arange(n), labeled), size=budget, replace=False)
    elif init_ids is None:
        init = rng.choice(n, size=budget, replace=False)
    else:
        init = check_ids(init_ids, n, "init_ids")
        if init.size != budget:
            raise SelectionError(
                f"init_ids has {init.size} indices but budget is {budget}: give one per centroid"
            )

    # The pool is read once (n x d float32, 2 GB at ImageNet scale): a mini-batch is then a row
    # lookup, not a re-read of every zarr chunk it touches (measured: 55 % of the ImageNet run).
    pool = _load(features, dev)
    theta = pool[torch.from_numpy(init).to(dev)].clone()
    theta.requires_grad_(True)
    fixed = None if labeled is None else pool[torch.from_numpy(labeled).to(dev)]
    opt = torch.optim.Adam([theta], lr=lr)
    full = batch_size is None or batch_size >= n
    for _ in range(iters):
        if full:
            feats = pool
        else:
            batch = np.sort(rng.choice(n, size=batch_size, replace=False))
            feats = pool[torch.from_numpy(batch).to(dev)]
        _step(feats, theta, opt, temperature, balance, fixed)
    return pool, F.normalize(theta.detach(), dim=1)


def readout(
    pool: torch.Tensor,
    centres: torch.Tensor,
    *,
    row_chunk: int = ROW_CHUNK,
    shortlist: int = SHORTLIST,
    labeled: np.ndarray | None = None,
) -> np.ndarray:
    """The samples :func:`stream_readout` matches to ``centres`` (never a ``labeled`` one), read
    from ``pool`` in blocks of ``row_chunk`` rows, sorted ascending (ActiveFT's output)."""
    n = pool.shape[0]

    def blocks() -> Iterator[tuple[int, torch.Tensor]]:
        return ((s, pool[s : s + row_chunk]) for s in range(0, n, row_chunk))

    return np.sort(stream_readout(blocks, n, centres, shortlist=shortlist, labeled=labeled))
