import pytest

from ordermerge.data.orders import make_order

IDS = [f"t:train:{i:06d}" for i in range(97)]


def order(scheme="shuffle", run=0, seed=0, epochs=3, batch_size=8):
    return make_order(IDS, scheme=scheme, run=run, epochs=epochs, seed=seed, task="t",
                      batch_size=batch_size)


@pytest.mark.parametrize("scheme", ["shuffle", "fix-batch", "identity"])
def test_each_epoch_is_a_permutation_of_all_ids(scheme):
    o = order(scheme)
    assert len(o) == 3
    for epoch in o:
        assert sorted(epoch) == sorted(IDS)
        assert len(epoch) == len(IDS)


def test_shuffle_differs_across_runs_and_epochs_and_repeats_for_same_seed():
    a, b = order(run=0), order(run=1)
    assert a[0] != a[1] != a[2] and a[0] != a[2]
    assert all(x != y for x, y in zip(a, b))
    assert order(run=0) == a
    assert order(run=0, seed=1) != a


def test_run_order_does_not_depend_on_number_of_epochs():
    assert order(run=2, epochs=1)[0] == order(run=2, epochs=3)[0]


def test_fix_batch_keeps_batch_contents_and_permutes_their_order():
    B = 8
    def batches(o):
        return [frozenset(o[i:i + B]) for i in range(0, len(o), B)]
    a, b = order("fix-batch", run=0, batch_size=B), order("fix-batch", run=1, batch_size=B)
    reference = set(batches(a[0]))
    for o in a + b:
        assert set(batches(o)) == reference
        # the short remainder batch stays last
        assert batches(o)[-1] == batches(a[0])[-1] and len(batches(o)[-1]) == len(IDS) % B
    assert a[0] != b[0] and a[0] != a[1]


def test_identity_and_bad_input():
    assert order("identity") == [IDS] * 3
    with pytest.raises(ValueError, match="unknown order scheme"):
        order("random")
    with pytest.raises(ValueError, match="not unique"):
        make_order(IDS + IDS[:1], scheme="shuffle", run=0, epochs=1, seed=0, task="t")


def test_pretraining_corpus_excludes_held_out_prompts_and_is_seeded():
    from ordermerge.data.corpus import pretraining_corpus
    from ordermerge.data.registry import get_task

    task = get_task("gsm8k")
    rows = task.toy(300, 5)
    held_out = {task.prompt(r) for r in rows}
    lines = pretraining_corpus([task], 2000, 5, 0.5, held_out)
    assert len(lines) == 2000
    task_lines = [x for x in lines if x.startswith("Question:")]
    assert len(task_lines) == 1000
    assert not any(x.startswith(p.replace("\n", " ")) for x in task_lines for p in held_out)
    assert all("\n" not in x for x in lines)
    assert pretraining_corpus([task], 2000, 5, 0.5, held_out) == lines
    assert pretraining_corpus([task], 2000, 6, 0.5, held_out) != lines
