"""BiomedCoOp's loss terms against an independent, loop-by-loop computation of reference §1.4."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.biomedcoop import biomedcoop_losses, keep_mask, prompt_scores, selected_prototypes


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def reference_losses(f, t, T, s, labels, lam_s, lam_k, tau, absolute=False):
    """Written the way the published code reads: a python loop over prompts with host values
    (``absolute``: the z-score of the published PMC-CLIP trainer, |S_i - m| / MAD)."""
    B, C = f.shape[0], t.shape[0]
    P = T.shape[1]
    scores = []
    for i in range(P):
        logits_i = [[s * float(f[b] @ T[c, i]) for c in range(C)] for b in range(B)]
        scores.append(sum(max(row) for row in logits_i) / B)
    srt = sorted(scores)
    median = srt[(P - 1) // 2]  # torch.median: the lower middle value
    dev = sorted(abs(x - median) for x in scores)
    mad = dev[(P - 1) // 2]
    z = [(abs(x - median) if absolute else x - median) / mad for x in scores]
    mean_z = sum(z) / P
    std_z = math.sqrt(sum((v - mean_z) ** 2 for v in z) / (P - 1))
    keep = [abs((v - mean_z) / std_z) <= tau for v in z]
    sel = torch.stack([sum(T[c, i] for i in range(P) if keep[i]) / sum(keep) for c in range(C)])
    sel = sel / sel.norm(dim=-1, keepdim=True)
    proto = T.mean(dim=1)
    proto = proto / proto.norm(dim=-1, keepdim=True)
    student = s * f @ t.T
    teacher = s * f @ sel.T
    ce = -sum(torch.log_softmax(student[b], 0)[labels[b]] for b in range(B)) / B
    sccm = lam_s * ((t - proto) ** 2).sum() / (C * t.shape[1])
    kl = 0.0
    for b in range(B):
        p_t = torch.softmax(teacher[b], 0)
        kl += (p_t * (torch.log(p_t) - torch.log_softmax(student[b], 0))).sum()
    kdsp = lam_k * kl / (B * C)
    return ce, sccm, kdsp, keep


@pytest.mark.parametrize("absolute", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_match_reference(seed, absolute):
    B, C, P, D = 4, 3, 12, 16
    f, t, T = _unit(B, D, seed=seed), _unit(C, D, seed=seed + 10), _unit(C, P, D, seed=seed + 20)
    # Make a couple of prompts outliers so the rule prunes something.
    T[:, 0] = F.normalize(T[:, 0] + 3 * f.mean(0), dim=-1)
    labels = torch.tensor([0, 1, 2, 1])
    s = 4.0
    proto = F.normalize(T.mean(1), dim=-1)
    got = biomedcoop_losses(s * f @ t.T, labels, f, t, T, proto, s, 0.5, 0.25, 1.0, absolute_zscore=absolute)
    ce, sccm, kdsp, keep = reference_losses(f, t, T, s, labels, 0.5, 0.25, 1.0, absolute=absolute)
    assert torch.allclose(got["ce"], ce, atol=1e-10)
    assert torch.allclose(got["sccm"], sccm, atol=1e-12)
    assert torch.allclose(got["kdsp"], kdsp, atol=1e-12)
    assert int(got["n_kept"]) == sum(keep)
    assert sum(keep) < P, "the fixture must exercise pruning"


def test_sccm_equals_scaled_cosine_distance():
    C, D = 5, 32
    t, proto = _unit(C, D, seed=3), _unit(C, D, seed=4)
    f = _unit(2, D, seed=5)
    T = proto.unsqueeze(1).repeat(1, 3, 1)
    got = biomedcoop_losses(f @ t.T, torch.tensor([0, 1]), f, t, T, proto, 1.0, 1.0, 0.0, 1.5)["sccm"]
    expected = (2.0 / D) * (1 - (t * proto).sum(-1).mean())
    assert torch.allclose(got, expected, atol=1e-12)


def test_prompt_scores_are_batch_mean_of_max_logit():
    f, T = _unit(3, 8, seed=6), _unit(2, 5, 8, seed=7)
    scores = prompt_scores(f, T, 2.0)
    for p in range(5):
        expected = (2.0 * f @ T[:, p].T).max(dim=1).values.mean()
        assert torch.isclose(scores[p], expected)


def test_keep_mask_is_plain_zscore_when_mad_positive():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, generator=g, dtype=torch.float64)
    scores[7] = 6.0
    u = (scores - scores.mean()) / scores.std()
    assert torch.equal(keep_mask(scores, 1.5), u.abs() <= 1.5)
    assert not keep_mask(scores, 1.5)[7]


def test_absolute_zscore_drops_prompts_whose_distance_to_the_median_is_unusual():
    """|S - m| / MAD, standardised: the prompt at the median is as unusual as the extremes (reference §1.8)."""
    scores = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    assert keep_mask(scores, 1.0).tolist() == [False, True, True, True, True, True, False]
    assert keep_mask(scores, 1.0, absolute=True).tolist() == [False, True, True, False, True, True, False]
    assert keep_mask(torch.full((6,), 2.0), 1.0, absolute=True).all()  # MAD 0: undefined, keep every prompt


@pytest.mark.parametrize(
    "scores",
    [
        torch.full((50,), 3.0),  # zero spread: MAD = 0 and std = 0
        torch.cat([torch.full((40,), 1.0), torch.linspace(2, 3, 10)]),  # MAD = 0, std > 0
    ],
)
def test_keep_mask_keeps_every_prompt_when_rule_undefined(scores):
    keep = keep_mask(scores, 1.5)
    assert keep.all()
    T = _unit(2, 50, 4, seed=8)
    assert torch.isfinite(selected_prototypes(T, keep)).all()


def test_zero_spread_loss_is_finite():
    f, t = _unit(4, 8, seed=9), _unit(2, 8, seed=10)
    T = _unit(2, 1, 8, seed=11).repeat(1, 6, 1)  # every prompt identical: all scores equal
    proto = F.normalize(T.mean(1), dim=-1)
    losses = biomedcoop_losses(f @ t.T, torch.tensor([0, 1, 0, 1]), f, t, T, proto, 3.0, 1.0, 1.0, 1.5)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert int(losses["n_kept"]) == 6


def test_kdsp_is_zero_when_student_equals_teacher():
    f = _unit(4, 8, seed=12)
    T = _unit(3, 5, 8, seed=13)
    keep = keep_mask(prompt_scores(f, T, 2.0), 1.5)
    t = selected_prototypes(T, keep)
    proto = F.normalize(T.mean(1), dim=-1)
    losses = biomedcoop_losses(2.0 * f @ t.T, torch.tensor([0, 1, 2, 0]), f, t, T, proto, 2.0, 1.0, 1.0, 1.5)
    assert losses["kdsp"].abs() < 1e-7
