"""Data-parallel training on torchrun: two gloo ranks on this CPU against one process, and a stopped run resumed.

Two ranks that share each global batch end with the weights of one process given the same batch, up to float32
rounding: each rank's backward sums the gradient over its half of the batch, DistributedDataParallel adds the two
halves and halves the sum, where one process sums the whole batch in one go. Those sums are the same numbers added
in another order, so they differ in the last bits (about 1e-6 of the largest gradient, one step measured on an AVX2
EPYC against float64), and 15 SGD steps at lr 0.05 on 80 images, a run on the edge of chaos, carry that forward
unevenly across CPUs: 8e-7 in the weights on AVX512 machines, 8e-5 on an AVX2 EPYC (family 25, model 1). A real
difference is far larger in the same run: lr 1 % higher moves the weights by 1.5, a gradient summed rather than
averaged over the ranks (lr doubled) by 1.45. The test allows 1e-3. A network without BatchNorm and dropout, with
no augmentation, keeps everything else identical.
"""

from __future__ import annotations

import signal

import pytest
import torch
from safetensors.torch import load_file

from cifarlab.data.augment import AugmentConfig
from cifarlab.data.loader import BatchLoader, Normalization
from cifarlab.training.history import History
from cifarlab.training.resume import load_resume_state
from tests.factories import make_split
from tests.test_signals import assert_same_as_whole, run_cifarlab, setup, train_argv  # noqa: F401

TOLERANCE = 1e-3  # weights of about 0.1-0.8; rounding gave up to 8e-5, a 1 % change of lr 1.5


@pytest.fixture(scope="module")
def two_ranks(setup):  # noqa: F811
    """A run as two gloo ranks (`cifarlab train --nproc 2`), never stopped."""
    out = setup["root"] / "two-ranks"
    code, stdout, err = run_cifarlab(setup, train_argv(setup, out, "--nproc", "2"))
    assert code == 0, err
    assert stdout.count("run saved to") == 1  # rank 0 speaks for the run
    return out


def test_two_ranks_end_with_the_weights_of_one_process(setup, two_ranks):  # noqa: F811
    one, two = load_file(str(setup["whole"] / "model.safetensors")), load_file(str(two_ranks / "model.safetensors"))
    assert one.keys() == two.keys()
    assert max((one[key] - two[key]).abs().max().item() for key in one) < TOLERANCE
    whole, ranks = (History.from_csv(run / "history.csv") for run in (setup["whole"], two_ranks))
    assert len(ranks) == 3  # every epoch once, written by rank 0 alone
    # the training loss over both halves of each batch, not rank 0's half alone
    assert ranks.history["loss"] == pytest.approx(whole.history["loss"], rel=1e-4)


def test_a_stopped_distributed_run_resumes_on_as_many_ranks(setup, two_ranks):  # noqa: F811
    cut = setup["root"] / "two-ranks-sigterm"
    code, _, err = run_cifarlab(setup, train_argv(setup, cut, "--nproc", "2"),
                                env={"CIFARLAB_TEST_SIGNAL": "2:2:SIGTERM:parent"})  # fmt: skip
    assert code == 143, err  # the launcher got SIGTERM and passed it on; the ranks saved and stopped
    assert f"continue with: cifarlab train --resume {cut} --nproc 2" in err
    state = load_resume_state(cut / "resume.pt")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2 and state["epoch"] == 1

    code, _, err = run_cifarlab(setup, ["train", "--resume", str(cut), "--quiet"])
    assert code == 2
    assert "the run trained as 2 process(es) and this is 1: resume it with as many" in err
    code, _, err = run_cifarlab(setup, ["train", "--resume", str(cut), "--quiet", "--nproc", "2"])
    assert code == 0, err
    assert_same_as_whole(setup, cut, whole=two_ranks)  # to the bit: every rank's streams were saved


@pytest.mark.slow  # three torchrun launches; mid-epoch SIGKILL of one process is in test_signals.py
def test_a_killed_distributed_run_resumes_mid_epoch(setup, two_ranks):  # noqa: F811
    cut = setup["root"] / "two-ranks-sigkill"
    code, _, _ = run_cifarlab(setup, train_argv(setup, cut, "--nproc", "2", "--save-every-steps", "2"),
                              env={"CIFARLAB_TEST_SIGNAL": "2:3:SIGKILL:group"})  # fmt: skip
    assert code == 128 + signal.SIGKILL  # torchrun's report of a rank killed by SIGKILL
    state = load_resume_state(cut / "resume.pt")
    assert (state["epoch"], state["loader"]["step"]) == (1, 2)
    code, _, err = run_cifarlab(setup, ["train", "--resume", str(cut), "--quiet", "--nproc", "2"])
    assert code == 0, err
    assert_same_as_whole(setup, cut, whole=two_ranks)


def test_ranks_split_each_global_batch_and_augment_each_their_own_way():
    split = make_split(40)
    split.labels = torch.arange(40)  # labels as identities, to read the batches back
    augment = AugmentConfig(crop_padding=2)

    def batches(rank, world_size, augment_seed):
        loader = BatchLoader(split, 8, Normalization(), shuffle=True, augment=augment, seed=3, rank=rank,
                             world_size=world_size, augment_seed=augment_seed)  # fmt: skip
        return [(inputs, labels) for inputs, labels in loader]

    whole = batches(0, 1, None)
    rank0, rank1, rank0_again = batches(0, 2, 11), batches(1, 2, 12), batches(0, 2, 11)
    for (_, everything), (_, first), (_, second) in zip(whole, rank0, rank1, strict=True):
        assert sorted(torch.cat([first, second]).tolist()) == sorted(everything.tolist())
        assert len(first) == len(second) == 4
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(rank0, rank0_again))  # reproducible
    different = batches(0, 2, 12)  # another rank's seed draws other crops for the same images
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(rank0, different))
